"""The package's layering, read from its own source: who imports whom.

Layers, lowest first (a module may import its own layer's package and any lower layer):

    errors                              -1  (imports nothing of densify)
    _parse                               0
    convert, models, io                  1  (each only itself and layer 0)
    scan                                 2
    cli, and the wings digits, bench,    3  (applications of the library; the core never
    distributed, runtime                     imports them)

Also: no import cycles between modules (imports that run at import time), no two modules that
import each other in any way (lazily or under ``TYPE_CHECKING`` too), no ``_private`` name imported from
another densify module (shared internals live in private *modules*), and importing the package or
its CLI does not import torch.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "densify"
LAYER = {"errors": -1, "_parse": 0, "_extras": 0, "convert": 1, "models": 1, "io": 1, "scan": 2, "cli": 3,
         "digits": 3, "bench": 3, "distributed": 3, "runtime": 3, "__init__": 3, "__main__": 3}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str], bool]]:
    """``(module, names, top_level)`` for every densify import in ``path``."""
    tree = ast.parse(path.read_text())
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(
        ".")[0]
    top = {id(n) for n in tree.body}  # run at import (``if TYPE_CHECKING:`` blocks do not)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "densify":
                continue
            names = [a.name for a in node.names]
            # ``from densify.scan import maps`` imports a module: count it as that module
            subs = [f"{mod}.{n}" for n in names if (ROOT.parent / f"{mod}.{n}".replace(".", "/")
                                                   ).with_suffix(".py").exists()
                    or (ROOT.parent / f"{mod}.{n}".replace(".", "/")).is_dir()]
            for target in subs or [mod]:
                found.append((target, names, id(node) in top))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "densify":
                    found.append((a.name, [], id(node) in top))
    return found


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYER[parts[1]] if len(parts) > 1 else LAYER["__init__"]


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_upward_or_sideways_imports(module):
    """Core modules import their own package or lower layers; apps never import the CLI."""
    here = _layer(module)
    for target, _, _ in _imports(MODULES[module]):
        same_package = target.split(".")[:2] == module.split(".")[:2]
        if here < 3:
            assert same_package or _layer(target) < here, f"{module} imports {target}"
        elif not module.startswith("densify.cli") and module != "densify.__main__":
            assert not target.startswith("densify.cli"), f"{module} imports {target}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_names_across_modules(module):
    for target, names, _ in _imports(MODULES[module]):
        if target == module:
            continue
        private = [n for n in names if n.startswith("_") and not n.startswith("__")
                   and not (ROOT.parent / target.replace(".", "/") / f"{n}.py").exists()]
        assert not private, f"{module} imports private {private} from {target}"


def test_core_never_imports_the_apps():
    for module, path in MODULES.items():
        if _layer(module) < 3:
            for target, _, _ in _imports(path):
                assert target.split(".")[1] not in ("cli", "digits", "bench", "distributed",
                                                   "runtime"), (
                    f"{module} imports {target}")


def test_no_import_cycles():
    graph = {m: {t for t, _, top in _imports(p) if top and t in MODULES and t != m}
             for m, p in MODULES.items()}
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for t in graph[m]:
            assert state.get(t) != 1, f"import cycle: {' -> '.join(stack + [m, t])}"
            if t not in state:
                visit(t, stack + [m])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])


def test_no_two_modules_import_each_other():
    """Not even one way lazily or under ``TYPE_CHECKING``: a tie between two files runs one way
    (the drawing code takes arrays and never imports the result that calls it)."""
    graph = {m: {t for t, _, _ in _imports(p) if t in MODULES and t != m}
             for m, p in MODULES.items()}
    both = sorted((a, b) for a in graph for b in graph[a] if a < b and a in graph[b])
    assert not both, f"modules importing each other: {both}"


def test_package_and_cli_do_not_import_torch():
    code = ("import sys, densify, densify.cli, densify.models.catalogue; "
            "from densify.cli import main; main(['models'], standalone_mode=False); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "resnet50" in proc.stdout


def test_public_names_resolve():
    import densify

    for name in densify.__all__:
        assert getattr(densify, name) is not None, name


def test_one_version_everywhere():
    """The installed metadata, ``densify.__version__`` and ``densify --version`` agree (setup.cfg
    reads the version from the package)."""
    from importlib.metadata import version

    from click.testing import CliRunner

    import densify
    from densify.cli import main

    assert version("densify") == densify.__version__
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and densify.__version__ in result.output
