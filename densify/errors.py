"""The errors densify raises for bad input: one base class, one line each, naming the fix.

The command line turns a :class:`DensifyError` into one line on stderr and exit status 1 (click's
own usage errors: one line, exit 2); anything else, and a :class:`SelfCheckError`, is a bug: one
line, exit 3, its traceback shown with ``-v`` (:mod:`densify.cli`).
Each class also derives from the built-in exception a caller would expect (``ValueError`` for bad
values, ``OSError`` for files), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = ["DensifyError", "ParameterError", "ConversionError", "SelfCheckError", "UnforeseenError",
           "ModelError", "WeightsError", "ImageError", "OutputError", "ResultError",
           "MissingExtraError"]


class DensifyError(Exception):
    """Base class: a problem with the user's input, described in one line that names the fix.

    The message is folded onto one line (runs of whitespace become one space).
    """

    def __init__(self, message: str = "") -> None:
        super().__init__(" ".join(str(message).split()))

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else type(self).__name__


class ParameterError(DensifyError, ValueError):
    """A bad argument value: a scale list, a size, a device, a class name, a threshold."""


class ConversionError(DensifyError, ValueError):
    """The model cannot be convolutionized (or failed its self-check); names the op and the fix."""


class SelfCheckError(ConversionError):
    """A converted net failed its own self-check: a bug in densify, not bad input (the command
    line reports it as one, exit status 3)."""


class UnforeseenError(ConversionError):
    """An exception densify did not foresee while converting (an op it does not know, or a bug
    in densify): one line, chained to the original, for library callers; the command line
    reports it as a possible bug (exit status 3, the traceback with ``-v``)."""


class ModelError(DensifyError, ValueError):
    """An unknown or refused catalogue name, or a user model that cannot be imported or built."""


class WeightsError(DensifyError, ValueError):
    """Weights cannot be resolved or do not fit the architecture."""


class ImageError(DensifyError, ValueError):
    """An input image is missing, unreadable, empty or of an unsupported kind."""


class OutputError(DensifyError, OSError):
    """An output location cannot be written."""


class MissingExtraError(DensifyError, ImportError):
    """An optional dependency is not installed; the message names its ``pip install`` line."""


class ResultError(DensifyError, ValueError):
    """A saved result file is corrupt, of another format version, or not a densify result."""
