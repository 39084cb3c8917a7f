"""Measure checks 1-3 (and the crop gap) for every model; write JSON, render the README table.

    python scripts/equivalence_table.py --out results/equivalence.json          # measure (resumes)
    python scripts/equivalence_table.py --out results/equivalence.json --markdown
    python scripts/equivalence_table.py --estimate                              # check-3 cost only

Check 1 runs at each model's real canonical input; checks 2-4 at the reduced canonical input the
test suite uses (``tests/conftest.py``: 64 px for global-pool nets, the real size for flatten heads).
Random weights, fixed seeds. Float64 is skipped for families with grouped/depthwise
convolutions (no fast float64 kernel on the CPU); check 3 is left to the slow test tier for the
models whose receptive field makes its input cost 3.6-84 TFLOP (``--estimate``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from conftest import ALL_MODELS, GROUPED, SLOW, SLOW_STRIDE_CHECK, size_for  # noqa: E402

from densify import verify, zoo  # noqa: E402
from densify.convert import available_strides, convolutionize  # noqa: E402

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def measure(name: str, dtype_name: str) -> dict:
    dtype = DTYPES[dtype_name]
    torch.manual_seed(0)
    model = zoo.build_model(name).to(dtype).eval()
    spec = zoo.MODELS[name]
    row = {"name": name, "dtype": dtype_name}
    t = time.time()
    row["canonical"] = _check(verify.check_canonical(model, convolutionize(model, spec.input_size)))
    small = size_for(name)
    dense = convolutionize(model, small)
    row["head"] = _check(verify.check_head(model, dense))
    row["crops"] = _check(verify.check_crops(model, dense))
    if name in SLOW_STRIDE_CHECK or name in SLOW:
        row["output_stride"] = {"note": "slow tier"}
    else:
        row["output_stride"] = _check(verify.check_output_stride(model, small))
    row["seconds"] = round(time.time() - t, 1)
    return row


def _check(c: verify.Check) -> dict:
    return {"max_rel": c.max_rel, "max_abs": c.max_abs, "count": c.count, "passed": c.passed,
            "note": c.note}


def run(out: Path, models: list[str], dtypes: list[str]) -> None:
    results = json.loads(out.read_text()) if out.exists() else {}
    for name in models:
        for dtype in dtypes:
            key = f"{name}/{dtype}"
            if key in results or (dtype == "float64" and name.startswith(GROUPED)):
                continue
            row = measure(name, dtype)
            results[key] = row
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_suffix(".tmp")
            tmp.write_text(json.dumps(results, indent=1))
            tmp.replace(out)
            print(f"{key}: {row['seconds']} s", flush=True)


def _fmt(entry: dict | None) -> str:
    if not entry:
        return "f32 only"
    if "max_rel" not in entry:
        return entry.get("note", "—")
    if entry["count"] == 0:
        return "n/a"
    return f"{entry['max_rel']:.0e}" + ("" if entry["passed"] else " ✗")


def markdown(out: Path) -> str:
    results = json.loads(out.read_text())
    lines = ["| model | input | strides | 1 canonical f64 / f32 | 2 head f64 / f32 | "
             "3 stride/2 f64 / f32 | crop gap (f32) |",
             "|---|---|---|---|---|---|---|"]
    for name in ALL_MODELS:
        f64, f32 = results.get(f"{name}/float64"), results.get(f"{name}/float32")
        if not (f64 or f32):
            continue
        spec = zoo.MODELS[name]
        strides = "/".join(map(str, available_strides(zoo.build_skeleton(name), spec.input_size)))
        cells = [" / ".join(_fmt((r or {}).get(k)) for r in (f64, f32))
                 for k in ("canonical", "head", "output_stride")]
        gap = _fmt((f32 or f64 or {}).get("crops")).replace(" ✗", "")
        lines.append(f"| {name} | {spec.input_size[1]} | {strides} | {' | '.join(cells)} | {gap} |")
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
    parser.add_argument("--out", type=Path, default=Path("results/equivalence.json"))
    parser.add_argument("--models", nargs="*", default=None)
    parser.add_argument("--dtypes", nargs="*", default=["float64", "float32"])
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--estimate", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.estimate:
        estimate()
    elif args.markdown:
        print(markdown(args.out))
    else:
        run(args.out, args.models or ALL_MODELS, args.dtypes)


if __name__ == "__main__":
    main()
