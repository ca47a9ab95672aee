"""Turns a SchedulerOutput into tensors, runs the model over paged KV, and samples one token per sequence.

All sequences of a step are packed side by side into one (1, N) input (no padding):

    prefill of A (3 tokens) and B (2 tokens):  input_ids [a0 a1 a2 b0 b1], query_start_loc [0, 3, 5]
    decode of A, B, C:                         input_ids [a7 b4 c9],       query_start_loc [0, 1, 2, 3]
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch

from ..kv.paged import PagedAttentionContext, PagedKVCache, paged_attention_torch, paged_decode_torch
from ..layers.batch_sampler import SampleOutput, Sampler
from ..layers.sampler import to_device
from ..models.llama import LlamaModel
from .profiling import phase
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
                 cuda_graphs: bool = False, max_batch: int = 1, max_model_len: int = 1,
                 eos_token_ids=(), max_graph_tokens: int = 4096):
        self.model, self.cache = model, cache
        self.device = model.device
        self.prefill_fn, self.decode_fn = attention_functions(backend, self.device)
        self.argmax = None                                        # torch's, unless Triton runs here
        if triton_usable(self.device):
            if model.fused is None:                               # Day 9/14 kernels: on by default
                model.use_fused_kernels(True)                     # on a GPU, unless chosen already
            from ..kernels.argmax import argmax
            self.argmax = argmax
        self.sampler = Sampler(model.cfg.vocab_size, self.device, eos_token_ids, max(1, max_batch),
                               self.argmax)
        self.prompt_ids_of: dict[int, tuple[list[int], int]] = {}   # seq_id -> (prompt, k): prompt_logprobs
        self.graphs = self.mixed_graphs = None
        if cuda_graphs and self.device.type == "cuda":
            from .cuda_graphs import DecodeGraphs, MixedGraphs
            max_blocks = -(-max_model_len // cache.block_size)
            try:
                self.graphs = DecodeGraphs(model, cache, self.decode_fn, max_batch, max_blocks)
                if self.prefill_fn is not paged_attention_torch:   # the torch path syncs on the host
                    self.mixed_graphs = MixedGraphs(model, cache, self.prefill_fn, max_batch, max_blocks,
                                                    max_graph_tokens)
            except Exception as e:   # a failed capture must not take the engine down: run eagerly
                warnings.warn(f"CUDA graph capture failed, decoding eagerly: {e}")

    def _tensor(self, data, dtype=torch.int32):
        return to_device(data, self.device, dtype)

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
            block_tables=to_device(torch.from_numpy(tables), self.device),
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

    def update_states(self, sched: SchedulerOutput) -> None:
        """Sampler rows: free those of finished sequences, fill those of newly scheduled ones."""
        for seq_id in sched.finished_seq_ids:
            self.sampler.remove(seq_id)
            self.prompt_ids_of.pop(seq_id, None)
        for new in sched.new_seqs:
            self.sampler.add(new.seq_id, new.params, new.prompt_token_ids, new.seed)
            if new.params.prompt_logprobs is not None:
                self.prompt_ids_of[new.seq_id] = (new.prompt_token_ids, new.params.prompt_logprobs)

    def _prompt_rows(self, sched: SchedulerOutput, inp: StepInputs) -> "PromptRows | None":
        """Rows whose logits score the next prompt token, for sequences that asked for
        prompt_logprobs: position p of a prompt chunk predicts prompt token p + 1."""
        rows, targets, owners, k = [], [], [], 0
        for i, s in enumerate(sched.seqs):
            if s.seq_id not in self.prompt_ids_of:
                continue
            prompt, want = self.prompt_ids_of[s.seq_id]
            stop = min(s.start + s.num_tokens, len(prompt) - 1)
            if stop <= s.start:
                continue
            offset = inp.starts[i] - s.start                  # flat row of position p: offset + p
            rows += range(offset + s.start, offset + stop)
            targets += prompt[s.start + 1:stop + 1]
            owners.append((s.seq_id, s.start, stop - s.start))
            k = max(k, want)
        return PromptRows(rows, targets, owners, k) if rows else None

    def _score_prompt(self, prompt: "PromptRows", logits: torch.Tensor) -> SampleOutput:
        """Log-probabilities of the prompt tokens (raw, like logprobs), their ranks and the top k."""
        lp = logits.float().log_softmax(dim=-1)                                  # (rows, V)
        targets = self._tensor(prompt.targets, torch.long)
        out = SampleOutput(targets, lp.gather(1, targets[:, None])[:, 0])
        out.ranks = (lp > out.logprobs[:, None]).sum(-1) + 1
        if prompt.k:
            out.top_logprobs, out.top_ids = lp.topk(prompt.k, dim=-1)
        return out

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
        with phase("prepare_inputs"):
            self.update_states(sched)
            self.swap(sched)
            inp, logits_rows, pending = self.prepare_inputs(sched)
            fix = self._fixups(sched, pending, prev)
            prompt = self._prompt_rows(sched, inp) if self.prompt_ids_of else None
        with phase("forward"):
            if prompt is None:
                logits = self._logits(sched, inp, logits_rows, fix)
            else:                        # prompt_logprobs: more rows than the graphs keep; eager
                logits = self._eager_logits(inp, logits_rows + prompt.rows, fix)
                logits, prompt_logits = logits[:len(logits_rows)], logits[len(logits_rows):]
        sampled = [s for s in sched.seqs if s.sample]
        with phase("sample"):
            out = self.sampler(logits, [s.seq_id for s in sampled]) if sampled else None
            scored = None if prompt is None else (prompt.owners, self._score_prompt(prompt, prompt_logits))
            return StepHandle.start_readback(sched, sampled, out, scored)

    def _logits(self, sched: SchedulerOutput, inp: StepInputs, logits_rows: list[int], fix) -> torch.Tensor:
        """The step's logits rows: a captured decode graph, a captured mixed graph, or eager."""
        if (sched.is_decode_only and self.graphs is not None
                and self.graphs.bucket(len(inp.ids)) is not None):
            logits = self.graphs.run(inp, fix)
            if len(logits_rows) < len(inp.ids):
                logits = logits[self._tensor(logits_rows, torch.long)]
            return logits
        if (self.mixed_graphs is not None and logits_rows
                and self.mixed_graphs.bucket(len(inp.seq_lens), len(inp.ids)) is not None):
            return self.mixed_graphs.run(inp, logits_rows, fix)
        return self._eager_logits(inp, logits_rows, fix)


