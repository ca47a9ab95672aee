"""Pictures of a server under load (Day 07): arrival patterns, one run's requests on a time line, and
the latency-throughput curve of a rate sweep. Each function returns a Figure that pyplot no longer
tracks. Inputs are plain data (offsets, ``loadgen.RequestRecord``-like objects, the ``rate_sweep``
dict), so this module imports nothing from the engine."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure


def _new_figure(size, ncols: int = 1, **kw):
    # Created through pyplot so Jupyter's inline backend is loaded, then closed so the figure is not
    # drawn a second time when the cell ends.
    fig, axes = plt.subplots(1, ncols, figsize=size, squeeze=False, **kw)
    plt.close(fig)
    return fig, list(axes[0])


def arrivals_plot(patterns: Mapping[str, Sequence[float]], *, title: str = "") -> Figure:
    """One row of ticks per arrival pattern (label -> arrival offsets in seconds), same time axis."""
    fig, (ax,) = _new_figure((9, 0.6 + 0.55 * len(patterns)))
    for row, (label, offs) in enumerate(patterns.items()):
        ax.eventplot([np.asarray(offs)], lineoffsets=row, linelengths=0.7, colors=f"C{row}")
    ax.set_yticks(range(len(patterns)), list(patterns))
    ax.invert_yaxis()
    ax.set_xlabel("arrival time (s)")
    ax.set_title(title, fontsize=10, loc="left")
    fig.tight_layout()
    return fig


def request_timeline_plot(runs: Mapping[str, object], *, title: str = "") -> Figure:
    """One panel per run (label -> an object with ``records`` and ``start``, like ``LoadRun``): a row
    per request, from its arrival: grey while it waits in the queue, light blue from its first step to
    its first token (prefill), then one dot per token as it came back."""
    fig, axes = _new_figure((10, 0.8 + 0.22 * max(len(r.records) for r in runs.values())), ncols=len(runs),
                            sharex=True, sharey=True)
    for ax, (label, run) in zip(axes, runs.items()):
        t0 = run.start
        for row, rec in enumerate(run.records):
            if not rec.token_times:
                continue
            sched = rec.first_scheduled if rec.first_scheduled is not None else rec.token_times[0]
            ax.plot([rec.arrival - t0, sched - t0], [row, row], color="0.6", lw=4, solid_capstyle="butt")
            ax.plot([sched - t0, rec.token_times[0] - t0], [row, row], color="tab:cyan", lw=4,
                    solid_capstyle="butt")
            ax.plot(np.asarray(rec.token_times) - t0, [row] * len(rec.token_times), ".", color="tab:blue", ms=4)
        ax.set_title(label, fontsize=9, loc="left")
        ax.set_xlabel("time since the first arrival (s)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_ylabel("request (in arrival order)")
    axes[0].invert_yaxis()
    if title:
        fig.suptitle(title + "   (grey: queue, cyan: prefill, dots: tokens)", fontsize=10)
    fig.tight_layout()
    return fig


def latency_throughput_plot(result: dict, *, knees: Mapping[str, dict] | None = None, title: str = "",
                            x: str = "offered_rate") -> Figure:
    """The latency-throughput curve of a ``rate_sweep`` result, against the offered request rate.

    Left: TTFT and TPOT, p50 (solid) and p99 (dashed), log scale, with the SLOs as dotted lines.
    Right: achieved request throughput and goodput, with the diagonal "achieved = offered". ``knees``
    (label -> a ``find_knee`` dict) draws a vertical line at each knee's rate. ``x``: "offered_rate"
    (what the run's arrivals really offered) or "rate" (the nominal rate asked for)."""
    pts = sorted(result["points"], key=lambda p: p["rate"])
    xs = np.array([p[x] if p[x] is not None else p["rate"] for p in pts])
    fig, (lat, thr) = _new_figure((11, 4), ncols=2)
    for metric, color in (("ttft", "tab:red"), ("tpot", "tab:blue")):
        for q, style in (("p50", "o-"), ("p99", "s--")):
            ys = [p[metric][q] for p in pts]
            lat.plot(xs, ys, style, color=color, alpha=1.0 if q == "p50" else 0.6, label=f"{metric.upper()} {q}")
        lat.axhline(result["slo"][f"{metric}_s"], color=color, ls=":", lw=1,
                    label=f"{metric.upper()} SLO {result['slo'][f'{metric}_s']:.3g} s")
    lat.set(yscale="log", xlabel="offered request rate (req/s)", ylabel="seconds", title="latency vs load")
    thr.plot(xs, [p["request_throughput"] for p in pts], "o-", color="k", label="achieved")
    thr.plot(xs, [p["goodput"] for p in pts], "^-", color="tab:green", label="goodput (both SLOs met)")
    top = max(xs.max(), max(p["request_throughput"] for p in pts))
    thr.plot([0, top], [0, top], color="0.7", lw=1, ls="--", label="achieved = offered")
    thr.set(xlabel="offered request rate (req/s)", ylabel="requests / s", title="throughput vs load",
            xlim=(0, top * 1.05), ylim=(0, top * 1.05))
    for k, (label, knee) in enumerate((knees or {}).items()):
        if knee.get("index") is None:
            continue
        at = xs[sorted(range(len(result["points"])), key=lambda i: result["points"][i]["rate"]).index(knee["index"])]
        for ax in (lat, thr):
            ax.axvline(at, color=f"C{k + 4}", ls="-.", lw=1.2, label=f"knee ({label}): {at:.2g} req/s")
    for ax in (lat, thr):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
