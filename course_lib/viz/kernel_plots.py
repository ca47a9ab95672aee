"""Pictures for the kernel days (10, 11, 14): attention time and memory against sequence length,
decode bandwidth against context and batch, the Flash-Decoding split, and step time with and without
CUDA graphs. Each function returns a Figure that pyplot no longer tracks.

Inputs are the plain row dicts that ``bench kernels`` and ``bench graphs`` (perf/benchmarks/) write
to JSON, so a recorded file and a live run draw the same way; rows with an ``error`` or ``skipped``
key are left out.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, Rectangle

IMPL_STYLE = {"triton": dict(color="tab:blue", ls="-"), "torch": dict(color="tab:red", ls="--"),
              "sdpa_flash": dict(color="tab:green", ls="-"), "naive": dict(color="tab:red", ls="--")}


def _new_figure(size, ncols: int = 1):
    # Created through pyplot so Jupyter's inline backend is loaded, then closed so the figure is not
    # drawn a second time when the cell ends.
    fig, axes = plt.subplots(1, ncols, figsize=size, squeeze=False)
    plt.close(fig)
    return fig, list(axes[0])


def _ok(rows) -> list[dict]:
    return [r for r in rows if "error" not in r and "skipped" not in r]


def _log_ticks(ax, xs) -> None:
    """Log x axis labelled at the measured points only (powers of two read better than 10^k)."""
    xs = sorted(set(xs))
    ax.set_xscale("log")
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.minorticks_off()


def prefill_plot(rows: Sequence[dict], *, title: str = "") -> Figure:
    """Two panels against sequence length (single-sequence rows): time (ms) and peak extra memory (MB)."""
    fig, (ax_t, ax_m) = _new_figure((11, 4), ncols=2)
    rows = [r for r in _ok(rows) if r.get("case") == "single"]
    for impl in dict.fromkeys(r["impl"] for r in rows):
        mine = sorted((r for r in rows if r["impl"] == impl), key=lambda r: r["tokens"])
        T = [r["tokens"] for r in mine]
        ax_t.plot(T, [r["ms"] for r in mine], marker="o", label=impl, **IMPL_STYLE.get(impl, {}))
        ax_m.plot(T, [r["peak_extra_bytes"] / 2**20 for r in mine], marker="o", label=impl,
                  **IMPL_STYLE.get(impl, {}))
    for ax, ylabel in ((ax_t, "ms per call"), (ax_m, "peak memory above the inputs (MiB)")):
        ax.set(yscale="log", xlabel="sequence length T (tokens)", ylabel=ylabel)
        _log_ticks(ax, [r["tokens"] for r in rows])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    ax_t.set_title("time: all O(T^2) FLOPs")
    ax_m.set_title("memory: naive O(T^2), tiled O(T)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def decode_bandwidth_plot(rows: Sequence[dict], *, title: str = "") -> Figure:
    """Fraction of copy bandwidth against context, one colour per batch: Triton solid, torch dashed."""
    fig, (ax,) = _new_figure((8, 4.5))
    rows = _ok(rows)
    batches = sorted({r["batch"] for r in rows})
    for i, b in enumerate(batches):
        for impl, ls, marker in (("triton", "-", "o"), ("torch", "--", "x")):
            mine = sorted((r for r in rows if r["batch"] == b and r["impl"] == impl),
                          key=lambda r: r["context"])
            if mine:
                ax.plot([r["context"] for r in mine], [r["frac_of_copy"] for r in mine], ls=ls, marker=marker,
                        color=f"C{i}", label=f"batch {b} ({impl})")
    ax.axhline(1.0, color="black", lw=1, ls=":")
    ax.set(xlabel="context length (tokens)", ylabel="fraction of copy bandwidth",
           title=title or "decode attention: achieved / copy bandwidth", ylim=(0, None))
    _log_ticks(ax, [r["context"] for r in rows])
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def split_kv_plot(rows: Sequence[dict], *, title: str = "") -> Figure:
    """Paired bars per (batch, context): GB/s with the split heuristic and with one split."""
    fig, (ax,) = _new_figure((8, 3.8))
    rows = _ok(rows)
    points = list(dict.fromkeys((r["batch"], r["context"]) for r in rows))
    for j, (asked, color) in enumerate((("auto", "tab:blue"), (1, "tab:gray"))):
        vals = [next((r["gb_per_s"] for r in rows if (r["batch"], r["context"]) == p
                      and r.get("splits_asked") == asked), 0) for p in points]
        ax.bar([i + 0.4 * j for i in range(len(points))], vals, width=0.4, color=color,
               label="split-KV (heuristic)" if asked == "auto" else "one split (no Flash-Decoding)")
    ax.set_xticks([i + 0.2 for i in range(len(points))], [f"B={b}\nL={c}" for b, c in points], fontsize=8)
    ax.set(ylabel="GB/s", title=title or "Flash-Decoding: splitting the context")
    ax.set_ylim(0, 1.25 * max([r["gb_per_s"] for r in rows], default=1))   # room for the legend
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=2, loc="upper center")
    fig.tight_layout()
    return fig


def flash_decoding_diagram(heads: int = 8, kv_heads: int = 2, context: int = 4096,
                           num_splits: int = 4) -> Figure:
    """Left: GQA packing, the query heads of one KV head are the rows of one program's tile. Right:
    split-KV, each program streams one chunk of the context, a reduction merges their partial results."""
    fig, (ax_g, ax_s) = _new_figure((11, 3.6), ncols=2)
    group = heads // kv_heads
    for h in range(heads):
        kvh = h // group
        ax_g.add_patch(Rectangle((0, heads - 1 - h), 1.5, 0.8, color=f"C{kvh}", alpha=0.5))
        ax_g.text(0.75, heads - 0.6 - h, f"q head {h}", ha="center", va="center", fontsize=7)
    for kvh in range(kv_heads):
        y = heads - group * (kvh + 1)
        ax_g.add_patch(Rectangle((3.2, y), 1.5, group - 0.2, color=f"C{kvh}", alpha=0.8))
        ax_g.text(3.95, y + group / 2 - 0.1, f"program {kvh}\nKV head {kvh}\n{group} rows", ha="center",
                  va="center", fontsize=7)
        ax_g.add_patch(FancyArrowPatch((1.6, y + group / 2 - 0.1), (3.1, y + group / 2 - 0.1),
                                       arrowstyle="->", mutation_scale=10))
    ax_g.set(xlim=(-0.2, 5), ylim=(-0.5, heads + 0.3),
             title=f"GQA packing: {heads} q heads, {kv_heads} KV heads")
    chunk = context / num_splits
    for s in range(num_splits):
        ax_s.add_patch(Rectangle((s * chunk, 2), chunk * 0.97, 0.8, color=f"C{s + 2}", alpha=0.6))
        ax_s.text((s + 0.5) * chunk, 2.4, f"split {s}\nkeys {int(s * chunk)}..{int((s + 1) * chunk) - 1}",
                  ha="center", va="center", fontsize=7)
        ax_s.add_patch(FancyArrowPatch(((s + 0.5) * chunk, 1.95), (context / 2, 0.85), arrowstyle="->",
                                       mutation_scale=10, color=f"C{s + 2}"))
    ax_s.add_patch(Rectangle((context * 0.3, 0.1), context * 0.4, 0.7, color="lightgray"))
    ax_s.text(context / 2, 0.45, "reduce: out = sum_s w_s o_s / sum_s w_s,  w_s = exp(lse_s - max lse)",
              ha="center", va="center", fontsize=7)
    ax_s.set(xlim=(0, context), ylim=(0, 3), title=f"split-KV: {num_splits} programs per (sequence, KV head)",
             xlabel="key position")
    for ax in (ax_g, ax_s):
        ax.set_yticks([])
    ax_g.set_xticks([])
    fig.tight_layout()
    return fig


MODE_STYLE = {"eager": dict(color="tab:red", ls="-", label="engine step, eager (no graphs)"),
              "graphs-sync": dict(color="tab:blue", ls="--",
                                  label="engine step, graphs, synchronous scheduling"),
              "graphs": dict(color="tab:blue", ls="-", label="engine step, graphs (engine default)")}


def graphs_step_plot(points: Sequence[dict], *, title: str = "") -> Figure:
    """Decode step time against batch, one line per mode (eager, graphs, ...), with the bytes floors
    (weights; weights + KV). Rows without a ``mode`` are named by their ``cuda_graphs`` flag."""
    fig, (ax,) = _new_figure((8, 4.5))
    points = [dict(p, mode=p.get("mode") or ("graphs" if p["cuda_graphs"] else "eager")) for p in _ok(points)]
    for mode in sorted({p["mode"] for p in points}, key=list(MODE_STYLE).index):
        mine = sorted((p for p in points if p["mode"] == mode), key=lambda p: p["batch"])
        ax.plot([p["batch"] for p in mine], [p["step_ms"] for p in mine], marker="o", **MODE_STYLE[mode])
    floor = sorted({p["batch"]: p for p in points}.values(), key=lambda p: p["batch"])
    ax.plot([p["batch"] for p in floor], [p["weight_floor_ms"] for p in floor], color="black", ls="--", lw=1,
            label="floor: weight bytes / copy bandwidth")
    ax.plot([p["batch"] for p in floor], [p["floor_ms"] for p in floor], color="gray", ls=":", lw=1,
            label="floor: weights + KV read")
    ax.set(yscale="log", xlabel="batch (sequences decoding)", ylabel="ms per decode step",
           title=title or "decode step time")
    _log_ticks(ax, [p["batch"] for p in points])
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
