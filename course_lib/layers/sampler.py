"""Pick the next token for every sequence of a batch, each with its own SamplingParams (Day 06).

The order of operations is vLLM's:

    raw logits ──► logprobs (log_softmax of the raw logits: what ``logprobs=k`` reports)
        │
        ├─ min_tokens: EOS and stop_token_ids to -inf while a sequence is shorter than min_tokens
        ├─ penalties: repetition (prompt + output tokens), then frequency and presence (output tokens)
        ├─ greedy rows: argmax here
        └─ temperature ─► top-k ─► top-p ─► min-p ─► probabilities ─► one draw per row

A draw uses the "exponential race": argmax(p_i / E_i) with E_i ~ Exp(1) picks token i with
probability p_i. The E_i are not drawn from a random generator but computed: E_i = -log(u_i) with
u_i a 32-bit hash (``race_noise``) of (the row's 64-bit seed, the row's output position = tokens it
has generated so far, the token id i). So a draw depends on nothing but its own row: a seeded
request gives the same tokens alone or in any batch, at any row, after any preemption, with no
per-row generator and no Python loop. An unseeded sequence gets a random seed when it is added,
from a ``random.Random`` the sampler owns (``Sampler(seed=...)``; by default seeded from torch's
global generator, so ``torch.manual_seed`` makes a whole run reproducible).

Two implementations of the same thing:

- the reference (``sample``, ``apply_filters``, ``apply_penalties``): one request's parameters at a
  time, tensors built from Python lists every call. Short, obviously right; the tests hold the fast
  path to it.
- ``Sampler``: the engine's. Each sequence gets a *row* in persistent device tensors when it is first
  scheduled (its parameters, its seed, a count of every token it generated, a mask of its prompt's
  tokens, its number of generated tokens) and keeps it until it finishes. A step gathers its rows
  with one index tensor (reused while the batch does not change) and updates the counts on the
  device from the sampled ids, so nothing is rebuilt from Python lists and no host sync is needed:
  under async scheduling the next step's penalties already see the token the host has not read yet.

The Sampler runs the same math two ways. On the CPU (and wherever Triton cannot run) in torch, as
below. On a GPU through course_lib/kernels/sampling.py (its docstring counts the (B, V) passes):
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

NEG_INF = float("-inf")
MASK32 = 0xFFFFFFFF
NOISE_SALT = 0x9E3779B9          # mixed into the seed's low half, so seed 0 does not hash 0 to 0
MAX_CANDIDATES = 1024            # top-k rows up to this k draw among their k best candidates (no sort)


def to_device(data, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Host data (a tensor, or lists built into one) on ``device`` without making the host wait.
    A copy from pageable memory waits for everything queued on the stream (CUDA stages it first),
    which under async scheduling is the step in flight: each batch change or eager step would end
    the overlap of host and device. A pinned copy is queued like a kernel, and torch's pinned-memory
    cache keeps the block until the copy has run, so the host data may change right after."""
    pin = device.type == "cuda"
    if isinstance(data, torch.Tensor):
        t = data.pin_memory() if pin else data
    else:
        t = torch.tensor(data, dtype=dtype, pin_memory=pin)
    return t.to(device, non_blocking=pin)


# ---- the reference: one request's parameters at a time ---------------------------------------------

def apply_penalties(logits: torch.Tensor, prompt_ids: list[list[int]], output_ids: list[list[int]],
                    params: list[SamplingParams]) -> torch.Tensor:
    """Repetition, frequency and presence penalties, row by row from token lists (B, V) -> (B, V)."""
    out = logits.float().clone()
    for row, (prompt, output, p) in enumerate(zip(prompt_ids, output_ids, params)):
        x = out[row]
        if p.repetition_penalty != 1 and (prompt or output):
            seen = torch.tensor(sorted(set(prompt) | set(output)), dtype=torch.long, device=x.device)
            v = x[seen]
            x[seen] = torch.where(v > 0, v / p.repetition_penalty, v * p.repetition_penalty)
        if output and (p.frequency_penalty or p.presence_penalty):
            counts = torch.bincount(torch.tensor(output, device=x.device), minlength=x.numel()).float()
            x -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0).float()
    return out


def mask_stop_tokens(logits: torch.Tensor, num_generated: list[int], params: list[SamplingParams],
                     eos_token_ids) -> torch.Tensor:
    """min_tokens: a row shorter than its min_tokens cannot pick EOS (unless ignore_eos) or a stop id."""
    out = logits.clone()
    for row, (n, p) in enumerate(zip(num_generated, params)):
        if n < p.min_tokens:
            stops = set(p.stop_token_ids) | (set() if p.ignore_eos else set(eos_token_ids))
            if stops:
                out[row, sorted(stops)] = NEG_INF
    return out


