"""Pictures for Day 06 (sampling): what a filter does to one next-token distribution, and what a
sampler step costs against the batch size. Each function returns a Figure that pyplot no longer
tracks. Inputs are plain numbers (probability vectors as lists or tensors, row dicts), so this
module imports nothing from the engine."""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure


def _new_figure(size, ncols: int = 1, **kw):
    # Created through pyplot so Jupyter's inline backend is loaded, then closed so the figure is not
    # drawn a second time when the cell ends.
    fig, axes = plt.subplots(1, ncols, figsize=size, squeeze=False, **kw)
    plt.close(fig)
    return fig, list(axes[0])


def _numbers(x) -> np.ndarray:
    """A tensor on any device, or a list, as a float64 numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu()
    return np.asarray(x, dtype=np.float64)


def filter_bars_plot(before, after: Mapping[str, object], label_of: Callable[[int], str], *, top: int = 12,
                     title: str = "") -> Figure:
    """One panel per filter (name -> probabilities over the whole vocabulary): the ``top`` most likely
    tokens of ``before`` as grey bars, the same tokens after the filter in colour, labelled by
    ``label_of(token id)``. Each panel's title says how many tokens of the vocabulary the filter keeps."""
    before = _numbers(before)
    order = np.argsort(-before)[:top]                    # the same tokens, in the same place, in every panel
    names = [repr(label_of(int(i))) for i in order]       # repr shows leading spaces and newlines
    fig, axes = _new_figure((3.1 * len(after), 3.6), ncols=len(after), sharey=True)
    x = np.arange(len(order))
    for k, (ax, (name, probs)) in enumerate(zip(axes, after.items())):
        probs = _numbers(probs)
        ax.bar(x - 0.2, before[order], width=0.4, color="0.75", label="T = 1, no filter")
        ax.bar(x + 0.2, probs[order], width=0.4, color=f"C{k}", label="after")
        ax.set_xticks(x, names, rotation=90, fontsize=8)
        ax.set_title(f"{name}\nkeeps {int((probs > 0).sum()):,} tokens", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("probability")
    axes[0].legend(fontsize=7, loc="upper right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def sampler_cost_plot(rows: Sequence[dict], *, title: str = "") -> Figure:
    """Left: ms per sampling step against the batch (log-log), one line per ``impl`` through the median
    (``ms``) with a band from ``ms_min`` to ``ms_max``. Right: torch operator calls per step (``ops``),
    the deterministic count behind the times (on a GPU, each is a kernel launch)."""
    fig, (ax, ax_ops) = _new_figure((10, 4), ncols=2)
    for k, impl in enumerate(dict.fromkeys(r["impl"] for r in rows)):
        mine = sorted((r for r in rows if r["impl"] == impl), key=lambda r: r["batch"])
        b = [r["batch"] for r in mine]
        ax.plot(b, [r["ms"] for r in mine], "o-", color=f"C{k}", label=impl)
        ax.fill_between(b, [r["ms_min"] for r in mine], [r["ms_max"] for r in mine], color=f"C{k}", alpha=0.2)
        ax_ops.plot(b, [r["ops"] for r in mine], "o-", color=f"C{k}", label=impl)
    batches = sorted({r["batch"] for r in rows})
    for a, ylabel in [(ax, "ms per step (median, band: min-max)"), (ax_ops, "torch operator calls per step")]:
        a.set(xscale="log", yscale="log", xlabel="batch (rows sampled per step)", ylabel=ylabel)
        a.set_xticks(batches, [str(b) for b in batches])
        a.minorticks_off()
        a.grid(True, which="both", alpha=0.3)
        a.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
