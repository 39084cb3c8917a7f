"""The bench's record as text (:func:`format_report`)."""

from __future__ import annotations

from ..scan.tiling import format_bytes

__all__ = ["format_report"]


def format_report(r: dict) -> str:
    """The bench result as a short text table."""
    lines = [f"{r['model']} on {r['size'][0]}x{r['size'][1]}, window {r['window'][0]}, stride "
             f"{r['output_stride']}, {r.get('head_path', 'fast')} head: {r['windows']} windows; "
             f"{r['precision']}, channels_last="
             f"{r['channels_last']}, {r['threads']} threads, {r['cpu_capability']}, "
             f"{r['allocator']} malloc",
             f"peak 3x3 conv: {r['peak_gflops_per_s']:.0f} GFLOP/s; load average "
             f"{r['load_average']['start'][0]:.2f} -> {r['load_average']['end'][0]:.2f}",
             f"{'method':10s} {'seconds':>9s} {'windows/s':>10s} {'GFLOP':>9s} {'GFLOP/s':>8s} "
             f"{'of peak':>7s} {'peak mem':>10s}"]
    for name, m in r["methods"].items():
        if "skipped" in m:
            lines.append(f"{name:10s} skipped: {m['skipped']}")
            continue
        lines.append(f"{name:10s} {m['seconds']:9.3f} {m['windows_per_s']:10.1f} "
                     f"{m['gflop']:9.1f} {m['gflops_per_s']:8.1f} {m['peak_fraction']:7.0%} "
                     f"{format_bytes(m['peak_memory_bytes']):>10s}")
    lines += _notes(r)
    return "\n".join(lines)


def _notes(r: dict) -> list[str]:
    m, notes = r["methods"], []
    if m["dense"]["tiles"] > 1:
        notes.append(f"dense: {m['dense']['tiles']} tiles, largest input "
                     f"{m['dense']['largest_input'][0]}x{m['dense']['largest_input'][1]}")
    d = m["dense"]
    notes.append(f"dense CPU time per pass: user {d['user_seconds']:.2f} s, sys "
                 f"{d['sys_seconds']:.2f} s (sys: page faults and zeroing of new activations)")
    mm = r["memory_model"]
    notes.append(f"memory model: estimated {format_bytes(mm['estimate_bytes'])}, measured "
                 f"{format_bytes(mm['measured_bytes'])} ({mm['measured_over_estimate']:.2f}x)")
    if "baseline" in m:
        b = m["baseline"]
        if b["extrapolated"]:
            notes.append(f"baseline: timed {b['measured_windows']} random windows of "
                         f"{r['windows']}, extrapolated")
        a = b["agreement"]
        notes.append(f"speed-up dense vs baseline: {r['speedup']:.1f}x (FLOP ratio "
                     f"{r['flop_ratio']:.1f}x); crops vs dense max rel diff {a['max_rel']:.1e} "
                     f"({a['note']})")
    if "timm_ttp" in m and "max_rel_vs_dense" in m["timm_ttp"]:
        notes.append(f"timm_ttp vs pooled dense map: max rel diff "
                     f"{m['timm_ttp']['max_rel_vs_dense']:.1e}")
    if "breakdown" in r:
        b = r["breakdown"]
        parts = [f"{k} {v['seconds']:.3f} s at {v['gflops_per_s']:.0f} GFLOP/s"
                 for k, v in b.items() if k != "head_top_layer"]
        if "head_top_layer" in b:
            t = b["head_top_layer"]
            parts.append(f"largest head layer {t['node']} {t['seconds']:.3f} s at "
                         f"{t['gflops_per_s']:.0f} GFLOP/s")
        total = sum(v["seconds"] for k, v in b.items() if k != "head_top_layer")
        parts.append(f"node sum {total:.3f} s = {total / m['dense']['seconds']:.0%} of the dense "
                     "median")
        notes.append("breakdown (one pass, node by node): " + "; ".join(parts))
    return notes