def apply_filters(logits: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
    """Temperature, then top-k, top-p and min-p masks; returns probabilities (B, V) in float32."""
    device = logits.device
    temps = torch.tensor([p.temperature or 1.0 for p in params], device=device)
    top_k = torch.tensor([p.top_k if p.top_k != -1 else logits.shape[-1] for p in params], device=device)
    top_p = torch.tensor([p.top_p for p in params], device=device)
    min_p = torch.tensor([p.min_p for p in params], device=device)
    return filter_probs(logits.float() / temps[:, None], top_k, top_p, min_p,
                        any(p.top_k != -1 or p.top_p < 1.0 for p in params), any(p.min_p > 0 for p in params))


def filter_probs(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, min_p: torch.Tensor,
                 sort: bool = True, use_min_p: bool = True) -> torch.Tensor:
    """Tempered logits (B, V) and per-row top_k (V = off), top_p (1 = off), min_p (0 = off) to
    probabilities (B, V). ``sort``/``use_min_p`` False skip the work when no row needs it."""
    if sort:
        V = logits.shape[-1]
        sorted_logits, order = logits.sort(dim=-1, descending=True)          # (B, V)
        rank = torch.arange(V, device=logits.device)[None, :]
        # top-k first; top-p then measures mass on what top-k kept (the order vLLM and HF use):
        # drop a token once the better ones already cover top_p of the mass (>=, as HF and vLLM:
        # four tokens of 0.25 at top_p=0.5 keep two). top_p=1 drops nothing, even where the float
        # cumsum reaches 1.0 before the last tokens.
        sorted_logits = sorted_logits.masked_fill(rank >= top_k[:, None], NEG_INF)
        sorted_probs = sorted_logits.softmax(dim=-1)
        drop = ((sorted_probs.cumsum(-1) - sorted_probs) >= top_p[:, None]) & (top_p[:, None] < 1)
        sorted_logits = sorted_logits.masked_fill(drop, NEG_INF)
        logits = torch.full_like(logits, NEG_INF).scatter(-1, order, sorted_logits)
    probs = logits.softmax(dim=-1)
    if use_min_p:
        probs = probs.masked_fill(probs < min_p[:, None] * probs.max(-1, keepdim=True).values, 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


# ---- the noise of the draw: a hash, not a generator ------------------------------------------------

def _mul32(h, c: int):
    """(h * c) mod 2**32 for 0 <= h < 2**32 in int64: c in 16-bit halves, so no product passes 2**48."""
    return (h * (c & 0xFFFF) + (((h * (c >> 16)) & 0xFFFF) << 16)) & MASK32


def fmix32(h):
    """murmur3's 32-bit finaliser (every input bit flips each output bit with probability ~1/2), on
    int64 tensors or ints holding 32-bit values; the Triton kernels compute the same on uint32."""
    h = h ^ (h >> 16)
    h = _mul32(h, 0x85EBCA6B)
    h = h ^ (h >> 13)
    h = _mul32(h, 0xC2B2AE35)
    return h ^ (h >> 16)


def seed_halves(seeds: list[int], device=None) -> torch.Tensor:
    """64-bit seeds as (B, 2) int64 (low, high 32 bits): int64 cannot hold seeds >= 2**63."""
    return torch.tensor([(s & MASK32, (s >> 32) & MASK32) for s in seeds], dtype=torch.long,
                        device=device).view(len(seeds), 2)


def _fmix32_(h: torch.Tensor) -> torch.Tensor:
    """`fmix32` in place on a big int64 tensor (one scratch tensor, no temporaries: 4x faster on a CPU)."""
    t = torch.empty_like(h)
    for shift, c in ((16, 0x85EBCA6B), (13, 0xC2B2AE35)):
        h ^= torch.bitwise_right_shift(h, shift, out=t)
        torch.mul(h, c >> 16, out=t).bitwise_and_(0xFFFF).bitwise_left_shift_(16)   # _mul32, in place
        h.mul_(c & 0xFFFF).add_(t).bitwise_and_(MASK32)
    h ^= torch.bitwise_right_shift(h, 16, out=t)
    return h


def race_bits(seeds: torch.Tensor, positions: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """The 32-bit hash (as int64) behind `race_noise`, (B, V): see there."""
    key = fmix32(fmix32(fmix32(seeds[:, 0] ^ NOISE_SALT) ^ seeds[:, 1]) ^ positions.long())   # (B,)
    ids = token_ids.long() if token_ids.dim() == 2 else token_ids.long()[None]
    return _fmix32_(key[:, None] ^ ids)                                                    # (B, V)


def race_noise(seeds: torch.Tensor, positions: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """The race's E ~ Exp(1) of each (row, token): (B, V) float32 from ``seeds`` (B, 2) (seed_halves),
    ``positions`` (B,) (tokens the row generated so far) and ``token_ids`` (V,) or (B, V).

        key = fmix32(fmix32(fmix32(seed_low ^ SALT) ^ seed_high) ^ position)     one per row
        h   = fmix32(key ^ token_id),  u = ((h >> 9) + 0.5) / 2**23,  E = -log(u)

    u takes 2**23 values strictly inside (0, 1), each exact in float32, so the Triton kernels get
    the same u bit for bit (and E up to the last bit of a log). On the CPU this is ~20 in-place
    int64 passes over (B, V), the price of batch-invariant draws there (about a sort's time)."""
    u = race_bits(seeds, positions, token_ids).bitwise_right_shift_(9).float()
    return u.add_(0.5).mul_(2.0**-23).log_().neg_()


def sample(logits: torch.Tensor, params: list[SamplingParams], seeds: list[int | None] | None = None,
           positions: list[int] | None = None, argmax=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The reference sampler without penalties: (token ids (B,), their log-probabilities under the
    unmodified model distribution (B,) or None when no request asked for logprobs).

    ``seeds``: each row's 64-bit seed (None, or a None entry: a random one from torch's generator);
    ``positions``: each row's output position, the tokens it generated so far (default 0). A row's
    draw depends on its own (seed, position) only (see ``race_noise``).
    ``argmax``: the greedy pick, (B, V) -> (B,); default torch's (the engine passes the Triton one
    of course_lib/kernels/argmax.py on a GPU, same result, faster at small batch)."""
    tokens = logits.argmax(dim=-1) if argmax is None else argmax(logits)
    sampled = [i for i, p in enumerate(params) if not p.greedy]
    if sampled:
        seeds = [None] * len(params) if seeds is None else seeds
        positions = [0] * len(params) if positions is None else positions
        fresh = iter(torch.randint(0, 2**62, (len(sampled),)).tolist())   # for unseeded rows
        row_seeds = [next(fresh) if seeds[i] is None else seeds[i] for i in sampled]
        idx = torch.tensor(sampled, device=logits.device)
        probs = apply_filters(logits[idx], [params[i] for i in sampled])
        race = race_noise(seed_halves(row_seeds, logits.device),
                          torch.tensor([positions[i] for i in sampled], device=logits.device),
                          torch.arange(logits.shape[-1], device=logits.device))
        tokens[idx] = (probs / race).argmax(dim=-1)
    if all(p.logprobs is None for p in params):
        return tokens, None
    return tokens, logits.float().log_softmax(dim=-1).gather(-1, tokens[:, None])[:, 0]


def penalize_rows(logits: torch.Tensor, rows: torch.Tensor, counts=None, prompt_mask=None, repetition=None,
                  frequency=None, presence=None, num_generated=None, min_tokens=None, stop_ids=None
                  ) -> torch.Tensor:
    """min_tokens masks, then penalties, of ``logits`` (B, V) from per-sequence tables indexed by
    ``rows`` (B,): (B, V) float32. The Sampler's torch path, and the reference of the Triton
    ``kernels.sampling.penalize`` (same arguments). ``counts`` (N, V) int32 and ``prompt_mask``
    (N, V) bool with ``repetition``/``frequency``/``presence`` (N,) (counts None: no penalties);
    ``num_generated``, ``min_tokens`` (N,) and ``stop_ids`` (N, S) (stop_ids None: no min_tokens).
    Repetition divides a positive logit and multiplies a negative one for every token of the prompt or
    the output; frequency and presence subtract count x penalty and (count > 0) x penalty (OpenAI's)."""
    x = logits.float()
    if stop_ids is not None:
        active = (num_generated[rows] < min_tokens[rows])[:, None]
        ids = stop_ids[rows]
        x = x.scatter(1, ids, torch.where(active, NEG_INF, x.gather(1, ids)))
    if counts is not None:
        c, rep = counts[rows], repetition[rows, None]
        x = torch.where((c > 0) | prompt_mask[rows], torch.where(x > 0, x / rep, x * rep), x)
        x = x - frequency[rows, None] * c - presence[rows, None] * (c > 0)
    return x


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

    ``kernels``: draw and penalise through course_lib/kernels/sampling.py (default: on a CUDA device
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
            from ..kernels.topk import top_candidates
            self._k, self._top_candidates = k, top_candidates
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
        penalize = self._k.penalize if self.kernels else penalize_rows     # the kernel: one (B, V) pass
        return penalize(logits, rows, **pen, **stops)

    def _record(self, rows: torch.Tensor, tokens: torch.Tensor) -> None:
        """Device-side history for the next steps: one more token per row (the noise's position),
        and its count."""
        ones = self._ones if len(self._ones) == len(rows) else torch.ones_like(rows, dtype=torch.int32)
        self.num_generated.index_add_(0, rows, ones)
        if self.counts is not None:          # a 1-D scatter-add: index_put_(accumulate=True) sorts first
            self.counts.view(-1).index_add_(0, rows * self.vocab_size + tokens, ones)
