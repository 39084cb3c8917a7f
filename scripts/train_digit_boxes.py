"""Give the shipped digit spotter a box regressor: train only a box head on its frozen features.

The classifier (``lenet5-digits``: trunk and classifier weights) stays bit for bit what
``scripts/train_lenet_digits.py`` trained; a new head (FC 128 → ReLU → FC 4,
:class:`densify.models.archs.LeNet5Boxes`) learns the labelled digit's box in each positive
window from the trunk's flattened 16×4×4 features. Targets are edge offsets in window units (the
scanner's ``"offsets"`` box format): ``(x1/28, y1/28, (x2-28)/28, (y2-28)/28)`` for the ground
truth box ``(x1, y1, x2, y2)`` that :func:`densify.digits.synth.make_batch` returns
(``return_boxes=True``: :func:`densify.digits.synth.digit_box`, as in scenes). Loss: smooth L1.

    python scripts/train_digit_boxes.py     # a few minutes on 1 core
    python scripts/train_digit_boxes.py --per-class

Writes ``OUT/lenet5_digits.pt`` (the full state dict) and updates ``OUT/lenet5_digits.json`` (arch
``lenet5_boxes``, outputs, box format, the head's held-out error, sha256).

``--per-class`` (OverFeat's per-class regressors): the head's last layer is FC 4·11
(:func:`densify.models.archs.lenet5_boxes_per_class`), each window's loss reads only its digit's
four outputs, the same windows and seeds; the background class's four outputs get no loss and are
set to zero (never used: the background yields no boxes). Writes a separate model,
``OUT/lenet5_digits_pc.pt`` and ``OUT/lenet5_digits_pc.json`` (``lenet5-digits-pc``: the
shipped card with this head), and leaves ``lenet5_digits.*`` as they are.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import time
from pathlib import Path

import click
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from densify.convert.dense import available_strides
from densify.digits import synth
from densify.models import archs
from densify.models.catalogue import WEIGHTS_DIR

CHUNK = 2000


def _chunk(args: tuple[int, int, str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n, seed, split = args
    torch.set_num_threads(1)
    x, y, boxes = synth.make_batch(n, seed, split, p_background=0.0, return_boxes=True)
    return (x * 255).round().to(torch.uint8), y, boxes


def generate(n: int, seed: int, split: str, workers: int) -> tuple[torch.Tensor, ...]:
    """``n`` positive windows (uint8), labels and ground-truth boxes in window pixels."""
    chunks = (n + CHUNK - 1) // CHUNK
    seeds = np.random.SeedSequence([seed, 4242]).generate_state(chunks)
    jobs = [(min(CHUNK, n - i * CHUNK), int(s), split) for i, s in enumerate(seeds)]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        parts = list(tqdm(pool.imap(_chunk, jobs), total=len(jobs), desc=f"{split} windows"))
    return tuple(torch.cat([p[k] for p in parts]) for k in range(3))


def offsets(boxes: torch.Tensor) -> torch.Tensor:
    """Window-pixel boxes → edge offsets in window units (module docstring)."""
    w = float(synth.WINDOW)
    return torch.stack([boxes[:, 0] / w, boxes[:, 1] / w, (boxes[:, 2] - w) / w,
                        (boxes[:, 3] - w) / w], dim=1)


@torch.no_grad()
def features(model: archs.LeNet5Boxes, x: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    return torch.cat([model.features((x[i:i + 8192].float() / 255 - mean) / std)
                      for i in range(0, len(x), 8192)])


def own_box(out: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """``(N, 4)``: the head's box, or with ``labels`` (a per-class ``(N, 4·K)`` head) the box of
    each window's own class."""
    if labels is None:
        return out
    return out.view(len(out), -1, 4)[torch.arange(len(out)), labels]


