"""Write ``densify/models/table.json``: the catalogue's facts, computed from the models.

For every torchvision, seed and timm model: canonical input, normalization, class count (from
torchvision's bundled weights metadata or the catalogue's own facts), parameter count (a skeleton
on the meta device) and the output strides ``densify.convolutionize`` reaches (one conversion per
model). ``densify models`` prints this table instead of building 70 models; ``tests/
test_catalogue.py`` checks it against the same computations.

    python scripts/make_model_table.py            # about 2 minutes on 2 cores
"""

from __future__ import annotations

import json
import logging
import sys
import time

from densify.convert.dense import available_strides
from densify.models import catalogue


def compute_row(name: str, row: dict) -> dict:
    """``row`` with ``params`` and ``strides`` computed from the model itself."""
    builder = catalogue.builder_for(row["family"], name)
    model = catalogue.skeleton(builder, row["num_classes"])
    params = sum(p.numel() for p in model.parameters())
    strides = available_strides(model, tuple(row["input_size"]))
    return {**row, "params": params, "strides": strides}


def main() -> None:
    logging.disable(logging.WARNING)
    facts = catalogue.torchvision_facts()
    models = {**catalogue.seed_facts(), **facts["models"], **catalogue.timm_facts()}
    rows, start = {}, time.perf_counter()
    for name, row in models.items():
        try:
            rows[name] = compute_row(name, row)
        except ImportError as exc:  # timm missing: keep the facts, leave the computed ones out
            print(f"{name}: {exc}", file=sys.stderr)
            rows[name] = row
    table = {"models": rows, "refused": facts["refused"]}
    catalogue.TABLE_PATH.write_text(json.dumps(table, indent=1) + "\n")
    print(f"wrote {catalogue.TABLE_PATH}: {len(rows)} models in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
