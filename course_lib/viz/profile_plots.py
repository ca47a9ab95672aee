"""Pictures of a profiled engine step (Day 08): the timeline of one step as a trace viewer draws it,
and the time per phase across batch sizes. Each function returns a Figure that pyplot no longer tracks.

Inputs are plain data: a Chrome trace's "X" events (dicts with name, cat, ts, dur, pid, tid; times in
microseconds) and the summaries ``course_lib.perf.profile`` makes of them, so this module imports
nothing from the engine.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import Patch

DEVICE_CATS = ("kernel", "gpu_memcpy", "gpu_memset")
HOST_CATS = ("cpu_op", "cuda_runtime", "cuda_driver")     # operators, and calls into CUDA made outside one


def _new_figure(size, nrows: int = 1, ncols: int = 1, **kw):
    # Created through pyplot so Jupyter's inline backend is loaded, then closed so the figure is not
    # drawn a second time when the cell ends.
    fig, axes = plt.subplots(nrows, ncols, figsize=size, squeeze=False, **kw)
    plt.close(fig)
    return fig, [ax for row in axes for ax in row]


def _ms(x: float) -> str:
    """Milliseconds for a label: 0.123, 12.3, 1,234."""
    return f"{x:.3g}" if x < 100 else f"{x:,.0f}"


OP_COLORS = ("#1b4f72", "#7d3c98", "#b9770e", "#117864", "#943126", "#5d6d7e", "#6e2c00", "#212f3d")


def _op_color(i: int):
    # dark shades, so an operator never looks like a phase (tab10's mid tones)
    return OP_COLORS[i % len(OP_COLORS)]


def _one_step(events: Sequence[dict], step_name: str, index: int) -> dict:
    steps = sorted((e for e in events if e["name"] == step_name and e.get("cat") == "user_annotation"),
                   key=lambda e: e["ts"])
    if not steps:
        raise ValueError(f"step_name {step_name!r} names no range in the trace")
    if not -len(steps) <= index < len(steps):
        raise ValueError(f"index must be in [{-len(steps)}, {len(steps)}) ({len(steps)} steps), got {index}")
    return steps[index]


def _rows(events: Sequence[dict], step: dict) -> tuple[list[dict], list[dict], list[dict]]:
    """(phase ranges, top-level host events: operators or CUDA calls, device activity) of one step."""
    t0, t1, thread = step["ts"], step["ts"] + step["dur"], (step.get("pid"), step.get("tid"))
    inside = [e for e in events if e is not step and (e.get("pid"), e.get("tid")) == thread
              and t0 <= e["ts"] and e["ts"] + e["dur"] <= t1 + 1e-3]
    phases = [e for e in inside if e.get("cat") == "user_annotation"]
    ops, reach = [], t0
    for e in sorted((e for e in inside if e.get("cat") in HOST_CATS), key=lambda e: (e["ts"], -e["dur"])):
        if e["ts"] >= reach:                 # not inside the previous top-level op: Python called it
            ops.append(e)
            reach = e["ts"] + e["dur"]
    device = [e for e in events if e.get("cat") in DEVICE_CATS and t0 <= e["ts"] < t1]
    return phases, ops, device


def step_timeline_plot(traces: Mapping[str, Sequence[dict]], step_name: str = "decode_step", index: int = 0,
                       *, top_ops: int = 5, title: str = "") -> Figure:
    """One panel per trace (e.g. ``{"batch 1": events, "batch 64": events}``): step ``index`` of the
    steps named ``step_name``, drawn as a trace viewer would, time in ms from the step's start.

    Rows, top to bottom: the step; its phase ranges; the operators Python dispatched (or CUDA calls made
    outside an operator; the ``top_ops`` costliest names in colour, the rest grey); on a GPU trace, the
    kernels and copies the GPU ran. A gap in a row is time spent in none of its events (for operators:
    Python between them; for the GPU: idle). A row with no event is left out."""
    fig, axes = _new_figure((10, 2.1 * len(traces) + 0.6), nrows=len(traces))
    phase_color, op_color = {}, {}
    for ax, (label, events) in zip(axes, traces.items()):
        step = _one_step(events, step_name, index)
        phases, ops, device = _rows(events, step)
        t0, ms = step["ts"], lambda us: us / 1e3                          # noqa: E731
        by_name = defaultdict(float)
        for e in ops:
            by_name[e["name"]] += e["dur"]
        costly = sorted(by_name, key=by_name.get, reverse=True)[:top_ops]
        rows = [("step", [step], lambda e: "0.35"),
                ("phases", phases, lambda e: phase_color.setdefault(
                    e["name"], plt.get_cmap("tab10")(len(phase_color) % 10))),
                ("host ops", ops, lambda e: op_color.setdefault(
                    e["name"], _op_color(len(op_color))) if e["name"] in costly else "0.8"),
                ("GPU", device, lambda e: "tab:green")]
        rows = [r for r in rows if r[1]]
        for y, (name, evs, color) in enumerate(reversed(rows)):
            ax.broken_barh([(ms(e["ts"] - t0), ms(e["dur"])) for e in evs], (y - 0.4, 0.8),
                           facecolors=[color(e) for e in evs], linewidth=0)
        for e in phases:                     # name the phases wide enough to hold a label
            if e["dur"] > 0.08 * step["dur"]:
                ax.text(ms(e["ts"] - t0 + e["dur"] / 2), len(rows) - 2, e["name"], ha="center",
                        va="center", fontsize=8, color="white")
        ax.set_yticks(range(len(rows)), [r[0] for r in reversed(rows)])
        ax.set_xlim(0, ms(step["dur"]) * 1.01)
        ax.set_title(f"{label}: {step_name} #{index}, {_ms(ms(step['dur']))} ms, {len(ops):,} top-level host "
                     f"events" + (f", {len(device):,} GPU activities" if device else ""), fontsize=9)
    axes[-1].set_xlabel("ms from the start of the step")
    handles = [Patch(color=c, label=n) for n, c in phase_color.items()]
    handles += [Patch(color=c, label=n) for n, c in op_color.items()]
    handles.append(Patch(color="0.8", label="other host events"))
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    legend_rows = -(-len(handles) // 5)
    fig.tight_layout(rect=(0, 0.17 * legend_rows / fig.get_figheight(), 1, 1))
    return fig


def phase_breakdown_plot(summaries: Mapping[str, dict], *, title: str = "") -> Figure:
    """Left: each run's step split into its phases' shares (plus "other"). Right: ms per step of each
    phase, one bar per run, log scale, the whiskers the fastest and slowest step.

    ``summaries``: label -> a step summary of ``course_lib.perf.profile`` (``report["decode"]``)."""
    fig, (left, right) = _new_figure((11, 0.7 * len(summaries) + 3.2), ncols=2,
                                     gridspec_kw=dict(width_ratios=(1, 1.4)))
    names = list(next(iter(summaries.values()))["phases"]) + ["other"]
    colors = {n: plt.get_cmap("tab10")(i % 10) for i, n in enumerate(names)}
    for y, (label, s) in enumerate(summaries.items()):
        shares = [s["phases"][n]["share"] for n in names[:-1]] + [max(s["other_share"], 0.0)]
        left.barh(y, shares, left=[sum(shares[:i]) for i in range(len(shares))],
                  color=[colors[n] for n in names], height=0.6)
        left.text(1.03, y, f"{_ms(s['step_ms'])} ms/step\n{_ms(s['ms_per_token'])} ms/token", va="center",
                  fontsize=8)
    left.set_yticks(range(len(summaries)), list(summaries))
    left.set_xticks([0, 0.25, 0.5, 0.75, 1])
    left.set(xlim=(0, 1.45), xlabel="share of the step")
    left.invert_yaxis()
    width = 0.8 / len(summaries)
    for k, (label, s) in enumerate(summaries.items()):
        per = s["per_step_ms"]
        mids = [s["phases"][n]["ms"] for n in names[:-1]]
        lows = [m - min(per[n]) for m, n in zip(mids, names[:-1])]
        highs = [max(per[n]) - m for m, n in zip(mids, names[:-1])]
        xs = [i + (k - (len(summaries) - 1) / 2) * width for i in range(len(mids))]
        right.bar(xs, [max(m, 1e-4) for m in mids], width, label=label, yerr=[lows, highs], capsize=2,
                  color=plt.get_cmap("Set2")(k % 8))
    right.set_xticks(range(len(names) - 1), names[:-1], rotation=30, ha="right")
    right.set(yscale="log", ylabel="ms per step (whiskers: min, max)")
    right.legend(fontsize=8)
    right.grid(True, axis="y", which="both", alpha=0.3)
    fig.legend(handles=[Patch(color=colors[n], label=n) for n in names], loc="lower left", ncol=4, fontsize=7,
               frameon=False)
    fig.suptitle(title or "where a step's time goes", fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig
