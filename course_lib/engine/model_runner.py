"""Turns a SchedulerOutput into tensors, runs the model over paged KV, and samples one token per sequence.

All sequences of a step are packed side by side into one (1, N) input (no padding):

    prefill of A (3 tokens) and B (2 tokens):  input_ids [a0 a1 a2 b0 b1], query_start_loc [0, 3, 5]
    decode of A, B, C:                         input_ids [a7 b4 c9],       query_start_loc [0, 1, 2, 3]
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from ..kv.paged import PagedAttentionContext, PagedKVCache, paged_attention_torch, paged_decode_torch
from ..layers.sampler import sample
from ..models.llama import LlamaModel
from .inputs import StepInputs, TokenFix, fill_rows
from .scheduler import SchedulerOutput
from .sequence import PENDING


def triton_usable(device: torch.device) -> bool:
    """Triton kernels can run here: a CUDA device and an importable triton (a CUDA torch without
    triton, or a GPU Triton does not support, falls back to the torch reference paths)."""
    if device.type != "cuda":
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.get_device_capability(device) >= (7, 0)   # Triton's oldest supported GPUs


def attention_functions(backend: str, device: torch.device):
    """(prefill_fn, decode_fn) for a backend name: 'torch' runs anywhere, 'triton' needs a GPU
    (or TRITON_INTERPRET=1), 'auto' picks triton where it can run and torch elsewhere."""
    if backend == "auto":
        backend = "triton" if triton_usable(device) else "torch"
    if backend == "torch":
        return paged_attention_torch, paged_decode_torch
    from ..kernels.paged_attention import paged_attention_triton
    return paged_attention_triton, paged_attention_triton


class ModelRunner:
    def __init__(self, model: LlamaModel, cache: PagedKVCache, backend: str = "auto",
                 cuda_graphs: bool = False, max_batch: int = 1, max_model_len: int = 1):
        self.model, self.cache = model, cache
        self.device = model.device
        self.prefill_fn, self.decode_fn = attention_functions(backend, self.device)
        self.argmax = None                                        # torch's, unless Triton runs here
        if triton_usable(self.device):
            if model.fused is None:                               # Day 9/14 kernels: on by default
                model.use_fused_kernels(True)                     # on a GPU, unless chosen already
            from ..kernels.argmax import argmax
            self.argmax = argmax
        self.graphs = None
        if cuda_graphs and self.device.type == "cuda":
            from .cuda_graphs import DecodeGraphs
            try:
                self.graphs = DecodeGraphs(model, cache, self.decode_fn, max_batch,
                                           -(-max_model_len // cache.block_size))
            except Exception as e:   # a failed capture must not take the engine down: run eagerly
                warnings.warn(f"CUDA graph capture failed, decoding eagerly: {e}")

    def _tensor(self, data, dtype=torch.int32):
        return torch.tensor(data, dtype=dtype, pin_memory=self.device.type == "cuda").to(
            self.device, non_blocking=True)

    def prepare(self, sched: SchedulerOutput) -> StepInputs:
        bs = self.cache.block_size
        if not sched.is_prefill:
            return self._prepare_decode(sched.seqs, bs)
        inp = StepInputs([], [], [], [], [], [0])
        for seq in sched.seqs:
            table = seq.block_table
            first = seq.num_computed_tokens          # everything before is in the cache already
            if seq.num_tokens - first == 1:          # decoding: only the newest token, no list copy
                inp.ids.append(seq.last_token_id)
            else:
                inp.ids += seq.token_ids[first:]
            pos = range(first, seq.num_tokens)
            inp.positions += pos
            inp.slots += [table[p // bs] * bs + p % bs for p in pos]
            inp.tables.append(table)
            inp.seq_lens.append(seq.num_tokens)
            inp.starts.append(inp.starts[-1] + len(pos))
        return inp

    @staticmethod
    def _prepare_decode(seqs, bs: int) -> StepInputs:
        """Decode-only steps (most steps): one token per sequence, built without per-token loops."""
        last = [s.num_tokens - 1 for s in seqs]                  # position of each newest token
        tables = [s.block_table for s in seqs]
        return StepInputs(
            ids=[s.last_token_id for s in seqs],
            positions=last, slots=[t[p // bs] * bs + p % bs for t, p in zip(tables, last)],
            tables=tables, seq_lens=[p + 1 for p in last], starts=list(range(len(seqs) + 1)))

    def _eager_logits(self, inp: StepInputs, is_prefill: bool, fix=None) -> torch.Tensor:
        tables = np.zeros((len(inp.tables), max(len(t) for t in inp.tables)), dtype=np.int32)
        fill_rows(tables, inp.tables)
        ctx = PagedAttentionContext(
            cache=self.cache, slot_mapping=self._tensor(inp.slots, torch.long),
            block_tables=torch.from_numpy(tables).to(self.device, non_blocking=True),
            seq_lens=self._tensor(inp.seq_lens), query_start_loc=self._tensor(inp.starts),
            max_query_len=inp.max_query_len,
            attention_fn=self.prefill_fn if is_prefill else self.decode_fn)
        ids = self._tensor(inp.ids, torch.long)
        if fix is not None:                                                 # async: tokens in flight
            fix.apply(ids)
        ids = ids[None]                                                     # (1, N)
        positions = self._tensor(inp.positions, torch.long)[None]
        last = self._tensor([s - 1 for s in inp.starts[1:]], torch.long)    # each sequence's last token
        hidden = self.model.hidden_states(ids, positions, ctx)[0, last]     # (B, hidden)
        return self.model.lm_head(hidden)                                   # (B, vocab): last tokens only

    @staticmethod
    def _fixups(sched: SchedulerOutput, inp: StepInputs, prev: "StepHandle | None") -> TokenFix | None:
        """Rows whose input token is still being computed by ``prev`` (async scheduling): their ids
        are copied on the device from prev's sampled tokens."""
        if prev is None:
            return None
        prev_row = {s.seq_id: i for i, s in enumerate(prev.sched.seqs)}
        rows, src = [], []
        for i, seq in enumerate(sched.seqs):
            r = inp.starts[i + 1] - 1                 # the sequence's newest token
            if inp.ids[r] == PENDING:
                rows.append(r)
                src.append(prev_row[seq.seq_id])      # KeyError = a token nobody is computing: a bug
                inp.ids[r] = 0                        # overwritten on the device before the forward
        if not rows:
            return None
        return TokenFix(rows, src, prev.tokens)

    @torch.inference_mode()
    def launch(self, sched: SchedulerOutput, prev: "StepHandle | None" = None) -> "StepHandle":
        """Queue one step on the device and return without waiting for it.

        ``prev``: the step still in flight (async scheduling); sequences it is decoding take their
        input token straight from its sampled tokens on the device."""
        inp = self.prepare(sched)
        fix = self._fixups(sched, inp, prev)
        if (not sched.is_prefill and self.graphs is not None
                and self.graphs.bucket(len(inp.ids)) is not None):
            logits = self.graphs.run(inp, fix)
        else:
            logits = self._eager_logits(inp, sched.is_prefill, fix)
        tokens, logprobs = sample(logits, [s.params for s in sched.seqs],
                                  [s.generator for s in sched.seqs], self.argmax)
        return StepHandle.start_readback(sched, tokens, logprobs)


