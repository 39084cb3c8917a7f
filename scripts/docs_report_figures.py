"""Make the manual's contact sheet and report screenshot from a real ``densify heatmap`` run.

    python scripts/docs_report_figures.py            # writes docs/digits_scene_sheet.png, docs/report.png

Steps: a folder with the demo scene, scikit-image's ``chelsea`` photo and one text file named
``.jpg`` (a bad input); ``python -m densify heatmap FOLDER --report -o OUT -q`` (the shipped digit
spotter, default settings); the scene's sheet reduced to 128 colours (Pillow; full size) so the
file stays small; the report opened in headless Chromium, screenshotted at 1280 px wide and
reduced the same way. Needs ``chromium`` on the PATH.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def shrink(src: Path, dst: Path, colors: int = 128) -> None:
    image = Image.open(src).convert("RGB")
    image.quantize(colors, method=Image.Quantize.MEDIANCUT).save(dst, optimize=True)
    print(f"{dst.relative_to(ROOT)}: {image.width}x{image.height}, {dst.stat().st_size // 1024} KB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    parser.add_argument("--height", type=int, default=1250, help="screenshot height, px")
    args = parser.parse_args()
    browser = shutil.which("chromium") or sys.exit("chromium not found: apt-get install chromium")
    with tempfile.TemporaryDirectory() as tmp:
        folder, out = Path(tmp) / "images", Path(tmp) / "out"
        folder.mkdir()
        shutil.copy(ROOT / "demos" / "digits_scene.png", folder)
        from densify.io.files import write_image
        from densify.io.image import sample_image

        write_image(folder / "chelsea.jpg", sample_image("chelsea"))
        (folder / "notes.jpg").write_text("not an image\n")
        cmd = [sys.executable, "-m", "densify", "heatmap", str(folder), "--report", "-o", str(out),
               "-q"]
        print("$", " ".join(cmd))
        subprocess.run(cmd, check=False)
        shrink(out / "digits_scene_sheet.png", args.docs / "digits_scene_sheet.png")
        shot = Path(tmp) / "report.png"
        subprocess.run([browser, *BROWSER_FLAGS, f"--user-data-dir={tmp}/profile",
                        f"--screenshot={shot}", f"--window-size=1280,{args.height}",
                        (out / "report.html").as_uri()], check=True, capture_output=True)
        shrink(shot, args.docs / "report.png")


if __name__ == "__main__":
    main()
