"""The bench on a tiny model: every field present, dense and crop outputs agree, finite figures.
No wall-clock assertions: the timings themselves are not tested."""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner

from densify.bench import PeakMemory, count_flops, format_report, run_bench
from densify.cli import main
from densify.runtime import trim_heap as release_memory

METHOD_FIELDS = {"seconds", "windows", "windows_per_s", "gflop", "gflops_per_s", "peak_fraction",
                 "peak_memory_bytes", "runs"}
TOP_FIELDS = {"model", "weights", "size", "window", "output_stride", "cells", "windows",
              "precision", "channels_last", "threads", "cpu_capability", "torch",
              "peak_gflops_per_s", "flop_method", "memory_method", "memory_model", "breakdown",
              "speedup", "flop_ratio", "methods", "load_average", "allocator", "device"}


def _finite_positive(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def _check_result(r: dict) -> None:
    assert TOP_FIELDS <= set(r)
    assert r["windows"] == r["cells"][0] * r["cells"][1] > 1
    for name in ("dense", "baseline"):
        m = r["methods"][name]
        assert METHOD_FIELDS <= set(m), name
        assert all(_finite_positive(m[k]) for k in ("seconds", "windows_per_s")), m
        assert m["windows"] == r["windows"]
    assert _finite_positive(r["speedup"]) and _finite_positive(r["flop_ratio"])
    assert r["flop_ratio"] > 1  # the dense net shares the overlapping windows' work
    agreement = r["methods"]["baseline"]["agreement"]
    assert agreement["exact_expected"] and agreement["max_rel"] <= agreement["tolerance"]
    assert set(r["breakdown"]) >= {"trunk", "head", "head_top_layer"}
    assert r["memory_model"]["estimate_bytes"] > 0
    dense = r["methods"]["dense"]
    assert dense["user_seconds"] >= 0 and dense["sys_seconds"] >= 0
    assert r["allocator"] in {"system", "tcmalloc", "jemalloc", "glibc (retained)"}


def test_cli_json_has_every_field():
    result = CliRunner().invoke(main, ["bench", "--model", "lenet5", "-w", "random", "--size", "60x60",
                                       "--repeat", "1", "--json", "-", "--no-timm"])
    assert result.exit_code == 0, result.output
    r = json.loads(result.output[result.output.index("{"):])  # after the random-weights warning
    _check_result(r)
    assert r["size"] == [60, 60] and r["window"] == [28, 28] and r["output_stride"] == 4
    assert r["methods"]["baseline"]["extrapolated"] is False
    assert r["device"] == "cpu"  # --device auto on a machine without CUDA


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the refusal on a CPU-only machine")
def test_cuda_without_a_gpu_is_refused_in_one_line():
    result = CliRunner().invoke(main, ["bench", "--model", "lenet5", "-w", "random", "--device",
                                       "cuda", "--size", "60x60"])
    assert result.exit_code == 2 and "CUDA is not available" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_library_subset_extrapolates_and_halved_stride():
    r = run_bench("lenet5", (60, 64), output_stride=2, repeat=1, baseline_windows=7,
                  batch_size=3, timm=False, threads=1)
    _check_result(r)
    b = r["methods"]["baseline"]
    assert b["extrapolated"] and b["measured_windows"] == 7 and b["agreement"]["cells"] == 7
    assert r["output_stride"] == 2 and r["cells"] == [17, 19]
    text = format_report(r)
    assert "extrapolated" in text and "speed-up" in text and "unpadded" in text
    assert "node sum" in text and "dense CPU time per pass" in text


def test_tiled_bench_and_text_report():
    result = CliRunner().invoke(main, ["bench", "--model", "lenet5", "-w", "random", "--size", "80x72",
                                                "--repeat", "1", "--max-memory", "300KiB",
                                                "--no-channels-last", "--no-breakdown"])
    assert result.exit_code == 0, result.output
    assert "tiles, largest input" in result.output and "speed-up" in result.output


def test_timm_method_when_available():
    pytest.importorskip("timm")
    r = run_bench("resnet18", (256, 288), repeat=1, baseline=False, breakdown=False,
                  weights="random")
    ttp = r["methods"]["timm_ttp"]
    assert METHOD_FIELDS <= set(ttp), ttp
    assert ttp["max_rel_vs_dense"] < 1e-4  # timm's pooled map is the dense map, pooled


def test_timm_method_skipped_for_other_families():
    r = run_bench("lenet5", (40, 40), repeat=1, baseline=False, breakdown=False)
    assert "skipped" in r["methods"]["timm_ttp"]


@pytest.mark.parametrize("args,message", [
    (["--size", "60by60"], "give HxW"),
    (["--max-memory", "lots"], "cannot read memory size"),
    (["--size", "20x20"], "smaller than the 28x28 window"),
])
def test_cli_errors_are_one_line(args, message):
    result = CliRunner().invoke(main, ["bench", "--model", "lenet5", "-w", "random", *args])
    assert result.exit_code != 0 and message in result.output
    assert "Traceback" not in result.output


def test_count_flops_conv_and_peak_memory():
    conv = torch.nn.Conv2d(3, 8, 3)
    assert count_flops(conv, (2, 3, 10, 10)) == 2 * (2 * 8 * 8 * 8) * 3 * 9
    # Free earlier tests' garbage first: memory released inside the block (a collection, another
    # thread's tensors) lowers the resident size under the entry level and hides the block's peak.
    release_memory()
    with PeakMemory() as mem:
        block = torch.ones(64, 2**20, dtype=torch.uint8)  # 64 MiB, touched
        del block
    assert mem.bytes >= (60 * 2**20 if mem.method == "VmHWM" else 0)


