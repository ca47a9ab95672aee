"""Named ranges around the phases of an engine step (Day 08), for torch.profiler traces and Nsight.

    with phase("schedule"):
        sched = scheduler.schedule(now)

Off by default, and then ``phase`` returns one shared do-nothing context manager: a step pays a global
read and a function call per phase, nothing is recorded. ``enable()`` (``course_lib.perf.profile``
calls it) makes each range a ``torch.profiler.record_function`` (it shows in a torch.profiler trace,
CPU side) and, on CUDA, an NVTX range too (Nsight Systems' timeline).

The phases of one ``LLMEngine.step``, in order (the names a trace shows):

    schedule         the scheduler's decision: who runs, how many tokens each, blocks
    prepare_inputs   a SchedulerOutput to flat token/position/slot/table lists (host work)
    forward          the model over the packed tokens (launches GPU kernels, or computes on a CPU)
    sample           logits to token ids on the device
    readback         wait for the sampled ids (the step's one host sync)
    update           append tokens, check stops, free finished sequences' blocks
    outputs          RequestOutputs, incremental detokenization
"""
from __future__ import annotations

import contextlib

import torch

PHASES = ("schedule", "prepare_inputs", "forward", "sample", "readback", "update", "outputs")

_enabled = False
_nvtx = False                   # NVTX ranges too (CUDA present), decided once in enable()
_OFF = contextlib.nullcontext()


def enable(on: bool = True) -> None:
    """Switch the ranges on (or off) for every engine in this process."""
    global _enabled, _nvtx
    _enabled = bool(on)
    _nvtx = _enabled and torch.cuda.is_available()


def enabled() -> bool:
    return _enabled


def phase(name: str):
    """A context manager marking one phase; the shared no-op one while profiling is off."""
    return _Range(name) if _enabled else _OFF


class _Range:
    __slots__ = ("name", "record", "nvtx")

    def __init__(self, name: str):
        self.name = name
        self.record = torch.profiler.record_function(name)
        self.nvtx = _nvtx

    def __enter__(self):
        if self.nvtx:
            torch.cuda.nvtx.range_push(self.name)
        self.record.__enter__()
        return self

    def __exit__(self, *exc):
        self.record.__exit__(*exc)
        if self.nvtx:
            torch.cuda.nvtx.range_pop()
        return False
