"""The ``densify`` command line: one click group; each command in its own module.

Exit statuses, one line on stderr each (pinned by ``tests/test_cli.py::test_exit_classes``):

- 1: bad input (a :class:`densify.errors.DensifyError`: a file, weights, an image, an output
  directory, a model that cannot be converted): ``Error: <problem and fix>``;
- 2: a usage error (an unknown option or command, a bad option value, caught while click parses
  the command line): ``Error: <problem> (see 'densify CMD --help')``;
- 3: a bug in densify (any other exception, and a conversion failing its own self-check):
  ``Error: internal error (...)``, preceded by the traceback with ``-v``.
"""

from __future__ import annotations

import logging
import sys
import traceback

import click

from ..errors import DensifyError, SelfCheckError, UnforeseenError
from . import convert, detect, evaluate, heatmap, models, verify
from .bench import bench

__all__ = ["main"]


class UsageLine(click.ClickException):
    """A click usage error folded into one line that names the command's ``--help`` (exit 2)."""

    exit_code = 2

    @classmethod
    def of(cls, exc: click.UsageError, where: str) -> UsageLine:
        where = exc.ctx.command_path if exc.ctx is not None else where
        message = " ".join(exc.format_message().split()).rstrip(".")
        return cls(f"{message} (see '{where} --help')")


def _is_usage_error(exc: BaseException) -> bool:
    # click shows the help for a bare ``densify`` (NoArgsIsHelpError): keep that as it is.
    return isinstance(exc, click.UsageError) and not isinstance(
        exc, (UsageLine, click.exceptions.NoArgsIsHelpError))


def _bug(ctx: click.Context, exc: Exception):
    if ctx.params.get("verbose"):
        traceback.print_exception(exc, file=sys.stderr)
    click.echo(f"Error: internal error ({type(exc).__name__}: {' '.join(str(exc).split())}); "
               "this is a bug in densify: rerun with -v for the traceback and report it", err=True)
    sys.exit(3)


class _Group(click.Group):
    """Maps exceptions to the exit statuses of the module docstring."""

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            if _is_usage_error(exc):
                raise UsageLine.of(exc, info_name or "densify") from None
            raise

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            if _is_usage_error(exc):
                sub = ctx.invoked_subcommand
                raise UsageLine.of(exc, f"{ctx.command_path} {sub}" if sub else ctx.command_path
                                   ) from None
            raise
        except (SelfCheckError, UnforeseenError) as exc:  # densify's bugs, not bad input
            _bug(ctx, exc)
        except DensifyError as exc:
            raise click.ClickException(str(exc).splitlines()[0] if str(exc) else
                                       type(exc).__name__) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except BrokenPipeError:  # `densify models | head -1`: the reader left; stop quietly
            _silence_stdout()
            sys.exit(0)
        except Exception as exc:
            _bug(ctx, exc)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that Python's flush at exit raises no second BrokenPipeError
    (the recipe of Python's ``signal`` documentation)."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # no real file descriptor (e.g. click's test runner)
        pass


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--verbose", "-v", is_flag=True, help="Log progress details; tracebacks for bugs.")
@click.version_option(package_name="densify")
def main(verbose: bool) -> None:
    """densify: dense prediction by convolutionization."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s: %(message)s")


for _command in (models.models, verify.verify, convert.convert, heatmap.heatmap, detect.detect,
                 evaluate.evaluate, bench):
    main.add_command(_command)