@dataclass
class StepHandle:
    """A launched step: its schedule and its sampled tokens, still on the device."""
    sched: SchedulerOutput
    tokens: torch.Tensor                 # (B,) int64
    logprobs: torch.Tensor | None        # (B,) float32, when some request asked
    start: float = 0.0                   # the engine's bookkeeping for when the tokens land:
    num_tokens: int = 0                  # tokens computed, and where each sequence's token goes
    out_index: list[int] = field(default_factory=list)

    host: tuple | None = None            # pinned copies being filled, and the event that says when
    done: object = None

    @classmethod
    def start_readback(cls, sched, tokens, logprobs) -> "StepHandle":
        """Queue the copy of the tokens to the host right behind this step's kernels. Read back later
        with a plain .tolist(), the copy would queue behind whatever was launched since (the next
        step, under async scheduling) and the host would wait for that too."""
        handle = cls(sched, tokens, logprobs)
        if tokens.device.type == "cuda":
            handle.host = tuple(None if t is None else t.to("cpu", non_blocking=True)
                                for t in (tokens, logprobs))
            handle.done = torch.cuda.Event()
            handle.done.record()
        return handle

    def result(self) -> tuple[list[int], list[float] | None]:
        # the step's one host sync: the scheduler needs the tokens to decide what comes next
        tokens, logprobs = self.tokens, self.logprobs
        if self.done is not None:
            self.done.synchronize()
            tokens, logprobs = self.host
        return tokens.tolist(), None if logprobs is None else logprobs.tolist()
