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
- ``Sampler`` (course_lib/layers/batch_sampler.py): the engine's, the whole batch at once, with
  per-sequence state on the device.
"""
from __future__ import annotations

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
    ``kernels.penalties.penalize`` (same arguments). ``counts`` (N, V) int32 and ``prompt_mask``
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
