"""The engine's batched sampler (Day 06): every sequence of a step at once, each with its own
SamplingParams, the same math as the reference in course_lib/layers/sampler.py.

Each sequence gets a *row* in persistent device tensors when it is first scheduled (its parameters,
its seed, a count of every token it generated, a mask of its prompt's tokens, its number of
generated tokens) and keeps it until it finishes. A step gathers its rows with one index tensor
(reused while the batch does not change) and updates the counts on the device from the sampled ids,
so nothing is rebuilt from Python lists and no host sync is needed: under async scheduling the next
step's penalties already see the token the host has not read yet.

The Sampler runs the same math two ways. On the CPU (and wherever Triton cannot run) in torch, as
below. On a GPU through course_lib/kernels/ (sampling.py's docstring counts the (B, V) passes):
one fused kernel for min_tokens + penalties, one fused draw that reads the logits once and computes
the noise in registers (temperature, min-p, greedy rows), and for top-k rows the k_max best
candidates (up to k = 1,024, by kernels/topk.py: two reads of the logits and a top-k of a few
hundred survivors, no sort) filtered (top-k, top-p, min-p) and drawn by one kernel. Rows with
top-p but no top-k (or a top-k above 1,024) still sort the whole vocabulary.
The greedy pick, the full-vocabulary draw and a batch drawn among candidates alone record the
tokens (positions, counts) in their last pass; the other paths (batches that mix paths, the sort)
record them with two small scatters (``_record``).

Memory: the token counts are (rows, vocab) int32 and the prompt mask (rows, vocab) bool, allocated
the first time a request asks for a penalty: 256 rows x 128k vocabulary = 128 MiB + 32 MiB.
"""
from __future__ import annotations

import importlib.util
import random
from dataclasses import dataclass

import numpy as np
import torch

from ..config import SamplingParams
from .sampler import MASK32, MAX_CANDIDATES, filter_probs, penalize_rows, race_noise, to_device


def kernels_usable(device: torch.device) -> bool:
    """The Sampler's default: Triton kernels on a CUDA device Triton supports, torch elsewhere."""
    return (device.type == "cuda" and importlib.util.find_spec("triton") is not None
            and torch.cuda.get_device_capability(device) >= (7, 0))


# ---- the engine's batched sampler ---------------------------------------------------------------------

@dataclass
class SampleOutput:
    """One step's draws, still on the device: (B,) ids, and when any row asked for logprobs, the
    chosen ids' log-probabilities and ranks (1 = the most likely) and the top ``K`` of every row
    (K = the largest ``logprobs`` among the live rows; a row uses its own first k)."""
    tokens: torch.Tensor
    logprobs: torch.Tensor | None = None       # (B,) float32
    ranks: torch.Tensor | None = None          # (B,) int64
    top_ids: torch.Tensor | None = None        # (B, K) int64
    top_logprobs: torch.Tensor | None = None   # (B, K) float32

    def tensors(self) -> tuple:
        return (self.tokens, self.logprobs, self.ranks, self.top_ids, self.top_logprobs)


# columns of the float parameter table
TEMP, TOP_P, MIN_P, PRESENCE, FREQUENCY, REPETITION = range(6)


