"""COCO AP on held-out digit scenes: the shipped spotter, a second LeNet-5 and their ensemble.

    python scripts/train_lenet_digits.py --seed 1 --out /tmp/seed1   # the second model (~8 min)
    python scripts/ensemble_digits.py /tmp/seed1/lenet5_digits.pt      # 20 scenes, one thread

The second model is the training script's classifier (no box head) with another seed; it reads
its windows as the shipped model does (the shipped card, without the box output). Each run scans
the same generated scenes (:func:`densify.digits.evaluation.evaluate_scenes`, seeds 90000 up,
the held-out font and textures) at the card's threshold, with boxes ``auto`` (regressed where a
model has a box head, else the card's object box) and ``object`` (the object box everywhere),
merged by NMS or (``--merge overfeat``) OverFeat's greedy merge. Prints one JSON line per run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import torch

from densify import Ensemble, Scanner
from densify.digits.evaluation import evaluate_scenes
from densify.models import archs
from densify.models.user import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", help="state dict of archs.lenet5(11), e.g. /tmp/seed1/"
                                        "lenet5_digits.pt")
    parser.add_argument("--scenes", type=int, default=20)
    parser.add_argument("--merge", choices=["nms", "overfeat"], default="nms")
    args = parser.parse_args()
    torch.set_num_threads(1)
    shipped = load_model("lenet5-digits")
    net = archs.lenet5(11)
    net.load_state_dict(torch.load(args.weights, map_location="cpu"))
    card = dataclasses.replace(shipped.card, scores_output=None, boxes_output=None,
                               box_format=None)  # (card.replace treats None as "keep")
    second = dataclasses.replace(shipped, model=net.eval(), weights=args.weights, card=card)
    a, b = Scanner(shipped, device="cpu", threads=1), Scanner(second, device="cpu", threads=1)
    runs = {"shipped": a, "second (seed 1, no box head)": b,
            "ensemble (equal weights)": Ensemble([a, b])}
    for name, scanner in runs.items():
        for boxes in ("auto", "object"):
            r = evaluate_scenes(scanner, args.scenes, threshold=a.default_threshold,
                                detect_options={"boxes": boxes, "merge": args.merge})
            print(json.dumps({"run": name, "boxes": boxes, "merge": args.merge, **{
                k: round(r[k], 3) for k in ("AP", "AP50", "AP75", "AR", "precision", "recall")},
                "scan_seconds": r["scan_seconds"]}), flush=True)


if __name__ == "__main__":
    main()
