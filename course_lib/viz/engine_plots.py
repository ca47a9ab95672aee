"""Pictures of the engine at work (Days 4-5): who sits in which batch slot over time, and where each
sequence's KV lives in the paged pool. Each function returns a Figure that pyplot no longer tracks.

Inputs are plain data the engine already exposes (``LLMEngine.step_log``, block tables, lengths), so
this module imports nothing from the engine.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle


def _new_figure(size, nrows: int = 1, **kw):
    # Created through pyplot so Jupyter's inline backend is loaded (it registers how to draw a Figure),
    # then closed so the figure is not drawn a second time when the cell ends.
    fig, axes = plt.subplots(nrows, 1, figsize=size, squeeze=False, **kw)
    plt.close(fig)
    return fig, list(axes[:, 0])


def _color(i: int):
    return plt.get_cmap("tab20")(i % 20)


def slot_intervals(step_log: Sequence) -> list[tuple[int, int, float, float]]:
    """(slot, seq_id, start, end) for every stay of a sequence in the running batch.

    The engine has no slot numbers: a step lists the sequences it ran. A stay is a run of consecutive
    steps that include the sequence (a preempted sequence misses steps, then comes back in a new
    stay). Each stay takes the lowest slot free when it begins, so the number of slots in use never
    exceeds ``max_num_seqs``.
    """
    stays: dict[int, list[list[int]]] = {}           # seq_id -> [[first step, last step], ...]
    for i, rec in enumerate(step_log):
        for s in rec.seq_ids:
            if s in stays and stays[s][-1][1] == i - 1:
                stays[s][-1][1] = i
            else:
                stays.setdefault(s, []).append([i, i])
    order = sorted((a, b, s) for s, spans in stays.items() for a, b in spans)
    slot_free_after: list[int] = []                  # slot -> index of the last step of its occupant
    out = []
    for first, last, s in order:
        slot = next((k for k, end in enumerate(slot_free_after) if end < first), len(slot_free_after))
        if slot == len(slot_free_after):
            slot_free_after.append(last)
        slot_free_after[slot] = last
        out.append((slot, s, step_log[first].start, step_log[last].end))
    return out


def slot_timeline_plot(logs: Mapping[str, Sequence], *, title: str = "") -> Figure:
    """One panel per step log (e.g. ``{"static": ..., "continuous": ...}``), same time axis.

    Each bar is one sequence in one batch slot, labelled by its admission order; white space is an
    idle slot. Grey bands are steps that ran a prompt (a static batch's prefill; in continuous
    batching the running sequences decode in the same step).
    """
    fig, axes = _new_figure((9, 1.6 + 1.4 * len(logs)), nrows=len(logs), sharex=True)
    for ax, (name, log) in zip(axes, logs.items()):
        t0 = log[0].start
        spans = slot_intervals(log)
        rank = {s: i for i, s in enumerate(sorted({s for _, s, _, _ in spans}))}
        for rec in log:
            if rec.is_prefill:
                ax.axvspan(rec.start - t0, rec.end - t0, color="0.88", lw=0)
        for slot, s, a, b in spans:
            ax.barh(slot, b - a, left=a - t0, height=0.8, color=_color(rank[s]), edgecolor="white")
            ax.text(a - t0 + 0.01 * (log[-1].end - t0), slot, str(rank[s]), va="center", fontsize=7)
        decode = [len(r.seq_ids) for r in log if not r.is_prefill]
        ax.set_ylabel("batch slot")
        ax.set_yticks(range(max(slot for slot, *_ in spans) + 1))
        ax.invert_yaxis()
        ax.set_title(f"{name}: {len(log)} steps, {log[-1].end - t0:.1f} s, "
                     f"{sum(decode) / max(1, len(decode)):.1f} sequences per decode step on average",
                     fontsize=9, loc="left")
    axes[-1].set_xlabel("time since the first step (s)   (grey: steps that ran a prompt)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def block_table_plot(tables: Mapping[str, Sequence[int]], lengths: Mapping[str, int], num_blocks: int,
                     block_size: int, *, title: str = "") -> Figure:
    """Top: each sequence's block table (logical block i -> physical block id). Bottom: the physical
    pool, each block coloured by its owner. The filled part of a block holds tokens; the hatched part
    is reserved but empty (at most ``block_size - 1`` slots per sequence); white blocks are free.
    """
    fig, (top, bottom) = _new_figure((9, 1.4 + 0.45 * len(tables) + 1.6), nrows=2,
                                     gridspec_kw=dict(height_ratios=[max(1, len(tables)), 2]))
    owner = {}
    for row, (name, table) in enumerate(tables.items()):
        for i, block in enumerate(table):
            filled = min(block_size, max(0, lengths[name] - i * block_size)) / block_size
            owner[block] = (row, filled)
            for ax, x, y in ((top, i, row), (bottom, block % 16, block // 16)):
                ax.add_patch(Rectangle((x, y), filled, 0.8, color=_color(row)))
                ax.add_patch(Rectangle((x + filled, y), 1 - filled, 0.8, fill=False, hatch="///",
                                       edgecolor=_color(row), lw=0))
                ax.add_patch(Rectangle((x, y), 1, 0.8, fill=False, edgecolor="black", lw=0.8))
                ax.text(x + 0.5, y + 0.4, str(block), ha="center", va="center", fontsize=8)
    for block in set(range(num_blocks)) - set(owner):
        x, y = block % 16, block // 16
        bottom.add_patch(Rectangle((x, y), 1, 0.8, fill=False, edgecolor="0.6", lw=0.8))
        bottom.text(x + 0.5, y + 0.4, str(block), ha="center", va="center", fontsize=8, color="0.6")
    width = max([16] + [len(t) for t in tables.values()])
    top.set(xlim=(0, width), ylim=(len(tables), 0), xlabel="logical block (positions i*block_size ...)",
            yticks=[r + 0.4 for r in range(len(tables))],
            yticklabels=[f"{n} ({lengths[n]} tok)" for n in tables])
    top.set_title("block tables: the number in a box is the physical block id", fontsize=9, loc="left")
    bottom.set(xlim=(0, 16), ylim=(-(-num_blocks // 16), 0), xticks=[], yticks=[])
    bottom.set_title(f"physical pool: {num_blocks} blocks of {block_size} slots "
                     f"({num_blocks - len(owner)} free)", fontsize=9, loc="left")
    for ax in (top, bottom):
        ax.set_frame_on(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
