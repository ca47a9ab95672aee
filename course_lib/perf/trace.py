"""Reading a Chrome trace of engine steps (Day 08): nesting, self time, time per phase per step, GPU busy time.

``torch.profiler``'s ``export_chrome_trace`` writes a JSON object whose ``traceEvents`` hold, among
metadata, complete ("X") events: name, cat, the row they sit on (pid, tid: a host thread, or a GPU's
device and stream), start ``ts`` and duration ``dur`` in microseconds. The categories used here:

    user_annotation       a record_function range on the host (the engine's phases, our step ranges)
    gpu_user_annotation   the same range copied onto the GPU's rows: never counted as host time
    cpu_op                an ATen operator (aten::mm, ...); top-level ones are what Python dispatched
    cuda_runtime/driver   host calls into CUDA: cudaLaunchKernel, cuLaunchKernel (Triton), cudaGraphLaunch
    kernel, gpu_memcpy,   what keeps the GPU busy
    gpu_memset

Events of one row nest like calls (``nest``). Per kind of step (``summarize_steps``, means per step):

    phases      ms of each phase inside the steps and its share of the step; "other" = step time in no
                phase (the engine's glue between phases)
    ops         operator calls per step (all, and top-level) and the host time outside any operator
                (Python: scheduler, input building, glue in the model)
    device      on a GPU: busy time (union of kernel/memcpy intervals over the span of the steps),
                ``gpu_idle_share`` = 1 - busy / wall (host overhead plus launch latency), launch calls
                and kernels per step; None on a CPU, where the device is the host
    top_ops     operators by self time (time not spent in an operator they called); top kernels on a GPU

Everything is plain Python over the event dicts, so the Day 08 notebook's exercises (``self_times``,
``phase_breakdown``) can be checked against it on the same trace.
"""
from __future__ import annotations

import bisect
import json
import statistics
from collections import defaultdict
from pathlib import Path

from ..engine.profiling import PHASES

CPU_RANGE = "user_annotation"            # record_function ranges on the host's rows of a Chrome trace
CPU_OP = "cpu_op"
DEVICE_CATS = ("kernel", "gpu_memcpy", "gpu_memset")   # what keeps a GPU busy
API_CATS = ("cuda_runtime", "cuda_driver")             # host calls into CUDA (launches among them)


# ---------------------------------------------------------------------------------------------------
# Reading a Chrome trace

def load_trace(path) -> list[dict]:
    """The complete ("X") events of a Chrome trace file: name, cat, pid, tid, ts and dur (microseconds)."""
    data = json.loads(Path(path).read_text())
    events = data["traceEvents"] if isinstance(data, dict) else data
    return [e for e in events if e.get("ph") == "X" and "dur" in e]


def _end(e: dict) -> float:
    return e["ts"] + e["dur"]


def nest(events: list[dict]) -> list[int | None]:
    """The index of each event's parent (the innermost event on its thread that contains it), or None.

    On one thread the ranges of a trace nest like calls: sorted by start (the longer first at a tie), an
    event's parent is the last still-open event that started before it. An event whose start lies inside
    another's counts as its child even when rounding puts its end a nanosecond past the parent's."""
    parent: list[int | None] = [None] * len(events)
    by_thread = defaultdict(list)
    for i, e in enumerate(events):
        by_thread[e.get("pid"), e.get("tid")].append(i)
    for idx in by_thread.values():
        idx.sort(key=lambda i: (events[i]["ts"], -events[i]["dur"]))
        stack: list[int] = []
        for i in idx:
            while stack and _end(events[stack[-1]]) <= events[i]["ts"]:
                stack.pop()
            parent[i] = stack[-1] if stack else None
            stack.append(i)
    return parent


def self_times(events: list[dict]) -> dict[str, tuple[float, float]]:
    """{name: (total_us, self_us)}: total = the sum of the events' durations; self = each one's duration
    minus that of its direct children on the same thread (a grandchild is inside a child already)."""
    parent = nest(events)
    child_us = [0.0] * len(events)
    for i, p in enumerate(parent):
        if p is not None:
            child_us[p] += events[i]["dur"]
    out: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for i, e in enumerate(events):
        out[e["name"]][0] += e["dur"]
        out[e["name"]][1] += e["dur"] - child_us[i]
    return {k: (t, s) for k, (t, s) in out.items()}


def step_ranges(events: list[dict], step_name: str) -> list[dict]:
    """The host-side ranges named ``step_name``, by start time."""
    return sorted((e for e in events if e["name"] == step_name and e.get("cat") == CPU_RANGE),
                  key=lambda e: e["ts"])


class _Windows:
    """Which step range (same thread, start and end inside it) an event lies in."""

    def __init__(self, steps: list[dict]):
        self.steps, self.starts = steps, [s["ts"] for s in steps]

    def index(self, e: dict) -> int | None:
        k = bisect.bisect_right(self.starts, e["ts"]) - 1
        if k < 0:
            return None
        s = self.steps[k]
        same_thread = (s.get("pid"), s.get("tid")) == (e.get("pid"), e.get("tid"))
        return k if same_thread and _end(e) <= _end(s) + 1e-3 else None


def phase_times(events: list[dict], step_name: str, phases=PHASES) -> tuple[list[dict], dict[str, list[float]]]:
    """The steps named ``step_name`` and, per phase, its microseconds in each of them (host-side ranges
    only: a GPU trace repeats the names on the GPU's rows, category "gpu_user_annotation")."""
    steps = step_ranges(events, step_name)
    if not steps:
        raise ValueError(f"step_name {step_name!r} names no range in the trace")
    win, per = _Windows(steps), {p: [0.0] * len(steps) for p in phases}
    for e in events:
        if e.get("cat") == CPU_RANGE and e["name"] in per:
            k = win.index(e)
            if k is not None:
                per[e["name"]][k] += e["dur"]
    return steps, per