class Sampler:
    """Batched sampling with per-sequence state kept on the device across steps (see the module
    docstring). ``add`` a sequence when it is first scheduled, ``remove`` it when it finishes, and
    call the sampler with a step's logits (B, V) and the seq ids of its rows.

    ``kernels``: draw and penalise through course_lib/kernels/ (sampling.py, penalties.py, topk.py; default: on a CUDA device
    Triton supports; True on a CPU needs TRITON_INTERPRET=1, as the tests do). ``seed``: the seed of
    the generator that picks unseeded sequences' seeds (default: one drawn from torch's)."""

    def __init__(self, vocab_size: int, device, eos_token_ids=(), capacity: int = 8, argmax=None,
                 kernels: bool | None = None, seed: int | None = None):
        self.vocab_size, self.device = vocab_size, torch.device(device)
        self.eos_token_ids = sorted(set(eos_token_ids))
        self.kernels = kernels_usable(self.device) if kernels is None else kernels
        self._k = None
        if self.kernels:
            from ..kernels import sampling as k                 # Triton loads only where it runs
            from ..kernels.penalties import penalize
            from ..kernels.topk import top_candidates
            self._k, self._penalize, self._top_candidates = k, penalize, top_candidates
            if argmax is None:
                from ..kernels.argmax import argmax
        self.argmax = argmax
        self._rng = random.Random(int(torch.randint(0, 2**62, ())) if seed is None else seed)
        self.row_of: dict[int, int] = {}                  # seq_id -> row
        self.params: dict[int, SamplingParams] = {}       # row -> its params
        self.capacity = 0
        self.free_rows: list[int] = []
        self._floats = np.zeros((0, 6), np.float32)       # host copies, uploaded when they change
        self._ints = np.zeros((0, 2), np.int64)           # top_k (V = off), min_tokens
        self._seeds = np.zeros((0, 2), np.int64)          # the seed's low and high 32 bits
        self.floats = self.ints = self.seeds = None
        self.num_generated = torch.zeros(0, dtype=torch.int32, device=self.device)   # the noise's position
        self.counts = None                                # (capacity, V) int32 once a penalty is asked
        self.prompt_mask = None                           # (capacity, V) bool, the same
        self.stop_ids = None                              # (capacity, S) int64 once min_tokens is asked
        self._vocab_ids = torch.arange(vocab_size, device=self.device)
        self._dirty = True
        self._last_ids: list[int] | None = None
        self._rows = self._top_k_rows = self._ones = None
        self._grow(capacity)

    # ---- rows --------------------------------------------------------------------------------------
    def _grow(self, capacity: int) -> None:
        """Room for ``capacity`` rows; existing rows keep their state (a rare event: the engine starts
        with max_num_seqs rows, and only preempted-but-unfinished sequences push past it)."""
        old = self.capacity
        self.free_rows = list(range(capacity - 1, old - 1, -1)) + self.free_rows
        self._floats = np.vstack([self._floats, np.zeros((capacity - old, 6), np.float32)])
        self._ints = np.vstack([self._ints, np.zeros((capacity - old, 2), np.int64)])
        self._seeds = np.vstack([self._seeds, np.zeros((capacity - old, 2), np.int64)])

        def grown(t: torch.Tensor | None) -> torch.Tensor | None:
            if t is None:
                return None
            new = torch.zeros((capacity, *t.shape[1:]), dtype=t.dtype, device=t.device)
            new[:old] = t
            return new
        self.num_generated = grown(self.num_generated)
        if self._k is not None:                # the kernels' scratch, reused by every step
            self._work = self._k.work_buffers(capacity, self.vocab_size, self.device)
        self.counts, self.prompt_mask, self.stop_ids = map(grown, (self.counts, self.prompt_mask,
                                                                  self.stop_ids))
        self.capacity = capacity
        self._dirty = True

    def add(self, seq_id: int, params: SamplingParams, prompt_ids: list[int], seed: int | None = None,
            output_ids: list[int] = ()) -> None:
        """Give a sequence a row and write its parameters there. ``seed``: its 64-bit sampling seed
        (None: a random one). ``output_ids``: tokens it generated already, for a sequence added back
        after it lost its row: its draws continue at its position and its penalties count them."""
        if not self.free_rows:
            self._grow(2 * self.capacity)
        row = self.free_rows.pop()
        self.row_of[seq_id], self.params[row] = row, params
        seed = self._rng.getrandbits(63) if seed is None else seed
        self._seeds[row] = (seed & MASK32, (seed >> 32) & MASK32)
        self._floats[row] = (params.temperature, params.top_p, params.min_p, params.presence_penalty,
                             params.frequency_penalty, params.repetition_penalty)
        stops = self._stop_ids(params)
        top_k = self.vocab_size if params.top_k == -1 else min(params.top_k, self.vocab_size)
        self._ints[row] = (top_k, params.min_tokens if stops else 0)
        # fill_/zero_/index_fill_ with host scalars: launches. ``t[row] = x`` copies x from pageable
        # memory, which makes the host wait for the step in flight (the H200 run's sync debug mode)
        self.num_generated[row].fill_(len(output_ids))
        if params.has_penalties:
            if self.counts is None:
                self.counts = torch.zeros(self.capacity, self.vocab_size, dtype=torch.int32, device=self.device)
                self.prompt_mask = torch.zeros(self.capacity, self.vocab_size, dtype=torch.bool,
                                               device=self.device)
            self.counts[row].zero_()
            if output_ids:
                self.counts[row].index_add_(0, to_device(list(output_ids), self.device, torch.long),
                                            torch.ones(len(output_ids), dtype=torch.int32, device=self.device))
            self.prompt_mask[row].zero_()
            if params.repetition_penalty != 1 and prompt_ids:
                self.prompt_mask[row].index_fill_(0, to_device(prompt_ids, self.device, torch.long), True)
        if params.min_tokens and stops:
            width = max(len(stops), 0 if self.stop_ids is None else self.stop_ids.shape[1])
            if self.stop_ids is None or self.stop_ids.shape[1] < width:
                wider = torch.zeros(self.capacity, width, dtype=torch.long, device=self.device)
                if self.stop_ids is not None:
                    wider[:, :self.stop_ids.shape[1]] = self.stop_ids
                    wider[:, self.stop_ids.shape[1]:] = self.stop_ids[:, :1]   # repeats change nothing
                self.stop_ids = wider
            padded = stops + [stops[0]] * (width - len(stops))   # a repeated id masks nothing new
            self.stop_ids[row] = to_device(padded, self.device, torch.long)
        self._dirty = True

    def _stop_ids(self, params: SamplingParams) -> list[int]:
        eos = [] if params.ignore_eos else self.eos_token_ids
        return sorted(set(params.stop_token_ids) | set(eos))

    def remove(self, seq_id: int) -> None:
        row = self.row_of.pop(seq_id, None)
        if row is None:
            return
        del self.params[row]
        self.free_rows.append(row)
        self._dirty = True

    def _refresh(self) -> None:
        """Upload the parameter tables and recompute which stages any live row needs (a batch
        change only; steady decoding skips this)."""
        self.floats = to_device(torch.from_numpy(self._floats), self.device)
        self.ints = to_device(torch.from_numpy(self._ints), self.device)
        self.seeds = to_device(torch.from_numpy(self._seeds), self.device)
        ps = list(self.params.values())
        rand = [p for p in ps if not p.greedy]
        V = self.vocab_size
        has_k = [p.top_k != -1 and p.top_k < V for p in rand]
        self.any_random = bool(rand)
        self.any_greedy = any(p.greedy for p in ps)
        self.any_sort = any(p.top_k != -1 or p.top_p < 1 for p in rand)
        self.any_top_p = any(p.top_p < 1 for p in rand)
        self.any_min_p = any(p.min_p > 0 for p in rand)
        self.any_penalty = any(p.has_penalties for p in ps)
        self.any_min_tokens = self.stop_ids is not None and any(p.min_tokens for p in ps)
        # the kernels' draw: "full" (temperature, min-p: one pass over the vocabulary), "candidates"
        # (every row that filters by rank has a top-k <= MAX_CANDIDATES), else "sort"
        k_max = max((p.top_k for p, k in zip(rand, has_k) if k), default=0)
        nucleus_only = any(p.top_p < 1 and not k for p, k in zip(rand, has_k))
        self.k_max = k_max
        self.any_plain = any(p.top_p == 1 and not k for p, k in zip(rand, has_k))   # no rank filter
        self.draw_path = ("sort" if nucleus_only or k_max > MAX_CANDIDATES else
                          "candidates" if k_max else "full")
        wanted = [p.logprobs for p in ps if p.logprobs is not None]
        self.max_logprobs = max(wanted) if wanted else None
        self._last_ids = None                               # the rows' kinds may have changed
        self._dirty = False

    def _step_rows(self, seq_ids: list[int]) -> torch.Tensor:
        """The rows of this step as a device index (reused while the batch stays the same)."""
        if seq_ids != self._last_ids:
            rows = [self.row_of[i] for i in seq_ids]
            self._rows = to_device(rows, self.device, torch.long)
            self._ones = torch.ones(len(rows), dtype=torch.int32, device=self.device)   # _record's
            if self.kernels and self.draw_path == "candidates":       # rows drawn among candidates
                V = self.vocab_size
                self._top_k_rows = to_device([not self.params[r].greedy and self._ints[r, 0] < V
                                              for r in rows], self.device, torch.bool)
            self._last_ids = list(seq_ids)
        return self._rows

    # ---- one step ----------------------------------------------------------------------------------
    def __call__(self, logits: torch.Tensor, seq_ids: list[int]) -> SampleOutput:
        """Sample one token per row of ``logits`` (B, V); row i belongs to sequence ``seq_ids[i]``."""
        if self._dirty:
            self._refresh()
        rows = self._step_rows(seq_ids)
        x = self._process(logits, rows)
        recorded = False                        # the kernels' last pass may record the tokens itself
        if not self.any_random:
            if self.kernels:
                tokens = self._k.argmax_record(x, rows, self.num_generated, self.counts, self._work)
                recorded = True
            else:
                tokens = self._argmax(x)
        elif self.kernels:
            tokens, recorded = self._draw_kernels(x, rows)
        else:
            tokens = self._draw_torch(x, rows)
        if not recorded:
            self._record(rows, tokens)
        out = SampleOutput(tokens)
        if self.max_logprobs is not None:
            lp = logits.float().log_softmax(dim=-1)                                # raw logprobs
            out.logprobs = lp.gather(1, tokens[:, None])[:, 0]
            out.ranks = (lp > out.logprobs[:, None]).sum(-1) + 1
            if self.max_logprobs:
                out.top_logprobs, out.top_ids = lp.topk(self.max_logprobs, dim=-1)
        return out

    def _argmax(self, x: torch.Tensor) -> torch.Tensor:
        return x.argmax(dim=-1) if self.argmax is None else self.argmax(x)

    def _draw_torch(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The reference's arithmetic on the whole batch: filter_probs, then the race."""
        f = self.floats[rows]                                                       # (B, 6)
        temp = f[:, TEMP]
        greedy = temp == 0
        tempered = x.float() / torch.where(greedy, 1.0, temp)[:, None]
        probs = filter_probs(tempered, self.ints[rows, 0], f[:, TOP_P], f[:, MIN_P], self.any_sort,
                             self.any_min_p)
        race = race_noise(self.seeds[rows], self.num_generated[rows], self._vocab_ids)
        drawn = (probs / race).argmax(dim=-1)
        return torch.where(greedy, self._argmax(x), drawn) if self.any_greedy else drawn

    def _draw_kernels(self, x: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """The same draw through Triton: the tables stay whole, the kernels index them by ``rows``.
        Returns (tokens, whether the kernels recorded them already)."""
        k, f, pos = self._k, self.floats, self.num_generated
        min_p = f[:, MIN_P] if self.any_min_p else None
        if self.draw_path == "full":                        # greedy rows come out as the argmax
            return k.draw(x, self.seeds, pos, rows, f[:, TEMP], min_p, record=(pos, self.counts),
                          work=self._work), True
        if self.draw_path == "sort":
            fr = f[rows]
            greedy = fr[:, TEMP] == 0
            probs = filter_probs(x.float() / torch.where(greedy, 1.0, fr[:, TEMP])[:, None],
                                 self.ints[rows, 0], fr[:, TOP_P], fr[:, MIN_P], True, self.any_min_p)
            drawn = k.draw(probs, self.seeds, pos, rows, log_input=True, work=self._work)
            return (torch.where(greedy, self._argmax(x), drawn) if self.any_greedy else drawn), False
        values, ids = self._top_candidates(x, self.k_max)           # (B, k_max), kernels/topk.py
        alone = not (self.any_plain or self.any_greedy)             # no other path's tokens to merge
        drawn = k.draw_candidates(values, ids, self.seeds, pos, rows, f[:, TEMP], self.ints[:, 0],
                                  f[:, TOP_P] if self.any_top_p else None, min_p, self.counts, record=alone)
        if alone:
            return drawn, True
        if self.any_plain:                    # rows without top-k draw over the whole vocabulary
            drawn = torch.where(self._top_k_rows, drawn, k.draw(x, self.seeds, pos, rows, f[:, TEMP], min_p,
                                                                work=self._work))
        elif self.any_greedy:
            drawn = torch.where(self._top_k_rows, drawn, self._argmax(x))
        return drawn, False

    def processed_logits(self, logits: torch.Tensor, seq_ids: list[int]) -> torch.Tensor:
        """The logits the draw starts from (min_tokens masks and penalties applied), for tests and
        the notebook; a step does the same inside ``__call__``."""
        if self._dirty:
            self._refresh()
        return self._process(logits, self._step_rows(seq_ids))

    def _process(self, logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        if not (self.any_min_tokens or self.any_penalty):
            return logits
        f = self.floats
        pen = dict(counts=self.counts, prompt_mask=self.prompt_mask, repetition=f[:, REPETITION],
                   frequency=f[:, FREQUENCY], presence=f[:, PRESENCE]) if self.any_penalty else {}
        stops = dict(num_generated=self.num_generated, min_tokens=self.ints[:, 1],
                     stop_ids=self.stop_ids) if self.any_min_tokens else {}
        penalize = self._penalize if self.kernels else penalize_rows     # the kernel: one (B, V) pass
        return penalize(logits, rows, **pen, **stops)

    def _record(self, rows: torch.Tensor, tokens: torch.Tensor) -> None:
        """Device-side history for the next steps: one more token per row (the noise's position),
        and its count."""
        ones = self._ones if len(self._ones) == len(rows) else torch.ones_like(rows, dtype=torch.int32)
        self.num_generated.index_add_(0, rows, ones)
        if self.counts is not None:          # a 1-D scatter-add: index_put_(accumulate=True) sorts first
            self.counts.view(-1).index_add_(0, rows * self.vocab_size + tokens, ones)
