"""A step's inputs on the host, and the one device-side fix-up async scheduling needs.

Shared by the eager path (model_runner.py) and the CUDA-graph path (cuda_graphs.py)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..layers.sampler import to_device


@dataclass
class StepInputs:
    """One step's inputs as host lists (built once, then turned into tensors or graph buffers)."""
    ids: list[int]
    positions: list[int]
    slots: list[int]
    tables: list[list[int]]
    seq_lens: list[int]
    starts: list[int]          # query_start_loc

    @property
    def max_query_len(self) -> int:
        return max(b - a for a, b in zip(self.starts, self.starts[1:]))


def fill_rows(out, rows: list[list[int]]) -> None:
    """Write ragged ``rows`` into the left of the 2-D numpy array ``out`` (the rest is left as is)."""
    for i, row in enumerate(rows):
        out[i, :len(row)] = row


@dataclass
class TokenFix:
    """Input tokens still being computed by the step in flight (async scheduling): on the device,
    ``ids[rows] = prev_tokens[src]`` before the forward pass reads ids."""
    rows: list[int]                  # rows of this step's ids
    src: list[int]                   # rows of the previous step's sampled tokens
    prev_tokens: torch.Tensor        # (B_prev,) on the device

    @property
    def in_place(self) -> bool:
        """The steady state of decoding: the same sequences in the same rows as last step, so the
        fix-up is one plain device copy and no index needs uploading."""
        return self.rows == self.src and self.rows[-1] == len(self.rows) - 1   # distinct, ascending

    def apply(self, ids: torch.Tensor, index: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        """``index``: (rows, src) as long tensors already on ids' device, or None to upload them."""
        n = len(self.rows)
        if self.in_place:                       # rows == src == 0..n-1
            ids[:n].copy_(self.prev_tokens[:n])
            return
        if index is None:
            index = to_device([self.rows, self.src], ids.device, torch.long).unbind()
        ids.index_copy_(0, index[0], self.prev_tokens.index_select(0, index[1]))