def phase_breakdown(events: list[dict], step_name: str = "decode_step", phases=PHASES) -> dict[str, float]:
    """Mean ms per step of each phase inside the steps named ``step_name``, of the step itself ("step")
    and of the step time in no phase ("other"); a phase that never ran is 0."""
    steps, per = phase_times(events, step_name, phases)
    n = len(steps)
    out = {"step": sum(s["dur"] for s in steps) / n / 1e3}
    out.update({p: sum(us) / n / 1e3 for p, us in per.items()})
    out["other"] = out["step"] - sum(out[p] for p in phases)
    return out


def busy_us(intervals: list[tuple[float, float]], lo: float, hi: float) -> float:
    """Length of the union of (start, end) intervals clipped to [lo, hi]: overlapping kernels on two
    streams keep the GPU busy once, not twice."""
    busy, reach = 0.0, lo
    for a, b in sorted(intervals):
        a, b = max(a, reach), min(b, hi)
        if b > a:
            busy += b - a
            reach = b
    return busy


# ---------------------------------------------------------------------------------------------------
# One kind of step, summarised

def summarize_steps(events: list[dict], step_name: str, tokens_per_step: int, phases=PHASES,
                    top: int = 10) -> dict:
    """Everything the report says about the steps named ``step_name`` (see the module docstring)."""
    bd = phase_breakdown(events, step_name, phases)
    steps, per_step = phase_times(events, step_name, phases)
    n, win, step_ms = len(steps), _Windows(steps), bd["step"]
    parent = nest(events)
    in_step = [win.index(e) is not None for e in events]
    ops = [i for i, e in enumerate(events) if in_step[i] and e.get("cat") == CPU_OP]
    top_level = [i for i in ops if not _inside_op(i, events, parent)]
    phase_of = {i: e["name"] for i, e in enumerate(events) if in_step[i] and e.get("cat") == CPU_RANGE
                and e["name"] in phases}
    ops_us = dict.fromkeys(phases, 0.0)
    for i in top_level:
        p = _ancestor_in(i, parent, phase_of)
        if p is not None:
            ops_us[phase_of[p]] += events[i]["dur"]
    per = lambda us: us / n / 1e3                                             # noqa: E731
    outside = step_ms - per(sum(events[i]["dur"] for i in top_level))
    out = dict(steps=n, tokens_per_step=tokens_per_step, step_ms=step_ms,
               step_ms_median=statistics.median(s["dur"] for s in steps) / 1e3,
               ms_per_token=step_ms / tokens_per_step,
               per_step_ms=dict(step=[s["dur"] / 1e3 for s in steps],
                                **{p: [us / 1e3 for us in v] for p, v in per_step.items()}),
               phases={p: dict(ms=bd[p], share=bd[p] / step_ms, ops_ms=per(ops_us[p])) for p in phases},
               other_ms=bd["other"], other_share=bd["other"] / step_ms,
               ops_per_step=len(ops) / n, top_level_ops_per_step=len(top_level) / n,
               outside_ops_ms=outside, outside_ops_share=outside / step_ms,
               top_ops=_top_ops([events[i] for i in ops], n, step_ms, top))
    out.update(_device_summary(events, steps, win, in_step, n, top))
    return out


def _inside_op(i: int, events, parent) -> bool:
    p = parent[i]
    while p is not None:
        if events[p].get("cat") == CPU_OP:
            return True
        p = parent[p]
    return False


def _ancestor_in(i: int, parent, wanted: dict) -> int | None:
    p = parent[i]
    while p is not None and p not in wanted:
        p = parent[p]
    return p


def _top_ops(ops: list[dict], n: int, step_ms: float, top: int) -> list[dict]:
    times, calls = self_times(ops), defaultdict(int)
    for e in ops:
        calls[e["name"]] += 1
    ranked = sorted(times.items(), key=lambda kv: -kv[1][1])[:top]
    return [dict(name=k, self_ms=s / n / 1e3, total_ms=t / n / 1e3, share=s / n / 1e3 / step_ms,
                 calls_per_step=calls[k] / n) for k, (t, s) in ranked]


def _device_summary(events, steps, win: _Windows, in_step, n: int, top: int) -> dict:
    """GPU figures over the span of the steps; all None when the trace has no device activity (a CPU)."""
    device = [e for e in events if e.get("cat") in DEVICE_CATS]
    if not device:
        return dict(device_ms=None, gpu_idle_share=None, launches_per_step=None, kernels_per_step=None,
                    top_kernels=[])
    lo, hi = steps[0]["ts"], _end(steps[-1])
    busy = busy_us([(e["ts"], _end(e)) for e in device], lo, hi)
    kernels = [e for e in device if e.get("cat") == "kernel" and lo <= e["ts"] < hi]
    launches = sum(1 for i, e in enumerate(events)
                   if in_step[i] and e.get("cat") in API_CATS and "Launch" in e["name"])
    by_name = defaultdict(lambda: [0.0, 0])
    for e in kernels:
        by_name[e["name"]][0] += e["dur"]
        by_name[e["name"]][1] += 1
    ranked = sorted(by_name.items(), key=lambda kv: -kv[1][0])[:top]
    return dict(device_ms=busy / n / 1e3, gpu_idle_share=1 - busy / (hi - lo),
                launches_per_step=launches / n, kernels_per_step=len(kernels) / n,
                top_kernels=[dict(name=k[:120], ms=us / n / 1e3, calls_per_step=c / n) for k, (us, c) in ranked])