def fit(head: torch.nn.Module, f: torch.Tensor, t: torch.Tensor, epochs: int, gen,
        labels: torch.Tensor | None = None) -> None:
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    steps = epochs * ((len(f) + 255) // 256)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps, pct_start=0.1)
    head.train()
    for _ in tqdm(range(epochs), desc="epochs"):
        order = torch.randperm(len(f), generator=gen)
        for i in range(0, len(f), 256):
            idx = order[i:i + 256]
            own = own_box(head(f[idx]), None if labels is None else labels[idx])
            loss = F.smooth_l1_loss(own, t[idx], beta=0.02)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    head.eval()


@torch.no_grad()
def box_error(head: torch.nn.Module, f: torch.Tensor, boxes: torch.Tensor,
              labels: torch.Tensor | None = None) -> dict:
    """Mean absolute edge error in window pixels and the mean IoU with the ground truth, for the
    regressed boxes and for the fixed centred box the card gave before (20 px tall, 0.6 wide)."""
    from torchvision.ops import box_iou

    w = float(synth.WINDOW)
    d = own_box(head(f), labels) * w
    pred = torch.stack([d[:, 0], d[:, 1], w + d[:, 2], w + d[:, 3]], dim=1)
    h = synth.DIGIT_HEIGHT
    fixed = torch.tensor([(w - synth.BOX_ASPECT * h) / 2, (w - h) / 2, (w + synth.BOX_ASPECT * h) / 2,
                          (w + h) / 2]).expand_as(boxes)

    def stats(b):
        iou = box_iou(b, boxes).diagonal()
        return {"edge_error_px": round((b - boxes).abs().mean().item(), 3),
                "mean_iou": round(iou.mean().item(), 4),
                "iou_at_least_0.75": round((iou >= 0.75).float().mean().item(), 4)}

    return {"regressed": stats(pred), "fixed_centred_box": stats(fixed)}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def classifier_digest(state: dict) -> str:
    """sha256 over the classifier's tensors (trunk and FC layers, in LeNet-5's key order): the
    same before and after this script, which never touches them (tests/test_boxes.py)."""
    digest = hashlib.sha256()
    for _, new in sorted(archs.LeNet5Boxes.classifier_keys().items()):
        digest.update(state[new].numpy().tobytes())
    return digest.hexdigest()


@click.command()
@click.option("--seed", default=0, show_default=True)
@click.option("--samples", default=60_000, show_default=True, help="Positive training windows.")
@click.option("--epochs", default=12, show_default=True)
@click.option("--workers", default=2, show_default=True)
@click.option("--out", default=str(WEIGHTS_DIR), show_default=True, type=click.Path(path_type=Path))
@click.option("--per-class", is_flag=True,
              help="One box per class; writes lenet5_digits_pc.{pt,json} (module docstring).")
def main(seed: int, samples: int, epochs: int, workers: int, out: Path, per_class: bool) -> None:
    """Train the box head of lenet5-digits and rewrite its weights file and card (or, with
    --per-class, write the per-class model beside it)."""
    start = time.time()
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    card_path = out / "lenet5_digits.json"
    card = json.loads(card_path.read_text())
    state = torch.load(out / card["file"], map_location="cpu", weights_only=True)
    build = archs.lenet5_boxes_per_class if per_class else archs.lenet5_boxes
    model = build(len(card["categories"]), card["input_size"][0])
    if per_class:  # the shipped classifier; a new head
        state = {k: v for k, v in state.items() if not k.startswith("box_head.")}
        missing = model.load_state_dict(state, strict=False).missing_keys
        assert all(k.startswith("box_head.") for k in missing), missing
    elif card["arch"] == "lenet5":  # the classifier alone: rename its keys
        state = {archs.LeNet5Boxes.classifier_keys()[k]: v for k, v in state.items()}
        missing = model.load_state_dict(state, strict=False).missing_keys
        assert all(k.startswith("box_head.") for k in missing), missing
    else:
        model.load_state_dict(state)
    before = classifier_digest(model.state_dict())
    mean, std = card["mean"][0], card["std"][0]
    x, y, boxes = generate(samples, seed + 20_000, "train", workers)
    xe, ye, boxes_e = generate(10_000, seed + 20_001, "eval", workers)
    f, fe = features(model, x, mean, std), features(model, xe, mean, std)
    fit(model.box_head, f, offsets(boxes), epochs, gen, y if per_class else None)
    error = box_error(model.box_head, fe, boxes_e, ye if per_class else None)
    print(json.dumps(error, indent=2))
    if per_class:
        with torch.no_grad():  # the background's box: untrained, never used; make it the window
            last, bg = model.box_head[-1], card["background_class"]
            last.weight[4 * bg:4 * bg + 4] = 0
            last.bias[4 * bg:4 * bg + 4] = 0
        card.update({"name": "lenet5-digits-pc", "file": "lenet5_digits_pc.pt"})
        card_path = out / "lenet5_digits_pc.json"
    pt = out / card["file"]
    assert classifier_digest(model.state_dict()) == before
    torch.save(model.state_dict(), pt)
    card.update({
        "arch": "lenet5_boxes_per_class" if per_class else "lenet5_boxes",
        "outputs": {"scores": 0, "boxes": 1}, "box_format": "offsets",
        "box_head": {"samples": samples, "epochs": epochs, "seed": seed, "per_class": per_class,
                     "held_out_windows": 10_000, "held_out_split": "eval",
                     "held_out_error": error, "train_seconds": round(time.time() - start)},
        "classifier_tensors_sha256": before,
        # the facts `densify models` prints (tests/test_catalogue.py checks them)
        "params": sum(p.numel() for p in model.parameters()),
        "strides": available_strides(model, tuple(card["input_size"])),
        "sha256": sha256(pt)})
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    print(f"wrote {pt} and {card_path}")


if __name__ == "__main__":
    main()
