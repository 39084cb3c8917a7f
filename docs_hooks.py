"""MkDocs hooks for the manual: optional pages in the nav, and the API reference pages.

- Some pages (``docs/timm.md``, ``docs/slides.md``, ``docs/gpu.md``) arrive with the features they
  describe; the nav in ``mkdocs.yml`` lists only the pages every checkout has, and this hook adds
  those that exist.
- Docstrings are written with Sphinx-style roles (``:func:`name```), which the Python handler
  shows verbatim; the rendered pages drop the role and keep the code.
- ``api/<package>.md`` is generated: one ``::: module`` block (mkdocstrings) per public module of
  the package, read from the source tree, so a new or removed module needs no edit here.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File

OPTIONAL = [("timm models", "timm.md"), ("Whole-slide images", "slides.md"), ("GPUs", "gpu.md")]
ROOT = Path(__file__).resolve().parent / "densify"
#: API page -> (title, packages or modules it documents, each followed by its public submodules)
API = {
    "densify": ("The top-level package", ["densify"]),
    "convert": ("Conversion: classifier to dense net", ["densify.convert"]),
    "models": ("Models: catalogue, cards, weights", ["densify.models"]),
    "scan": ("Scanning: pyramid, maps, heat maps, detections, results", ["densify.scan"]),
    "io": ("Input and output: images, files, records, drawing", ["densify.io"]),
    "applications": ("Applications: digits, Ray, benchmark, runtime",
                     ["densify.digits", "densify.distributed", "densify.runtime", "densify.bench"]),
    "errors": ("Errors", ["densify.errors"]),
}


def on_config(config, **kwargs):
    docs = Path(config["docs_dir"])
    present = [{title: name} for title, name in OPTIONAL if (docs / name).is_file()]
    if present:
        nav = config["nav"]
        at = next((i for i, item in enumerate(nav) if "Command line" in item), len(nav))
        nav[at:at] = present
    return config


def _modules(name: str) -> list[str]:
    """``name`` and, for a package, its public submodules in file order (empty if absent)."""
    path = ROOT.parent / name.replace(".", "/")
    if path.is_dir() and name != "densify":
        subs = sorted(p.stem for p in path.glob("*.py") if not p.stem.startswith("_"))
        return [name] + [f"{name}.{s}" for s in subs]
    return [name] if path.is_dir() or path.with_suffix(".py").is_file() else []


def api_page(title: str, names: list[str]) -> str:
    blocks = [f"# {title}\n"]
    for name in names:
        for module in _modules(name):
            if module == "densify":
                blocks.append("::: densify\n    options:\n      members: false\n")
                blocks.append(_public_names())
            else:
                blocks.append(f"::: {module}\n")
    return "\n".join(blocks)


def _public_names() -> str:
    """A list of ``densify.__all__``, each linked to where it is defined (a broken link fails
    the strict build, so the package's table of lazy names is checked too)."""
    import densify  # imports no torch

    lines = ["## Public names\n", "Everything `import densify` offers, defined in:\n"]
    for name in densify.__all__:
        home = densify._LAZY.get(name)
        target = f"densify.{home}.{name}" if home else f"densify.errors.{name}"
        lines.append(f"- [`densify.{name}`][{target}]")
    return "\n".join(lines) + "\n"


def on_files(files, config, **kwargs):
    for page, (title, names) in API.items():
        files.append(File.generated(config, f"api/{page}.md", content=api_page(title, names)))
    return files


_ROLE = re.compile(r":(?:func|mod|class|meth|attr|data|exc|obj):(?=<code>)")


def on_page_content(html, page, config, files, **kwargs):
    return _ROLE.sub("", html)
