"""Wall-clock timers that give the right answer on a GPU.

CUDA kernels are launched asynchronously: ``model(x)`` returns as soon as the work is queued, so
``time.perf_counter()`` around it measures the launch, not the math. Every timer here synchronizes the
device before reading the clock. Report medians: one slow repeat (a page fault, another process, the
first call compiling or allocating) must not move the number.

The second half times GPU kernels from CUDA graphs (no host in the way): every kernel sweep uses them.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def sync(device=None) -> None:
    """Wait for queued GPU work (a no-op on the CPU, where every op is already finished on return)."""
    if device is None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
    elif torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class Timer:
    """``with Timer(device) as t: work()`` then ``t.elapsed`` in seconds (device synchronized at both ends)."""

    def __init__(self, device=None):
        self.device = device
        self.elapsed = float("nan")

    def __enter__(self) -> "Timer":
        sync(self.device)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        sync(self.device)
        self.elapsed = time.perf_counter() - self._t0


def time_calls(fn: Callable[[], object], *, repeats: int = 5, warmup: int = 1, device=None) -> list[float]:
    """Seconds taken by each of ``repeats`` calls of ``fn``, after ``warmup`` untimed calls."""
    if repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1, got {repeats!r}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        with Timer(device) as t:
            fn()
        times.append(t.elapsed)
    return times


def median_time(fn: Callable[[], object], *, repeats: int = 5, warmup: int = 1, device=None) -> float:
    """Median seconds per call of ``fn`` over ``repeats`` timed calls (robust to a few slow outliers)."""
    return statistics.median(time_calls(fn, repeats=repeats, warmup=warmup, device=device))


# ---- GPU kernels: CUDA-graph timings (the kernel sweeps of Days 9-11 and 14) ----------------------
# Two ways to time a kernel without the host in the way, for two questions:
#   lone_call_ms     one call per replay, L2 flushed before it: the kernel alone, reading HBM
#   back_to_back_ms  many calls in one graph, amortized: what the kernel costs inside a step, where
#                    the launch latency of one kernel hides behind the previous one
FLUSH_BYTES = 256 << 20                             # larger than any L2 (50 MB on an H100)
_flush = None


def capture_graph(fn) -> "torch.cuda.CUDAGraph":
    """``fn`` run once on a side stream (warm-up: compile, pick kernels, size allocations), then
    captured in a CUDA graph, ready to replay."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph


def lone_call_ms(fn, reps: int = 30) -> float:
    """Median ms of ``fn`` captured once in a CUDA graph and replayed, L2 flushed before each replay:
    device time of the kernels alone, with data coming from HBM rather than a warm L2."""
    global _flush
    if _flush is None:
        _flush = torch.empty(FLUSH_BYTES // 4, device="cuda", dtype=torch.int32)
    graph = capture_graph(fn)
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(reps)]
    for start, end in events:
        _flush.zero_()
        start.record()
        graph.replay()
        end.record()
    torch.cuda.synchronize()
    del graph
    return statistics.median(s.elapsed_time(e) for s, e in events)


def back_to_back_ms(calls, reps: int = 20, rounds: int = 5) -> float:
    """Median over ``rounds`` of (time of ``reps`` replays of one graph holding every call) / calls.
    Give distinct inputs (copies of the weights) to keep them out of L2, or one call repeated to
    time it warm."""
    def all_calls():
        for c in calls:
            c()
    graph = capture_graph(all_calls)
    start, end, times = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True), []
    for _ in range(rounds):
        start.record()
        for _ in range(reps):
            graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / reps / len(calls))
    del graph
    return statistics.median(times)


def time_ms(fn, graph: str = "lone") -> dict:
    """``ms_eager`` (triton's do_bench median: host, Python and launches included) and ``ms_graph``
    (``graph`` "lone": lone_call_ms; "back-to-back": 16 calls of fn in one graph). ``ms`` is the graph
    time, or the eager one when capture fails (``timing`` says which)."""
    from triton.testing import do_bench
    if graph not in ("lone", "back-to-back"):
        raise ValueError(f"graph must be 'lone' or 'back-to-back', got {graph!r}")
    out = dict(ms_eager=do_bench(fn, return_mode="median"), ms_graph=None)
    try:
        out["ms_graph"] = lone_call_ms(fn) if graph == "lone" else back_to_back_ms([fn] * 16)
        out.update(ms=out["ms_graph"], timing="cuda graph, L2 flushed" if graph == "lone"
                   else "cuda graph, 16 calls back to back")
    except Exception as e:                          # noqa: BLE001 - keep the eager number
        out.update(ms=out["ms_eager"], timing=f"eager (graph failed: {type(e).__name__})")
    return out
