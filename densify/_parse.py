"""Parsing of sizes and byte counts, shared by the library and the command line (no torch).

Errors are :class:`densify.errors.ParameterError` (a ``ValueError``) with one line naming the fix.
"""

from __future__ import annotations

import re

from .errors import ParameterError

__all__ = ["parse_bytes", "format_bytes", "parse_hw"]

_UNITS = {"": 1, "b": 1, "k": 2**10, "kib": 2**10, "kb": 10**3, "m": 2**20, "mib": 2**20,
          "mb": 10**6, "g": 2**30, "gib": 2**30, "gb": 10**9, "t": 2**40, "tib": 2**40,
          "tb": 10**12}


def parse_bytes(text: str | int) -> int:
    """``"3GB"`` → 3·10⁹, ``"512MiB"`` / ``"512M"`` → 512·2²⁰, ``"2.5G"``, ``"1000"`` (bytes).

    KB/MB/GB/TB are decimal, KiB/MiB/GiB/TiB and the bare letters K/M/G/T binary. Case and
    spaces are ignored. Raises ``ValueError`` (one line) for anything else.
    """
    if isinstance(text, int) and text > 0:
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS or float(match.group(1)) <= 0:
        raise ParameterError(f"cannot read memory size {text!r}; write a positive number with an "
                         "optional unit, e.g. 3GB, 512MiB or 2.5G")
    return int(float(match.group(1)) * _UNITS[unit])


def format_bytes(n: float) -> str:
    """``3_000_000_000`` → ``"2.79 GiB"`` (binary units)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def parse_hw(text: str | int | tuple[int, int], what: str = "size", minimum: int = 1
             ) -> tuple[int, int]:
    """``"960x1280"`` (or ``960×1280``, ``"224"``, ``224``, ``(960, 1280)``) → ``(H, W)``.

    Examples:
        >>> parse_hw("221x221")
        (221, 221)
        >>> parse_hw(224)
        (224, 224)
    """
    if isinstance(text, int) and not isinstance(text, bool):
        text = f"{text}x{text}"
    elif isinstance(text, tuple):
        text = "x".join(str(v) for v in text)
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX×]\s*(\d+)\s*)?", str(text))
    hw = None if match is None else (int(match.group(1)), int(match.group(2) or match.group(1)))
    if hw is None or min(hw) < minimum:
        raise ParameterError(f"cannot read {what} {text!r}; give HxW pixels of at least {minimum}, "
                             "e.g. 224x224 or 960x1280")
    return hw
