"""``--json FILE`` (``-``: standard output), the same in every command, and how it is written.

Re-exported by :mod:`densify.cli.options`, where every shared option is listed.
"""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["json_output", "write_json_output", "writable_file"]


def _json_target(ctx, param, value: str | None) -> str | None:
    if value is not None and value != "-" and value.startswith("-"):
        raise click.BadParameter(f"--json takes a FILE (or - for standard output), got {value!r}; "
                                 "e.g. --json out/results.json")
    if value not in (None, "-"):  # refused before any work, not after a long scan
        problem = _unwritable(Path(value))
        if problem:
            raise click.BadParameter(_cannot_write(value, problem, stdout=True))
    return value


def writable_file(ctx, param, value):
    """A click callback for an option naming a file to write (a path or None): refuses, when the
    command line is read, a path that cannot be written (so no work is lost to it)."""
    problem = None if value is None else _unwritable(Path(value))
    if problem:
        raise click.BadParameter(_cannot_write(value, problem))
    return value


def _cannot_write(target, problem: str, stdout: bool = False) -> str:
    return (f"cannot write {target} ({problem}); choose another FILE"
            + (", or - for standard output" if stdout else ""))


def _unwritable(target: Path) -> str | None:
    """Why a file cannot be written at ``target`` (missing directories would be created), or
    None; creates nothing (a probe file is created and removed in the nearest existing
    directory)."""
    import tempfile

    if target.is_dir():
        return "it is a directory"
    existing = target.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a directory"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        return f"{existing}: {exc.strerror}"
    return None


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
    from ..errors import OutputError
    from ..io.files import ensure_output_dir, write_json

    problem = _unwritable(Path(target))
    if problem:  # it changed since the command line was read
        raise OutputError(f"--json: {_cannot_write(target, problem, stdout=True)}")
    ensure_output_dir(Path(target).parent)
    write_json(Path(target), data)
    return True
