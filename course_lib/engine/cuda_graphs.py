"""CUDA graphs for decode steps (Day 14).

A decode step of a 0.6B model launches ~1,500 small kernels; from Python each launch costs a few
microseconds of CPU time, so at small and medium batch the GPU waits on the CPU. A CUDA graph records
the launches once and replays them with one call. Graphs have fixed shapes and fixed addresses, so:

- one graph per batch-size bucket (1, 2, 4, 8, 16, 32, 64, 128, ...); a batch of 5 runs the 8-graph
  with 3 padding rows;
- inputs live in static buffers that each step overwrites; padding rows write their K/V into the
  cache's scratch block and read one position of it, so they touch no real sequence;
- block tables are (max_batch, max_blocks_per_seq) so any context up to max_model_len fits.
"""
from __future__ import annotations

import torch

from ..kv.paged import PagedAttentionContext, PagedKVCache
from ..models.llama import LlamaModel


def fill_rows(out, rows: list[list[int]]) -> None:
    """Write ragged ``rows`` into the left of the 2-D numpy array ``out`` (the rest is left as is)."""
    for i, row in enumerate(rows):
        out[i, :len(row)] = row


def buckets_for(max_batch: int) -> list[int]:
    out, b = [], 1
    while b < max_batch:
        out.append(b)
        b *= 2
    return out + [max_batch]


class DecodeGraphs:
    def __init__(self, model: LlamaModel, cache: PagedKVCache, attention_fn, max_batch: int,
                 max_blocks_per_seq: int):
        dev = model.device
        self.model, self.cache, self.attention_fn = model, cache, attention_fn
        self.buckets = buckets_for(max_batch)
        scratch = cache.scratch_block
        self.ids = torch.zeros(max_batch, dtype=torch.long, device=dev)
        self.positions = torch.zeros(max_batch, dtype=torch.long, device=dev)
        self.slots = torch.full((max_batch,), scratch * cache.block_size, dtype=torch.long, device=dev)
        self.tables = torch.full((max_batch, max_blocks_per_seq), scratch, dtype=torch.int32, device=dev)
        # Pinned staging for the block tables, so the copy to the GPU is asynchronous. Each step views
        # it as a contiguous (B, width) array (a strided host source would be copied through pageable
        # memory, which waits for the GPU) and fills it row by row through numpy (~4x faster than
        # torch.tensor on a list of padded lists at batch 256). Two buffers, used in turn: under async
        # scheduling the copy queued by the previous step may not have run yet when this one fills
        # its buffer; the one before it has (the engine waited for that step's tokens).
        self.host_tables = [torch.zeros(max_batch * max_blocks_per_seq, dtype=torch.int32,
                                        pin_memory=True) for _ in range(2)]
        self._turn = 0
        self.seq_lens = torch.ones(max_batch, dtype=torch.int32, device=dev)
        self.query_start_loc = torch.arange(max_batch + 1, dtype=torch.int32, device=dev)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.logits: dict[int, torch.Tensor] = {}
        self._capture_all()

    def _forward(self, b: int) -> torch.Tensor:
        ctx = PagedAttentionContext(self.cache, self.slots[:b], self.tables[:b], self.seq_lens[:b],
                                    self.query_start_loc[:b + 1], 1, self.attention_fn)
        hidden = self.model.hidden_states(self.ids[None, :b], self.positions[None, :b], ctx)[0]
        return self.model.lm_head(hidden)                                # (b, vocab)

    @torch.inference_mode()
    def _capture_all(self) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):          # warm-up (Triton compiles, cuBLAS picks kernels)
            for b in self.buckets:
                self._forward(b)
        torch.cuda.current_stream().wait_stream(side)
        pool = None
        for b in reversed(self.buckets):       # largest first: the smaller ones reuse its memory pool
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self.logits[b] = self._forward(b)
            pool = graph.pool()
            self.graphs[b] = graph
        torch.cuda.synchronize()

    def bucket(self, batch: int) -> int | None:
        return next((b for b in self.buckets if b >= batch), None)

    def run(self, ids, positions, slots, tables: list[list[int]], seq_lens, fix=None) -> torch.Tensor:
        """Copy one decode step's inputs into the static buffers, replay, return logits (B, vocab).

        ``fix``: (rows, src, prev_tokens) device tensors: ids[rows] = prev_tokens[src] (async scheduling)."""
        B = len(ids)
        b = self.bucket(B)
        width = max(len(t) for t in tables)
        pin = dict(pin_memory=True)
        self.ids[:B].copy_(torch.tensor(ids, **pin), non_blocking=True)
        if fix is not None:
            rows, src, prev_tokens = fix
            self.ids.index_copy_(0, rows, prev_tokens.index_select(0, src))
        self.positions[:B].copy_(torch.tensor(positions, **pin), non_blocking=True)
        self.slots[:B].copy_(torch.tensor(slots, **pin), non_blocking=True)
        self.seq_lens[:B].copy_(torch.tensor(seq_lens, dtype=torch.int32, **pin), non_blocking=True)
        self._turn ^= 1
        staged = self.host_tables[self._turn][:B * width].view(B, width)
        fill_rows(staged.numpy(), tables)   # entries past a row's length are stale: never read
        self.tables[:B, :width].copy_(staged, non_blocking=True)
        if b > B:   # padding rows: scratch slot, one position of the scratch block
            self.slots[B:b].fill_(self.cache.scratch_block * self.cache.block_size)
            self.seq_lens[B:b].fill_(1)
            self.tables[B:b, 0].fill_(self.cache.scratch_block)
        self.graphs[b].replay()
        return self.logits[b][:B]
