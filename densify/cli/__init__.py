"""The ``densify`` command line: one click group; each command in its own module.

Errors: a :class:`densify.errors.DensifyError` (bad input: a file, a model name, weights, a size)
is one line on stderr and exit status 1; click's own usage errors exit 2. Anything else is a bug
in densify: one line that says so, and its traceback with ``-v``.
"""

from __future__ import annotations

import logging
import sys

import click

from ..errors import DensifyError
from . import convert, detect, evaluate, heatmap, models, slide, verify
from .bench import bench

__all__ = ["main"]


class _Group(click.Group):
    """Turns :class:`DensifyError` into one-line messages; bugs say so (traceback with -v)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except DensifyError as exc:
            raise click.ClickException(str(exc).splitlines()[0] if str(exc) else
                                       type(exc).__name__) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except Exception as exc:
            if ctx.params.get("verbose"):
                raise
            click.echo(f"Error: internal error ({type(exc).__name__}: {exc}); this is a bug in "
                       "densify: rerun with -v for the traceback and report it", err=True)
            sys.exit(3)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--verbose", "-v", is_flag=True, help="Log progress details; tracebacks for bugs.")
@click.version_option(package_name="densify")
def main(verbose: bool) -> None:
    """densify: dense prediction by convolutionization."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s: %(message)s")


for _command in (models.models, verify.verify, convert.convert, heatmap.heatmap, detect.detect,
                 evaluate.evaluate, bench, slide.slide):
    main.add_command(_command)