class PromptRows(NamedTuple):
    rows: list[int]                      # flat rows of the step's packed tokens
    targets: list[int]                   # the prompt token each row predicts
    owners: list[tuple[int, int, int]]   # (seq_id, first position, number of rows), in row order
    k: int                               # the largest prompt_logprobs among them


@dataclass
class StepHandle:
    """A launched step: its schedule and its sampled tokens, still on the device."""
    sched: SchedulerOutput
    sampled: list                        # the ScheduledSeqs that sample, in the order of tokens
    out: SampleOutput | None             # None when no sequence samples
    prompt: tuple | None = None          # (owners, SampleOutput of prompt tokens): prompt_logprobs
    start: float = 0.0                   # when the engine scheduled it (for the step log)
    blocks_in_use: int = 0               # KV blocks held by sequences once it was scheduled (step log)
    row_of: dict = field(default_factory=dict)   # seq_id -> its row in tokens

    host: tuple | None = None            # pinned copies being filled, and the event that says when
    done: object = None

    def __post_init__(self):
        self.row_of = {s.seq_id: i for i, s in enumerate(self.sampled)}

    @property
    def tokens(self) -> torch.Tensor | None:
        """(B_sampled,) int64 on the device (what the next step's in-flight inputs copy from)."""
        return None if self.out is None else self.out.tokens

    def _tensors(self) -> tuple:
        empty = (None,) * 5
        return ((self.out.tensors() if self.out is not None else empty)
                + (self.prompt[1].tensors() if self.prompt is not None else empty))

    @classmethod
    def start_readback(cls, sched, sampled, out: SampleOutput | None, prompt=None) -> "StepHandle":
        """Queue the copy of the tokens to the host right behind this step's kernels. Read back later
        with a plain .tolist(), the copy would queue behind whatever was launched since (the next
        step, under async scheduling) and the host would wait for that too."""
        handle = cls(sched, sampled, out, prompt)
        if any(t is not None and t.device.type == "cuda" for t in handle._tensors()):
            handle.host = tuple(None if t is None else t.to("cpu", non_blocking=True)
                                for t in handle._tensors())
            handle.done = torch.cuda.Event()
            handle.done.record()
        return handle

    def result(self) -> tuple[list[int], tuple | None, tuple | None]:
        """(token ids, None or (logprobs, ranks, top ids, top logprobs) as lists with one entry per
        token, None or (owners, (target ids, logprobs, ranks, top ids, top logprobs)) of the prompt)."""
        # the step's one host sync: the scheduler needs the tokens to decide what comes next
        tensors = self._tensors()
        if self.done is not None:
            self.done.synchronize()
            tensors = self.host
        lists = [None if t is None else t.tolist() for t in tensors]
        tokens, logprobs = lists[0] or [], None if lists[1] is None else tuple(lists[1:5])
        prompt = None if self.prompt is None else (self.prompt[0], tuple(lists[5:]))
        return tokens, logprobs, prompt
