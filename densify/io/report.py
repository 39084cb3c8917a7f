"""A static HTML report of a batch run: one card per image, the failures, the settings, the timing.

The page is one self-contained file, ``report.html``, written atomically (:func:`atomic_output`)
into the output directory beside the files it links to. Plain HTML and inline CSS: no script, no
server, no fonts or images fetched from anywhere. Card thumbnails are inline JPEG data URIs made
from each image's overlay file, so the page shows them even when copied alone; links are
relative to the page and only to files inside its directory (a file elsewhere is listed as
text, not linked), so the folder can be moved or zipped and still opens from disk.

Input: the per-image scan records of the batch (JSON-able dicts, one per input)::

    {"image": path, "status": "ok" | "error" | "skipped", "error": str | None,
     "size": [H, W] | None, "top": [{"index", "name", "score", "box", "factor"}...],
     "files": [paths], "seconds": float, ...}

Cards are made for ``"ok"`` records, rows of the failure table for the others. Files are told
apart by name: ``*_sheet.png`` is the contact sheet, ``*.npz`` the result file, another image the
overlay.
"""

from __future__ import annotations

import base64
import datetime
import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

import cv2

from ..errors import OutputError
from .files import atomic_output
from .image import thumbnail

__all__ = ["THUMB_SIDE", "file_kind", "render_report", "write_report"]

THUMB_SIDE = 360
"""Longer side of a card's inline thumbnail, in pixels."""

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
 margin:0;padding:24px 32px;color:#1d1d1f;background:#f4f5f7}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 10px}
