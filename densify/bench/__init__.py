"""``densify bench``: the dense net against what a user would write without it, in one process.

    result = run_bench("vgg19", size=(960, 1280), output_stride=32, baseline_windows=64)
    result["methods"]["dense"]["seconds"], result["speedup"]

Methods, timed on the same random image (median of ``repeat`` runs after one warm-up):

- ``dense``: one forward pass of the converted net over the whole image (one scale of a scan),
  optionally tiled to ``max_memory`` (:func:`densify.scan.tiling.forward_tiled`);
- ``baseline``: every window the dense map covers, cropped at the dense map's stride and
  classified by the *original* model in batches; with ``baseline_windows`` a random subset is
  timed and the time extrapolated to all windows (the report says so). Its logits are compared
  with the dense cells: equal for unpadded nets (checked: a mismatch raises), different near the
  window borders for zero-padded ones (reported);
- ``timm_ttp``: timm's test-time pooling head (``timm.layers.apply_test_time_pool``) on the same
  image, for ResNet-family models with timm installed; it computes the same dense map internally
  and pools it to one vector (compared with the dense map pooled the same way).

Figures per method: seconds, windows per second, GFLOP (2 × multiply-adds of convolutions and
matrix products, counted by ``torch.utils.flop_counter.FlopCounterMode`` on fake tensors with the
real shapes; pooling, norms and activations are left out, < 1 % for these nets), achieved GFLOP/s
and its ratio to the machine's peak measured in the same run (best of several 3 × 3, 256 → 256
convolutions on 4 × 56 × 56 maps, same dtype and layout), and peak memory: the growth of the
process's peak resident set over the method's runs (``VmHWM`` after resetting it through
``/proc/self/clear_refs``; ``ru_maxrss`` growth elsewhere, which only sees new maxima). The dense
net's time is also split into trunk and head (the converted fully connected layers) per node.

Both methods run under ``torch.inference_mode`` in ``channels_last``, bf16/fp16 under autocast,
with batch norms folded into the convolutions before them
(:func:`densify.convert.fold.fold_batchnorm`, on by default).

Measured figures (dense against crops, fc6 against the trunk, threads on a busy machine) and
the commands that measure them: the manual's *Speed and memory* page (docs/performance.md).
"""

from __future__ import annotations

from .measure import PeakMemory, conv_peak, count_flops, node_flops
from .report import format_report
from .run import BenchOptions, run_bench

__all__ = ["run_bench", "BenchOptions", "PeakMemory", "count_flops", "node_flops", "conv_peak",
           "format_report"]
