"""Figures the notebooks share. Each helper returns a Figure that pyplot no longer tracks: a notebook
cell shows it once (as the cell's value), a script can ``fig.savefig`` it, nothing global stays open."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure


def _new_figure(size) -> tuple[Figure, object]:
    # Created through pyplot so Jupyter's inline backend is loaded (it registers how to draw a Figure),
    # then closed so the figure is not drawn a second time when the cell ends.
    fig, ax = plt.subplots(figsize=size)
    plt.close(fig)
    return fig, ax


def roofline_plot(peak_flops: float, bandwidth: float, points: Mapping[str, tuple[float, float]], *,
                  title: str = "Roofline", device_name: str = "") -> Figure:
    """Log-log roofline: attainable FLOP/s = min(peak, I * bandwidth) against intensity I (FLOP/byte).

    ``points`` maps a label to (intensity FLOP/byte, achieved FLOP/s); each is drawn as a marker.
    A point under the sloped roof is memory-bound, under the flat roof compute-bound.
    """
    ridge = peak_flops / bandwidth
    xs = [p[0] for p in points.values()] + [ridge]
    lo, hi = min(xs) / 10, max(xs) * 10
    grid = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    fig, ax = _new_figure((7, 4.5))
    ax.loglog(grid, [min(peak_flops, x * bandwidth) for x in grid], color="black", lw=2,
              label=f"roof: {peak_flops / 1e9:,.0f} GFLOP/s, {bandwidth / 1e9:,.1f} GB/s")
    ax.axvline(ridge, color="gray", ls=":", lw=1)
    ax.annotate(f"ridge {ridge:,.1f} FLOP/B", (ridge, peak_flops), textcoords="offset points",
                xytext=(5, -15), fontsize=8, color="gray")
    for label, (intensity, achieved) in points.items():
        ax.loglog([intensity], [achieved], "o", ms=9, label=f"{label}: {achieved / 1e9:,.1f} GFLOP/s")
    ax.set_xlabel("arithmetic intensity (FLOP / byte)")
    ax.set_ylabel("FLOP/s")
    ax.set_title(f"{title} ({device_name})" if device_name else title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def line_plot(series: Mapping[str, Sequence[float]], xs: Mapping[str, Sequence[float]] | None = None, *,
              xlabel: str = "", ylabel: str = "", title: str = "",
              hlines: Mapping[str, float] | None = None, floor: float | None = None,
              floor_label: str = "floor", logx: bool = False, logy: bool = False) -> Figure:
    """One line per series; ``xs`` gives each its x values (default 0, 1, 2, ...).

    ``hlines`` maps a label to a dashed horizontal line drawn in the colour of the series at the same
    position (e.g. each model's weight size next to its KV curve); ``floor`` is one black dashed line.
    """
    fig, ax = _new_figure((7, 4))
    for label, ys in series.items():
        x = list(xs[label]) if xs and label in xs else list(range(len(ys)))
        ax.plot(x, list(ys), marker=".", label=label)
    for i, (label, y) in enumerate((hlines or {}).items()):
        ax.axhline(y, color=f"C{i}", ls="--", lw=1, label=label)
    if floor is not None:
        ax.axhline(floor, color="black", ls="--", lw=1, label=floor_label)
    ax.set_xscale("log" if logx else "linear")
    ax.set_yscale("log" if logy else "linear")
    if not logy:
        ax.set_ylim(bottom=0)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def per_token_plot(series: Mapping[str, Sequence[float]], xs: Mapping[str, Sequence[float]] | None = None,
                   *, xlabel: str = "generated token index", ylabel: str = "ms per token",
                   title: str = "", floor: float | None = None, floor_label: str = "floor",
                   scale: float = 1e3, logx: bool = False, logy: bool = False) -> Figure:
    """Times in seconds, drawn times ``scale`` (ms by default). ``floor`` (seconds) draws a dashed
    lower bound, e.g. weight bytes / bandwidth for a decode step."""
    scaled = {label: [t * scale for t in ys] for label, ys in series.items()}
    return line_plot(scaled, xs, xlabel=xlabel, ylabel=ylabel, title=title,
                     floor=None if floor is None else floor * scale, floor_label=floor_label,
                     logx=logx, logy=logy)
