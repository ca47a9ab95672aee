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
        self.graphs = self.mixed_graphs = None
        if cuda_graphs and self.device.type == "cuda":
            from .cuda_graphs import DecodeGraphs, MixedGraphs
            max_blocks = -(-max_model_len // cache.block_size)
            try:
                self.graphs = DecodeGraphs(model, cache, self.decode_fn, max_batch, max_blocks)
                if self.prefill_fn is not paged_attention_torch:   # the torch path syncs on the host
                    self.mixed_graphs = MixedGraphs(model, cache, self.prefill_fn, max_batch, max_blocks)
            except Exception as e:   # a failed capture must not take the engine down: run eagerly
                warnings.warn(f"CUDA graph capture failed, decoding eagerly: {e}")

    def _tensor(self, data, dtype=torch.int32):
        return torch.tensor(data, dtype=dtype, pin_memory=self.device.type == "cuda").to(
            self.device, non_blocking=True)

    def prepare_inputs(self, sched: SchedulerOutput) -> tuple[StepInputs, list[int], list[int]]:
        """Pack the step's tokens side by side: (inputs, logits rows, rows whose id is in flight).

        Only the last token of a sequence that samples needs logits (a prompt chunk that does not
        reach the end of its prompt samples nothing). Rows whose id the previous step is still
        sampling hold 0 here; ``_fixups`` fills them in on the device."""
        bs = self.cache.block_size
        if sched.is_decode_only:
            return self._prepare_decode(sched.seqs, bs)
        inp = StepInputs([], [], [], [], [], [0])
        logits_rows, pending = [], []
        for s in sched.seqs:
            table, n = s.block_ids, s.num_tokens
            inp.ids += s.token_ids
            pending += range(len(inp.ids), len(inp.ids) + s.num_from_device)
            inp.ids += [0] * s.num_from_device
            pos = range(s.start, s.start + n)
            inp.positions += pos
            inp.slots += [table[p // bs] * bs + p % bs for p in pos]
            inp.tables.append(table)
            inp.seq_lens.append(s.start + n)
            inp.starts.append(inp.starts[-1] + n)
            if s.sample:
                logits_rows.append(inp.starts[-1] - 1)
        return inp, logits_rows, pending

    @staticmethod
    def _prepare_decode(seqs, bs: int) -> tuple[StepInputs, list[int], list[int]]:
        """Decode-only steps (most steps): one token per sequence, built without per-token loops."""
        pos = [s.start for s in seqs]                                 # each sequence's newest token
        tables = [s.block_ids for s in seqs]
        inp = StepInputs(
            ids=[s.token_ids[0] if s.token_ids else 0 for s in seqs],
            positions=pos, slots=[t[p // bs] * bs + p % bs for t, p in zip(tables, pos)],
            tables=tables, seq_lens=[p + 1 for p in pos], starts=list(range(len(seqs) + 1)))
        rows = list(range(len(seqs)))
        logits_rows = rows if all(s.sample for s in seqs) else [i for i in rows if seqs[i].sample]
        pending = [i for i in rows if seqs[i].num_from_device]
        return inp, logits_rows, pending

    def _eager_logits(self, inp: StepInputs, logits_rows: list[int], fix=None) -> torch.Tensor:
        tables = np.zeros((len(inp.tables), max(len(t) for t in inp.tables)), dtype=np.int32)
        fill_rows(tables, inp.tables)
        ctx = PagedAttentionContext(
            cache=self.cache, slot_mapping=self._tensor(inp.slots, torch.long),
            block_tables=torch.from_numpy(tables).to(self.device, non_blocking=True),
            seq_lens=self._tensor(inp.seq_lens), query_start_loc=self._tensor(inp.starts),
            max_query_len=inp.max_query_len,
            attention_fn=self.prefill_fn if inp.max_query_len > 1 else self.decode_fn)
        ids = self._tensor(inp.ids, torch.long)
        if fix is not None:                                                 # async: tokens in flight
            fix.apply(ids)
        ids = ids[None]                                                     # (1, N)
        positions = self._tensor(inp.positions, torch.long)[None]
        rows = self._tensor(logits_rows, torch.long)
        hidden = self.model.hidden_states(ids, positions, ctx)[0, rows]     # (B_sampled, hidden)
        return self.model.lm_head(hidden)                                   # (B_sampled, vocab)

    @staticmethod
    def _fixups(sched: SchedulerOutput, pending: list[int], prev: "StepHandle | None") -> TokenFix | None:
        """Rows whose input token is still being computed by ``prev`` (async scheduling): their ids
        are copied on the device from prev's sampled tokens."""
        if not pending:
            return None
        rows_from = {s.seq_id: r for s, r in zip((s for s in sched.seqs if s.num_from_device), pending)}
        # KeyError = a token nobody is computing: a scheduler bug, never a silent wrong input
        src = [prev.row_of[seq_id] for seq_id in rows_from]
        return TokenFix(list(rows_from.values()), src, prev.tokens)

    def swap(self, sched: SchedulerOutput) -> None:
        """Copy blocks between the device cache and the host pool before the step reads them."""
        if sched.blocks_to_swap_out:
            self.cache.swap_out(sched.blocks_to_swap_out)
        if sched.blocks_to_swap_in:
            self.cache.swap_in(sched.blocks_to_swap_in)

    @torch.inference_mode()
    def launch(self, sched: SchedulerOutput, prev: "StepHandle | None" = None) -> "StepHandle":
        """Queue one step on the device and return without waiting for it.

        ``prev``: the step still in flight (async scheduling); sequences it is sampling for take
        their input token straight from its sampled tokens on the device."""
        self.swap(sched)
        inp, logits_rows, pending = self.prepare_inputs(sched)
        fix = self._fixups(sched, pending, prev)
        if (sched.is_decode_only and self.graphs is not None
                and self.graphs.bucket(len(inp.ids)) is not None):
            logits = self.graphs.run(inp, fix)
            if len(logits_rows) < len(inp.ids):
                logits = logits[self._tensor(logits_rows, torch.long)]
        elif (self.mixed_graphs is not None and logits_rows
              and self.mixed_graphs.bucket(len(inp.seq_lens), len(inp.ids)) is not None):
            logits = self.mixed_graphs.run(inp, logits_rows, fix)
        else:
            logits = self._eager_logits(inp, logits_rows, fix)
        sampled = [s for s in sched.seqs if s.sample]
        if not sampled:
            return StepHandle(sched, sampled, None, None)
        tokens, logprobs = sample(logits, [s.params for s in sampled],
                                  [s.generator for s in sampled], self.argmax)
        return StepHandle.start_readback(sched, sampled, tokens, logprobs)


@dataclass
class StepHandle:
    """A launched step: its schedule and its sampled tokens, still on the device."""
    sched: SchedulerOutput
    sampled: list                        # the ScheduledSeqs that sample, in the order of tokens
    tokens: torch.Tensor | None          # (B_sampled,) int64; None when no sequence samples
    logprobs: torch.Tensor | None        # (B_sampled,) float32, when some request asked
    start: float = 0.0                   # when the engine scheduled it (for the step log)
    row_of: dict = field(default_factory=dict)   # seq_id -> its row in tokens

    host: tuple | None = None            # pinned copies being filled, and the event that says when
    done: object = None

    def __post_init__(self):
        self.row_of = {s.seq_id: i for i, s in enumerate(self.sampled)}

    @classmethod
    def start_readback(cls, sched, sampled, tokens, logprobs) -> "StepHandle":
        """Queue the copy of the tokens to the host right behind this step's kernels. Read back later
        with a plain .tolist(), the copy would queue behind whatever was launched since (the next
        step, under async scheduling) and the host would wait for that too."""
        handle = cls(sched, sampled, tokens, logprobs)
        if tokens.device.type == "cuda":
            handle.host = tuple(None if t is None else t.to("cpu", non_blocking=True)
                                for t in (tokens, logprobs))
            handle.done = torch.cuda.Event()
            handle.done.record()
        return handle

    def result(self) -> tuple[list[int], list[float] | None]:
        # the step's one host sync: the scheduler needs the tokens to decide what comes next
        if self.tokens is None:
            return [], None
        tokens, logprobs = self.tokens, self.logprobs
        if self.done is not None:
            self.done.synchronize()
            tokens, logprobs = self.host
        return tokens.tolist(), None if logprobs is None else logprobs.tolist()
