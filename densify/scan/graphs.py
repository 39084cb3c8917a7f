"""The dense pass replayed as CUDA graphs for the input shapes that repeat.

Why: eager PyTorch launches a dense net's kernels one by one from Python. A dense ResNet-50
launches about 160 per pass, and on an H200 the host needs about 4.5 ms to do so whatever the
input's size, so the small levels of a pyramid wait on the host, not the GPU (measured with
``scripts/gpu_bench.py --parts graphs``: 4.7 ms eager against 0.9 ms replayed at 224 x 416;
3.6 against 4.1 ms at 1088 x 1920; the manual's speed page has the table). A graph captured once
for an input shape replays the whole pass with one launch.

Policy (:class:`GraphCache`): a shape is captured the second time it is seen: a folder of photos
of one size repeats its pyramid's shapes for every image, while a one-off shape is not worth a
capture (three warm-up passes, which also let cuDNN's autotuning pick its kernels; a capture
also waits for the device and empties torch's memory caches). At most ``capacity`` graphs are
kept, the least recently used dropped first, and a dropped shape is not captured again but runs
eagerly (logged once): with more shapes than the cache holds (a folder of many image sizes or
batch sizes), recapturing would cost a capture per pass. They share one memory pool, since they
replay one after another on one stream. A shape whose capture fails runs eagerly from then on
(logged once; at warning level when the device ran out of memory), and the thread is put back
on the stream it was on. The replayed output is copied out of the graph's static buffer, so a
result never changes under the caller.

Shape:
    any input the net takes; the key is ``(shape, stride, dtype, device)``.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["GraphCache", "capture"]

log = logging.getLogger(__name__)

#: Warm-up passes before a capture (cuDNN's autotuning and lazy initialisation happen there).
WARMUP = 3


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    static_in: torch.Tensor
    static_out: torch.Tensor

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.static_in.copy_(x)
        self.graph.replay()
        return self.static_out.clone()


def capture(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, pool=None
            ) -> Callable[[torch.Tensor], torch.Tensor]:
    """``fn`` on inputs shaped like ``x`` as a replayable CUDA graph (warmed up on a side
    stream, then captured into ``pool``); the callable copies its input into the graph's and
    returns a copy of the output."""
    static_in = x.clone()
    caller = torch.cuda.current_stream(x.device)
    stream = torch.cuda.Stream(device=x.device)
    stream.wait_stream(caller)
    with torch.cuda.stream(stream):
        for _ in range(WARMUP):
            fn(static_in)
    caller.wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    try:  # other threads' CUDA calls (the command line's readers, writers) may go on meanwhile
        with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
            static_out = fn(static_in)
    finally:  # a failed capture leaves the thread on the capture stream
        torch.cuda.set_stream(caller)
    return _Graph(graph, static_in, static_out)


class GraphCache:
    """``fn(x)`` run eagerly the first time a shape is seen, then from a captured graph (module
    docstring).

    Args:
        fn: the pass to capture (a module or function of one tensor, returning one tensor).
        capacity: graphs kept at most. min_uses: calls of a shape before it is captured.
        capture_fn: how a graph is made (:func:`capture`; tests pass a stand-in).
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], capacity: int = 32,
                 min_uses: int = 2, capture_fn=capture):
        self.fn, self.capacity, self.min_uses = fn, int(capacity), int(min_uses)
        self._capture = capture_fn
        self.graphs: OrderedDict[tuple, Callable] = OrderedDict()
        self.seen: Counter[tuple] = Counter()
        self.failed: set[tuple] = set()
        self.dropped: set[tuple] = set()
        self._pool = None

    @staticmethod
    def key(x: torch.Tensor) -> tuple:
        return tuple(x.shape), x.stride(), x.dtype, str(x.device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        key = self.key(x)
        graph = self.graphs.get(key)
        if graph is not None:
            self.graphs.move_to_end(key)
            return graph(x)
        self.seen[key] += 1
        if key in self.failed or key in self.dropped or self.seen[key] < self.min_uses:
            return self.fn(x)
        try:
            if self._pool is None and x.is_cuda:
                self._pool = torch.cuda.graph_pool_handle()
            graph = self._capture(self.fn, x, self._pool)
        except RuntimeError as exc:  # an op that cannot be captured: stay eager for this shape
            self.failed.add(key)
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if isinstance(exc, torch.OutOfMemoryError):
                log.warning("no CUDA graph for input %s: out of device memory (%s); it runs "
                            "eagerly (a smaller batch size leaves room)", tuple(x.shape), why)
            else:
                log.info("CUDA graph capture failed for input %s (%s); running it eagerly",
                         tuple(x.shape), why)
            return self.fn(x)
        self.graphs[key] = graph
        while len(self.graphs) > self.capacity:
            old, _ = self.graphs.popitem(last=False)
            if not self.dropped:
                log.info("more input shapes than the %d CUDA graphs kept; shapes dropped from "
                         "them run eagerly", self.capacity)
            self.dropped.add(old)
        return graph(x)
