"""The manual's model table (``docs/models.md``), rendered from what the test suite measured.

    DENSIFY_RECORD=results/equivalence.json python -m pytest tests/test_convert.py -q
    python scripts/equivalence_table.py --from-record results/equivalence.json   # markdown
    python scripts/equivalence_table.py --estimate                                # check-3 cost

The tests record every check they run (``tests/conftest.py``: ``record``): check 1 at each model's
real canonical input (float32) and at the reduced canonical input the suite uses (64 px for
global-pool nets, the real size for flatten heads; float64, or float32 for grouped-convolution
families, which have no fast float64 kernel on the CPU), check 2 and the crop gap at the reduced
size, and check 3 (float64 for the small nets, float32 otherwise; the ten models whose receptive
fields make it cost 3.6-84 TFLOP run it only with ``DENSIFY_HUGE=1``). Random weights, fixed seeds.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from conftest import ALL_MODELS, GLOBAL_CONTEXT, size_for  # noqa: E402

from densify.convert.dense import available_strides, convolutionize  # noqa: E402
from densify.models import catalogue as zoo

SHORT = {"float64": "f64", "float32": "f32"}


def _cell(rows: list[dict]) -> str:
    """Worst relative error of the matching records per dtype (float64 first), with the dtype it
    was measured in; a record of several runs (both tiers) gives one figure per dtype."""
    if not rows:
        return "—"
    by_dtype: dict[str, list[dict]] = {}
    for r in rows:
        by_dtype.setdefault(r["dtype"], []).append(r)
    parts = []
    for dtype in sorted(by_dtype, reverse=True):  # float64 first
        measured = [r for r in by_dtype[dtype] if r["count"]]
        if not measured:
            parts.append("n/a")
            continue
        worst = max(measured, key=lambda r: r["max_rel"])
        failed = any(not r["passed"] for r in measured) and worst["check"] != "crops"
        parts.append(f"{worst['max_rel']:.0e} {SHORT[dtype]}{' ✗' if failed else ''}")
    return ", ".join(parts)


def markdown(path: Path) -> str:
    records = json.loads(path.read_text())
    lines = ["| model | input | strides | 1 at input (f32) | 1 reduced | 2 head | 3 stride/2 | "
             "crop gap |", "|---|---|---|---|---|---|---|---|"]
    for name in ALL_MODELS:
        mine = [r for r in records if r["model"] == name]
        if not mine:
            continue
        spec = zoo.MODELS[name]
        full = list(spec.input_size)
        strides = "/".join(map(str, available_strides(zoo.build_skeleton(name), spec.input_size)))
        pick = {
            "1 full": [r for r in mine if r["check"] == "canonical" and r["size"] == full
                       and r["dtype"] == "float32"],
            "1 reduced": [r for r in mine if r["check"] == "canonical"
                          and (r["size"] != full or r["dtype"] == "float64")],
            "2": [r for r in mine if r["check"] == "head"],
            "3": [r for r in mine if r["check"] == "output_stride"],
            "4": [r for r in mine if r["check"] == "crops"][:1],
        }
        third = _cell(pick["3"]) if pick["3"] else (
            "global context" if name.startswith(GLOBAL_CONTEXT) else "huge tier")
        gap = _cell(pick["4"]).split(" ")[0]
        lines.append(f"| {name} | {spec.input_size[1]} | {strides} | {_cell(pick['1 full'])} | "
                     f"{_cell(pick['1 reduced'])} | {_cell(pick['2'])} | {third} | {gap} |")
    return "\n".join(lines)


def estimate() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    for name in ALL_MODELS:
        model = zoo.build_skeleton(name)
        dense = convolutionize(model, size_for(name))
        g = dense.geometry
        if g.rf_size is None:
            print(f"{name:22s} global context: check 3 not applicable")
            continue
        s, off = dense.output_stride, g.rf_offset[0]
        size = max(g.window[0], off + -(-max(0, -off) // s) * s + g.rf_size[0]) + s // 2 + s
        param = next(model.parameters())
        with FlopCounterMode(display=False) as counter:
            dense(torch.empty(1, dense.input_size[0], size, size, device=param.device,
                              dtype=param.dtype))
        print(f"{name:22s} input {size:5d}  ~{5 * counter.get_total_flops() / 1e9:9.0f} GFLOP")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from-record", type=Path, default=None, metavar="FILE")
    parser.add_argument("--estimate", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.estimate:
        estimate()
    elif args.from_record:
        print(markdown(args.from_record))
    else:
        parser.error("pass --from-record FILE or --estimate")


if __name__ == "__main__":
    main()
