"""Wall-clock timers that give the right answer on a GPU.

CUDA kernels are launched asynchronously: ``model(x)`` returns as soon as the work is queued, so
``time.perf_counter()`` around it measures the launch, not the math. Every timer here synchronizes the
device before reading the clock. Report medians: one slow repeat (a page fault, another process, the
first call compiling or allocating) must not move the number.
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
