"""Optional dependencies (the package's extras): checked before any work, named with their
install line.

    require_extra("onnx", "ONNX export")   # raises MissingExtraError unless onnx, onnxscript import
"""

from __future__ import annotations

import importlib.util

from .errors import MissingExtraError

__all__ = ["EXTRAS", "require_extra"]

#: extra -> the modules it provides (setup.cfg's ``[options.extras_require]``).
EXTRAS = {"onnx": ("onnx", "onnxscript"), "eval": ("pycocotools",), "ray": ("ray", "pyarrow"),
          "timm": ("timm",), "viz": ("matplotlib",)}


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules, a broken package
        return False


def require_extra(extra: str, what: str) -> None:
    """Raise :class:`MissingExtraError` (one line with its ``pip install`` line) unless every
    module of ``extra`` is installed; ``what`` names the feature that needs it."""
    missing = [m for m in EXTRAS[extra] if not _importable(m)]
    if missing:
        raise MissingExtraError(f"{what} needs {', '.join(missing)}, which is not installed: "
                                f"pip install 'densify[{extra}]'")
