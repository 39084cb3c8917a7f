"""``--json FILE`` (``-``: standard output), the same in every command, and how it is written.

Re-exported by :mod:`densify.cli.options`, where every shared option is listed.
"""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["json_output", "write_json_output"]


def _json_target(ctx, param, value: str | None) -> str | None:
    if value is not None and value != "-" and value.startswith("-"):
        raise click.BadParameter(f"--json takes a FILE (or - for standard output), got {value!r}; "
                                 "e.g. --json out/results.json")
    return value


def json_output(default_help: str = "print a table instead"):
    """``--json FILE`` (``-``: standard output), the same in every command."""
    return click.option(
        "--json", "json_path", default=None, metavar="FILE", callback=_json_target,
        help=f"Write the results as JSON to FILE, or to standard output with - (default: "
             f"{default_help}).")


def _finite(data):
    """``data`` with NaN and infinities as None (JSON null): e.g. an AP that is undefined."""
    import math

    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(v) for v in data]
    return data


def write_json_output(target: str | Path | None, data) -> bool:
    """Write ``data`` to ``--json``'s target (``-``: standard output; undefined numbers as
    null); False without one."""
    import json

    if target is None:
        return False
    data = _finite(data)
    if str(target) == "-":
        click.echo(json.dumps(data, indent=2, allow_nan=False))
        return True
    from ..io.files import ensure_output_dir, write_json

    ensure_output_dir(Path(target).parent)
    write_json(Path(target), data)
    return True
