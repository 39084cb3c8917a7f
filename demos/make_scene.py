"""Write the demo scene ``demos/digits_scene.png`` and its ground truth ``demos/digits_scene.json``.

    python demos/make_scene.py            # same files every time (fixed seed)

The scene is 1600×1200, with 48 digits from 24 to 120 pixels tall on a cluttered collage, drawn
from both splits of :mod:`densify.synth` (so it includes the held-out font and textures).
Ground truth follows the COCO annotation layout: ``bbox`` is ``[x, y, w, h]`` in image pixels,
``category_id`` the digit (0-9), and boxes are :func:`densify.synth.digit_box` boxes.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import cv2

from densify.digits import synth

SEED = 2024
SIZE = (1200, 1600)  # (H, W)


def annotations(scene: synth.Scene) -> list[dict]:
    """COCO-style ``[x, y, w, h]`` boxes with category ids and names, rounded to 0.1 pixel."""
    out = []
    for (x1, y1, x2, y2), label in zip(scene.boxes.tolist(), scene.labels.tolist(), strict=True):
        box = [round(v, 1) for v in (x1, y1, x2 - x1, y2 - y1)]
        out.append({"bbox": box, "category_id": label, "category_name": synth.CATEGORIES[label]})
    return out


def _dump(truth: dict) -> str:
    """JSON with one line per list item (readable diffs), otherwise compact."""
    lines = []
    for key, value in truth.items():
        if isinstance(value, list):
            items = ",\n".join(f"    {json.dumps(v)}" for v in value)
            lines.append(f"  {json.dumps(key)}: [\n{items}\n  ]")
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


@click.command()
@click.option("--out-dir", default=Path(__file__).resolve().parent, show_default=True,
              type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", default=SEED, show_default=True)
def main(out_dir: Path, seed: int) -> None:
    """Render the scene and write the PNG and JSON into OUT_DIR."""
    scene = synth.make_scene(seed, size=SIZE, split="all", heights=(24.0, 120.0), n_digits=48,
                             max_noise=0.0)  # no pixel noise: a smaller PNG
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / "digits_scene.png"
    cv2.imwrite(str(png), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_PNG_COMPRESSION, 9])
    truth = {
        "image": {"file_name": png.name, "height": SIZE[0], "width": SIZE[1]},
        "seed": seed,
        "split": "all",
        "box_format": "[x, y, w, h] pixels; ink box widened to >= box_aspect x height",
        "box_aspect": synth.BOX_ASPECT,
        "categories": [{"id": i, "name": n} for i, n in enumerate(synth.CATEGORIES[:10])],
        "annotations": annotations(scene),
    }
    (out_dir / "digits_scene.json").write_text(_dump(truth))
    click.echo(f"wrote {png} ({png.stat().st_size / 1e6:.1f} MB) with {len(scene.labels)} digits")


if __name__ == "__main__":
    main()