.summary{color:#444;margin:0 0 16px}
table.settings{border-collapse:collapse;background:#fff;border:1px solid #ddd}
table.settings th,table.settings td{padding:4px 12px;text-align:left;border-bottom:1px solid #eee;
 vertical-align:top}
table.settings th{color:#555;font-weight:600;white-space:nowrap}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:16px}
.card{background:#fff;border:1px solid #ddd;border-radius:8px;overflow:hidden}
.card img{display:block;width:100%;aspect-ratio:4/3;object-fit:contain;background:#2b2b2b}
.card .body{padding:10px 14px 12px}
.card h3{font-size:16px;margin:0;overflow-wrap:anywhere}
.meta{color:#666;font-size:13px;margin:2px 0 8px}
table.top{width:100%;border-collapse:collapse;font-size:14px}
table.top td{padding:2px 0}
table.top td.name{width:45%;padding-right:8px;overflow-wrap:anywhere}
table.top td.score{width:3.5em;text-align:right;font-variant-numeric:tabular-nums}
table.top td.bar{padding:0 8px}
.bar span{display:block;height:10px;background:#3b7dd8;border-radius:2px;min-width:1px}
.notes{color:#8a5a00;font-size:13px;margin:6px 0 0}
.links{margin:10px 0 0;font-size:14px}.links a{margin-right:14px}
table.errors{border-collapse:collapse;background:#fff;border:1px solid #e3b4b4;width:100%}
table.errors td,table.errors th{padding:6px 12px;text-align:left;border-bottom:1px solid #f0dada;
 vertical-align:top}
table.errors td.path{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px;
 overflow-wrap:anywhere;width:30%}
.ok{color:#1b7f3b}.bad{color:#b3261e}
"""


def file_kind(path: str | Path) -> str:
    """``"sheet"``, ``"result"``, ``"overlay"`` or ``"file"``, from the name (module docstring)."""
    name = Path(path).name.lower()
    if name.endswith("_sheet.png"):
        return "sheet"
    if name.endswith((".npz", ".json")):
        return "result"
    return "overlay" if name.endswith(_IMAGE_SUFFIXES) else "file"


def write_report(path: str | Path, records: Sequence[Mapping], settings: Mapping[str, object],
                 seconds: float, title: str = "densify report") -> Path:
    """Write the report (:func:`render_report`) to ``path`` atomically; return ``path``."""
    path = Path(path)
    text = render_report(records, settings, seconds, path.parent, title)
    try:
        with atomic_output(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc.strerror}); choose another output "
                          "directory with -o") from None
    return path


def render_report(records: Sequence[Mapping], settings: Mapping[str, object], seconds: float,
                  out_dir: str | Path, title: str = "densify report") -> str:
    """The page as a string; links are relative to ``out_dir`` (where the page will be)."""
    ok = [r for r in records if r.get("status", "ok") in ("ok", "skipped")]  # skipped: done before
    bad = [r for r in records if r.get("status", "ok") not in ("ok", "skipped")]
    scanning = sum(float(r.get("seconds") or 0.0) for r in ok)
    per_image = f" ({scanning / len(ok):.2f} s per image)" if ok else ""
    summary = (f"{len(records)} input(s): <span class='ok'>{len(ok)} scanned</span>, "
               f"<span class='{'bad' if bad else 'ok'}'>{len(bad)} failed</span>. Time: "
               f"{seconds:.1f} s in all, model set-up included; {scanning:.1f} s reading, "
               f"scanning and writing images{per_image}. Written "
               f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}.")
    parts = [f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
             f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
             f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{_esc(title)}</h1><p class='summary'>{summary}</p>", _settings(settings)]
    if bad:
        parts.append(_errors(bad))
    parts.append(f"<h2>Images ({len(ok)})</h2><div class='cards'>")
    parts.extend(_card(r, Path(out_dir), i) for i, r in enumerate(ok))
    parts.append("</div></body></html>\n")
    return "\n".join(parts)


def _settings(settings: Mapping[str, object]) -> str:
    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in settings.items())
    return f"<h2>Settings</h2><table class='settings'>{rows}</table>"


def _errors(bad: Sequence[Mapping]) -> str:
    rows = "".join(f"<tr class='error-row'><td class='path'>{_esc(r.get('image', '?'))}</td>"
                   f"<td>{_esc(r.get('status', 'error'))}</td><td>{_esc(_message(r))}"
                   f"</td></tr>" for r in bad)
    return (f"<h2 class='bad'>Failed inputs ({len(bad)})</h2><table class='errors'><tr>"
            f"<th>input</th><th>status</th><th>error</th></tr>{rows}</table>")


def _message(record: Mapping) -> str:
    """The error without the path prefix the CLI gives it (the path has its own column)."""
    message, prefix = str(record.get("error") or ""), f"{record.get('image', '')}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def _card(record: Mapping, out_dir: Path, number: int) -> str:
    files = [Path(f) for f in record.get("files", [])]
    overlay = next((f for f in files if file_kind(f) == "overlay"), None)
    image = Path(str(record.get("image", "?")))
    thumb = _thumbnail(overlay) if overlay else None
    img = (f"<img src='{thumb}' alt='heat map of {_esc(image.name)}'>" if thumb else
           "<p class='meta'>(no overlay image)</p>")
    if overlay and _relative(overlay, out_dir):
        img = f"<a href='{_relative(overlay, out_dir)}'>{img}</a>"
    top = "".join(f"<tr><td class='name'>{_esc(t['name'])}</td><td class='bar'><span "
                  f"style='width:{max(0.0, min(1.0, float(t['score']))) * 100:.1f}%'></span></td>"
                  f"<td class='score'>{float(t['score']):.3f}</td></tr>"
                  for t in record.get("top", []))
    notes = "".join(f"<p class='notes'>{_esc(n)}</p>" for n in record.get("notes", []))
    return (f"<article class='card' id='card-{number}'>{img}<div class='body'>"
            f"<h3 title='{_esc(image)}'>{_esc(image.name)}</h3><p class='meta'>{_meta(record)}</p>"
            f"<table class='top'>{top}</table>{notes}<p class='links'>{_links(files, out_dir)}</p>"
            f"</div></article>")


def _meta(record: Mapping) -> str:
    bits = []
    if record.get("size"):
        bits.append(f"{record['size'][0]}x{record['size'][1]} px (HxW)")
    factors = record.get("factors") or []
    if factors:
        bits.append(f"{len(factors)} scale(s) {min(factors):.3g}-{max(factors):.3g}")
    if record.get("seconds") is not None:
        bits.append(f"{float(record['seconds']):.2f} s")
    return _esc(", ".join(bits))


def _links(files: Sequence[Path], out_dir: Path) -> str:
    names = {"overlay": "overlay", "sheet": "contact sheet", "result": "result file"}
    links = []
    for f in files:
        href = _relative(f, out_dir)
        label = names.get(file_kind(f), f.name)
        links.append(f"<a href='{href}' title='{_esc(f.name)}'>{_esc(label)}</a>" if href
                     else f"<span title='outside the report folder'>{_esc(f)}</span>")
    return "".join(links)


def _relative(path: Path, out_dir: Path) -> str | None:
    """URL of ``path`` relative to ``out_dir``, or None when it lies outside it."""
    rel = os.path.relpath(Path(path).resolve(), Path(out_dir).resolve())
    if rel.startswith(os.pardir) or os.path.isabs(rel):
        return None
    return quote(Path(rel).as_posix())


def _thumbnail(path: Path) -> str | None:
    """An inline ``data:image/jpeg`` URI of ``path`` shrunk to :data:`THUMB_SIDE`, or None."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        return None
    ok, data = cv2.imencode(".jpg", thumbnail(bgr, THUMB_SIDE), [cv2.IMWRITE_JPEG_QUALITY, 85])
    return f"data:image/jpeg;base64,{base64.b64encode(data.tobytes()).decode('ascii')}" if ok else None


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)
