"""Turns a SchedulerOutput into tensors, runs the model over paged KV, and samples one token per sequence.

All sequences of a step are packed side by side into one (1, N) input (no padding):

    prefill of A (3 tokens) and B (2 tokens):  input_ids [a0 a1 a2 b0 b1], query_start_loc [0, 3, 5]
    decode of A, B, C:                         input_ids [a7 b4 c9],       query_start_loc [0, 1, 2, 3]
"""
from __future__ import annotations

import torch

from ..kv.paged import PagedAttentionContext, PagedKVCache, paged_attention_ref, paged_decode_torch
from ..layers.sampler import sample
from ..models.llama import LlamaModel
from .scheduler import SchedulerOutput


def attention_functions(backend: str, device: torch.device):
    """(prefill_fn, decode_fn) for a backend name: 'torch' runs anywhere, 'triton' needs a GPU
    (or TRITON_INTERPRET=1), 'auto' picks triton on CUDA and torch elsewhere."""
    if backend == "auto":
        backend = "triton" if device.type == "cuda" else "torch"
    if backend == "torch":
        return paged_attention_ref, paged_decode_torch
    from ..kernels.paged_attention import paged_attention_triton
    return paged_attention_triton, paged_attention_triton


class ModelRunner:
    def __init__(self, model: LlamaModel, cache: PagedKVCache, backend: str = "auto"):
        self.model, self.cache = model, cache
        self.device = model.device
        self.prefill_fn, self.decode_fn = attention_functions(backend, self.device)

    def _tensor(self, data, dtype=torch.int32):
        return torch.tensor(data, dtype=dtype, pin_memory=self.device.type == "cuda").to(
            self.device, non_blocking=True)

    def prepare(self, sched: SchedulerOutput):
        """Flat input ids, positions and the paged-attention context for one step."""
        bs = self.cache.block_size
        ids, positions, slots, seq_lens, starts = [], [], [], [], [0]
        for seq in sched.seqs:
            first = seq.num_computed_tokens if sched.is_prefill else seq.num_tokens - 1
            ids += seq.token_ids[first:]
            pos = range(first, seq.num_tokens)
            positions += pos
            table = seq.block_table
            slots += [table[p // bs] * bs + p % bs for p in pos]
            seq_lens.append(seq.num_tokens)
            starts.append(starts[-1] + len(pos))
        width = max(len(s.block_table) for s in sched.seqs)
        tables = [s.block_table + [0] * (width - len(s.block_table)) for s in sched.seqs]
        ctx = PagedAttentionContext(
            cache=self.cache, slot_mapping=self._tensor(slots, torch.long),
            block_tables=self._tensor(tables), seq_lens=self._tensor(seq_lens),
            query_start_loc=self._tensor(starts),
            max_query_len=max(b - a for a, b in zip(starts, starts[1:])),
            attention_fn=self.prefill_fn if sched.is_prefill else self.decode_fn)
        last = self._tensor([s - 1 for s in starts[1:]], torch.long)   # each sequence's last token
        return self._tensor(ids, torch.long)[None], self._tensor(positions, torch.long)[None], ctx, last

    @torch.inference_mode()
    def execute(self, sched: SchedulerOutput) -> tuple[list[int], list[float]]:
        """Run one step; returns the next token of every scheduled sequence and its logprob."""
        ids, positions, ctx, last = self.prepare(sched)
        hidden = self.model.hidden_states(ids, positions, ctx)[0, last]     # (B, hidden)
        logits = self.model.lm_head(hidden)                                 # (B, vocab): last tokens only
        tokens, logprobs = sample(logits, [s.params for s in sched.seqs],
                                  [s.generator for s in sched.seqs])
        return tokens.tolist(), logprobs.tolist()                           # the step's one host sync
