"""Docs that cannot rot: names, examples and the package's public face.

- Every ``densify.…`` dotted name written in a docstring, in ``README.md`` or in a page of the
  manual (``docs/*.md``) resolves: its longest importable prefix imports and the rest are
  attributes (a dataclass field counts).
- Every Python example (a fenced ``python`` block) in ``README.md`` and ``docs/*.md`` runs, the
  blocks of one page in order in one namespace, in a temporary directory that holds ``demos/``;
  every ``densify ...`` line of a fenced ``bash`` block there runs through the CLI. A block or
  line that needs what a test cannot have (downloaded weights, a cluster) carries a
  ``# needs: ...`` comment and is skipped.
- Every Sphinx-style role in a docstring (``:func:`name```, ``:mod:`.sibling```, ...) names
  something that exists: resolved absolutely, relative to its package or module, or, for the
  short forms (``:meth:`ScanResult.sheet```, ``:attr:`outputs```), a name defined somewhere in
  the package (a module-level name, a class attribute, a dataclass field or a ``self.`` attribute).
- ``dir(densify)`` shows the public names only.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NAME = re.compile(r"(?<![\w./-])densify(?:\.[A-Za-z_]\w*)+")
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.S | re.M)
NEEDS = "# needs:"
_CLI_RAN: set[str] = set()  # a command written on several pages runs once (same sandbox layout)


def _docstrings(path: Path) -> str:
    tree = ast.parse(path.read_text())
    nodes = [tree] + [n for n in ast.walk(tree) if isinstance(
        n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    return "\n".join(filter(None, (ast.get_docstring(n, clean=False) for n in nodes)))


def _sources() -> dict[str, str]:
    texts = {str(p.relative_to(ROOT)): p.read_text() for p in PAGES}
    for path in sorted((ROOT / "densify").rglob("*.py")):
        texts[str(path.relative_to(ROOT))] = _docstrings(path)
    return texts


def resolve(dotted: str) -> object:
    """The object ``dotted`` names: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            if hasattr(obj, attr):
                obj = getattr(obj, attr)
            elif dataclasses.is_dataclass(obj) and attr in {f.name for f in
                                                            dataclasses.fields(obj)}:
                obj = None
            else:
                raise AttributeError(f"{'.'.join(parts[:cut])} has no {attr!r}")
        return obj
    raise ModuleNotFoundError(dotted)


def _names() -> list[tuple[str, str]]:
    found = set()
    for where, text in _sources().items():
        for match in NAME.finditer(text):
            found.add((match.group(0).rstrip("."), where))
    return sorted(found)


def test_every_densify_name_in_docstrings_readme_and_manual_resolves():
    dead = []
    for name, where in _names():
        try:
            resolve(name)
        except (ImportError, AttributeError) as exc:
            dead.append(f"{where}: {name} ({exc})")
    assert not dead, "dead references:\n" + "\n".join(dead)


def test_the_name_check_can_fail():
    assert resolve("densify.scan.result.ScanResult.maps") is None  # a dataclass field
    with pytest.raises(AttributeError):
        resolve("densify.scan.result.NoSuchThing")
    with pytest.raises(ModuleNotFoundError):
        resolve("densify_nothing.here")


ROLE = re.compile(r":(?:func|class|meth|attr|mod|data|exc|obj):`[~!]?([\w.]+?)(?:\(\))?`")


def _module_of(path: Path) -> tuple[str, str]:
    """``(module, package)`` dotted names of a source file."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), ".".join(parts[:-1])
    return ".".join(parts), ".".join(parts[:-1])


def _defined_names() -> set[str]:
    """Every name the package defines: module globals, class attributes, dataclass fields,
    ``self.`` attributes assigned in its source."""
    names: set[str] = set()
    for path in sorted((ROOT / "densify").rglob("*.py")):
        module = importlib.import_module(_module_of(path)[0])
        names |= set(vars(module))
        for cls in (c for c in vars(module).values() if inspect.isclass(c)):
            names |= set(dir(cls))
            if dataclasses.is_dataclass(cls):
                names |= {f.name for f in dataclasses.fields(cls)}
        names |= set(re.findall(r"self\.(\w+)\s*(?::[^=\n]+)?=", path.read_text()))
    return names


def _resolves(name: str, module: str, package: str, defined: set[str]) -> bool:
    if name.startswith("."):
        candidates = [package + name]
    else:
        candidates = [name, f"{module}.{name}", f"{package}.{name}"]
    for candidate in candidates:
        try:
            resolve(candidate)
            return True
        except (ImportError, AttributeError):
            continue
    parts = name.lstrip(".").split(".")
    return not name.startswith(("densify.", ".")) and all(p in defined for p in parts)


def test_every_role_in_docstrings_names_something_that_exists():
    defined = _defined_names()
    dead = []
    for path in sorted((ROOT / "densify").rglob("*.py")):
        module, package = _module_of(path)
        for name in sorted(set(ROLE.findall(_docstrings(path)))):
            if not _resolves(name, module, package, defined):
                dead.append(f"{path.relative_to(ROOT)}: {name}")
    assert not dead, "roles naming nothing:\n" + "\n".join(dead)


def _blocks(page: Path, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(page.read_text()) if lang == language]


def _example_pages() -> list[Path]:
    return [p for p in PAGES if _blocks(p, "python") or _blocks(p, "bash")]


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    (tmp_path / "demos").symlink_to(ROOT / "demos")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("page", _example_pages(), ids=lambda p: p.name)
def test_python_examples_run(page, sandbox):
    namespace: dict = {"__name__": "__docs__"}
    ran = 0
    for block in _blocks(page, "python"):
        if NEEDS in block:
            continue
        exec(compile(block, f"{page.name}:python", "exec"), namespace)  # noqa: S102
        ran += 1
    for block in _blocks(page, "bash"):
        for line in block.splitlines():
            if line.startswith("densify ") and NEEDS not in line:
                if line not in _CLI_RAN:
                    _run_cli(shlex.split(line, comments=True)[1:], page)
                    _CLI_RAN.add(line)
                ran += 1
    if not ran:
        pytest.skip(f"{page.name}: every example needs something a test cannot have")


def _run_cli(args: list[str], page: Path) -> None:
    from click.testing import CliRunner

    from densify.cli import main

    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, f"{page.name}: densify {shlex.join(args)}\n{result.output}"


def test_readme_links_point_at_files_in_the_repository():
    """The manual's own links are checked by ``mkdocs build --strict``; the README is not part of
    it, so its relative links are checked here."""
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", (ROOT / "README.md").read_text())
    local = [link for link in links if "://" not in link]
    assert local, "the README links into the manual"
    assert [link for link in local if not (ROOT / link).exists()] == []


def test_dir_shows_only_public_names():
    import densify

    shown = [n for n in dir(densify) if not n.startswith("__")]
    assert not {"TYPE_CHECKING", "annotations", "importlib"} & set(shown)
    assert [n for n in shown if n.startswith("_")] == []
    assert set(shown) == set(densify.__all__)
    for name in densify.__all__:
        assert getattr(densify, name) is not None
