"""The batched Sampler's GPU path (Day 06, issue 12): penalties, the draw and top-k candidates in
Triton, each next to its torch reference.

**The draw without probabilities.** The exponential race argmax_i p_i / E_i (E_i ~ Exp(1)) is, in
logs, the Gumbel-max trick: argmax_i (logit_i / T - log E_i). So a draw needs no softmax, no
(B, V) probability tensor and no (B, V) random tensor: each program reads its logits once, computes
E_i = -log(u_i) from a hash of (row seed, row position, token id) in registers (``race_noise`` in
course_lib/layers/sampler.py is the same hash in torch, bit for bit), and keeps the best score.
Like argmax.py, a row is spread over the GPU in chunks, so batch 1 is fast too, but in one launch:

    grid (B, chunks):  each program scores BLOCK logits and stores the max score and its index;
                       the row's last program to finish (an atomic counter per row) picks the
                       first chunk holding the overall max (argmax.py's pass 2) and records it

One launch instead of two matters on the host, where at small batch a sampling step's time goes:
every launch and every torch op costs microseconds of Python, whatever its size.

Temperature 0 rows score the plain logit (no noise): the result is torch's argmax. min-p, in logit
space, keeps logit / T >= max / T + log(min_p); it needs the row max first, one more pass (the
chunk maxima of argmax.py's pass 1, read back by pass 1 here).

**Top-k without a sort.** For rows with top-k (k <= 1,024), the Sampler takes the k_max best logits
(k_max = the largest top_k of the live rows) from kernels/topk.py's ``top_candidates``: a bound
from chunk maxima, the few logits above it, a top-k of those (its docstring; it replaced
``torch.topk``, which two earlier Triton top-ks had not beaten). One program per row then applies its
top-k, top-p (mass measured on what top-k kept, dropped once the better tokens hold >= top_p, as
``filter_probs``) and min-p to those k_max values, and draws among them with the noise of their
token ids: the token the full-vocabulary reference draws with the same noise. Rows with top-p but no
top-k still sort the whole vocabulary (the Sampler's "sort" path), then draw here from the filtered
probabilities (``log_input``).

The Sampler's other kernel, penalties and min_tokens in one pass, is in kernels/penalties.py.

(B, V) traffic per step (B x V elements; the counts are int32, the prompt mask one byte):

    temperature only     1 read of the logits
    + min-p              2 reads
    + penalties          + 1 read of the logits, the counts and the mask, 1 float32 write
    top-k (+ top-p)      2 reads (top_candidates) + 1 read per path the batch mixes
                         (rows without top-k: the full draw; greedy rows: argmax); (B, k_max) after
    top-p without top-k  the full sort of filter_probs (tens of passes) + 1 read

Every kernel indexes the Sampler's per-sequence tables (parameters, seeds, positions, counts) through
``rows``, so nothing is gathered into (B, ...) copies first.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import libdevice as cuda_libdevice

from ..layers.sampler import MAX_CANDIDATES, race_noise   # pure torch: the CPU path imports no Triton
from .argmax import BLOCK, chunk_argmax, chunk_maxima
from .checks import check_logits, check_runnable

# MAX_CANDIDATES (1,024): the candidates kernel holds a row's k_max values in one program
# tl.log is libdevice's exact logf (~20 instructions); a draw takes two logs per logit. The second,
# -log(E), only needs a small *absolute* error, so on a GPU it uses the hardware's approximation
# (lg2.approx: ~1e-7 absolute, only a near-tie could change a token). The first, E = -log(u), must be
# exact: for u near 1, E ~ 1 - u is tiny and the approximation's absolute error is as large as E
# itself (measured on an H200: E off by a factor of 7, E = 0 for some tokens, whose score is then
# +inf, and 5 of 768 temperature-only draws differing from torch's). The interpreter has no
# libdevice: tl.log there.
_FAST_LOG = tl.constexpr(os.environ.get("TRITON_INTERPRET") != "1")


# ---- the noise: sampler.race_noise on uint32 --------------------------------------------------------

@triton.jit
def _log(x):
    if _FAST_LOG:
        y = cuda_libdevice.fast_logf(x)
    else:
        y = tl.log(x)
    return y


@triton.jit
def _fmix32(h):
    # murmur3's finaliser on uint32 (products wrap mod 2**32, shifts are logical)
    h ^= h >> 16
    h *= 0x85EBCA6B
    h ^= h >> 13
    h *= 0xC2B2AE35
    h ^= h >> 16
    return h


@triton.jit
def _row_key(seed_ptr, pos):
    # seed_ptr -> the row's (low, high) int64 halves; pos: tokens it generated so far
    h = _fmix32(tl.load(seed_ptr).to(tl.uint32) ^ 0x9E3779B9)
    h = _fmix32(h ^ tl.load(seed_ptr + 1).to(tl.uint32))
    return _fmix32(h ^ pos.to(tl.uint32))


@triton.jit
def _race_e(key, token_ids):
    # E = -log(u) ~ Exp(1), u = ((h >> 9) + 0.5) / 2**23 strictly inside (0, 1), exact in float32
    # u as 1 + m / 2**23 (the bits 0x3F800000 | m) - (1 - 2**-24): exact (Sterbenz), the same float as
    # (m + 0.5) / 2**23 for every m, and no int-to-float conversion (a quarter-rate instruction)
    h = _fmix32(key ^ token_ids.to(tl.uint32))
    u = ((h >> 9) | 0x3F800000).to(tl.float32, bitcast=True) - 0.999999940395355224609375
    return -tl.log(u)                                          # exact: see _FAST_LOG


@triton.jit
def _neg_log_race(key, token_ids):
    # -log(E): the Gumbel noise added to a logit
    return -_log(_race_e(key, token_ids))


@triton.jit
def _race_kernel(seed_ptr, pos_ptr, bits_ptr, e_ptr, V, BLOCK: tl.constexpr):
    # grid: (B, cdiv(V, BLOCK)); the noise itself, for the bit-for-bit test against torch
    b, chunk = tl.program_id(0).to(tl.int64), tl.program_id(1)
    key = _row_key(seed_ptr + 2 * b, tl.load(pos_ptr + b))
    cols = chunk * BLOCK + tl.arange(0, BLOCK)
    tl.store(bits_ptr + b * V + cols, _fmix32(key ^ cols.to(tl.uint32)).to(tl.int64), mask=cols < V)
    tl.store(e_ptr + b * V + cols, _race_e(key, cols), mask=cols < V)


def race_noise_triton(seeds: torch.Tensor, positions: torch.Tensor, V: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernels' noise for tokens 0..V-1: (hash bits (B, V) int64, E (B, V) float32), to hold
    against sampler.race_bits / race_noise. ``seeds`` (B, 2) contiguous int64, ``positions`` (B,)."""
    check_runnable("seeds", seeds, dict(positions=positions))
    B = len(seeds)
    bits = torch.empty(B, V, dtype=torch.long, device=seeds.device)
    e = torch.empty(B, V, dtype=torch.float32, device=seeds.device)
    if B:
        _race_kernel[(B, triton.cdiv(V, 1024))](seeds.contiguous(), positions, bits, e, V, BLOCK=1024)
    return bits, e


# ---- the draw over the whole vocabulary ----------------------------------------------------------------

@triton.jit
def _draw_chunks_kernel(x_ptr, stride_x, rows_ptr, temp_ptr, stride_temp, min_p_ptr, stride_min_p,
                        chunk_max_ptr, seed_ptr, stride_seed, pos_ptr, val_ptr, idx_ptr, V, num_chunks,
                        done_ptr, out_ptr, num_gen_ptr, counts_ptr, stride_counts,
                        USE_MIN_P: tl.constexpr, LOG_INPUT: tl.constexpr, RECORD: tl.constexpr,
                        HAS_COUNTS: tl.constexpr, CHUNKS: tl.constexpr, BLOCK: tl.constexpr):
    # grid: (B, num_chunks); row b of x belongs to entry rows[b] of the tables; each row's last
    # program picks its token (_finish_row)
    b, chunk = tl.program_id(0).to(tl.int64), tl.program_id(1)
    r = tl.load(rows_ptr + b)
    cols = chunk * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + b * stride_x + cols, mask=cols < V, other=1.0).to(tl.float32)
    if LOG_INPUT:                                             # filtered probabilities, tempered
        x = _log(x)
    x = tl.where(x != x, float("inf"), x)                     # NaN wins, as in torch's argmax
    t = tl.load(temp_ptr + r * stride_temp)
    greedy = t == 0
    inv_t = 1.0 / tl.where(greedy, 1.0, t)                    # one division per program, not per logit
    scaled = x * inv_t
    score = scaled + _neg_log_race(_row_key(seed_ptr + r * stride_seed, tl.load(pos_ptr + r)), cols)
    if USE_MIN_P:
        c = tl.arange(0, CHUNKS)
        m = tl.max(tl.load(chunk_max_ptr + b * num_chunks + c, mask=c < num_chunks, other=float("-inf")),
                   axis=0)
        floor = m * inv_t + _log(tl.load(min_p_ptr + r * stride_min_p))   # min_p = 0: -inf, keeps all
        score = tl.where(scaled >= floor, score, float("-inf"))
    score = tl.where(greedy, x, score)
    score = tl.where(cols < V, score, float("-inf"))
    best, at = tl.max(score, axis=0, return_indices=True)     # ties: the first index
    tl.store(val_ptr + b * num_chunks + chunk, best)
    tl.store(idx_ptr + b * num_chunks + chunk, chunk * BLOCK + at)
    _finish_row(b, val_ptr, idx_ptr, num_chunks, done_ptr, out_ptr, rows_ptr, num_gen_ptr, counts_ptr,
                stride_counts, RECORD, HAS_COUNTS, CHUNKS)


def draw_ref(logits, seeds, positions, rows=None, temperature=None, min_p=None, log_input=False):
    """Torch reference of `draw`, the same arithmetic in the same order."""
    rows = torch.arange(len(logits), device=logits.device) if rows is None else rows
    x = logits.float().log() if log_input else logits.float()
    x = torch.where(x.isnan(), float("inf"), x)
    t = torch.ones(len(x), device=x.device) if temperature is None else temperature[rows].float()
    greedy = (t == 0)[:, None]
    inv_t = 1.0 / torch.where(t == 0, 1.0, t)[:, None]
    scaled = x * inv_t
    ids = torch.arange(x.shape[1], device=x.device)
    score = scaled + -race_noise(seeds[rows], positions[rows], ids).log()
    if min_p is not None:
        floor = x.amax(-1, keepdim=True) * inv_t + min_p[rows].float().log()[:, None]
        score = torch.where(scaled >= floor, score, float("-inf"))
    return torch.where(greedy, x, score).argmax(dim=-1)


@triton.jit
def _finish_row(b, val_ptr, idx_ptr, num_chunks, done_ptr, out_ptr, rows_ptr, num_gen_ptr, counts_ptr,
                stride_counts, RECORD: tl.constexpr, HAS_COUNTS: tl.constexpr, CHUNKS: tl.constexpr):
    # After a program stored its chunk's best: the row's last program to get here (a counter per
    # row) does argmax.py's pass 2, picking the first chunk holding the max, and resets the
    # counter for the next call; then (RECORD) the Sampler's history of the row's entry rows[b]: one
    # more generated token, and its count (a step has each entry once: no atomics needed there).
    tl.debug_barrier()                                       # the chunk's stores, then the release
    if tl.atomic_add(done_ptr + b, 1, sem="acq_rel") == num_chunks - 1:
        c = tl.arange(0, CHUNKS)
        vals = tl.load(val_ptr + b * num_chunks + c, mask=c < num_chunks, other=float("-inf"),
                       cache_modifier=".cg")                 # other programs' stores: past L1
        _, first = tl.max(vals, axis=0, return_indices=True)
        token = tl.load(idx_ptr + b * num_chunks + first, cache_modifier=".cg").to(tl.int64)
        tl.store(out_ptr + b, token)
        tl.store(done_ptr + b, 0)
        if RECORD:
            r = tl.load(rows_ptr + b).to(tl.int64)
            tl.store(num_gen_ptr + r, tl.load(num_gen_ptr + r) + 1)
            if HAS_COUNTS:
                at = counts_ptr + r * stride_counts + token
                tl.store(at, tl.load(at) + 1)


@triton.jit
def _argmax_record_kernel(x_ptr, stride_x, V, val_ptr, idx_ptr, num_chunks, done_ptr, out_ptr, rows_ptr,
                          num_gen_ptr, counts_ptr, stride_counts, HAS_COUNTS: tl.constexpr,
                          CHUNKS: tl.constexpr, BLOCK: tl.constexpr):
    # grid: (B, num_chunks); argmax.py's pass 1, and each row's last program finishes the row
    b, chunk = tl.program_id(0).to(tl.int64), tl.program_id(1)
    best, at = chunk_argmax(x_ptr, b, chunk, V, stride_x, BLOCK)
    tl.store(val_ptr + b * num_chunks + chunk, best)
    tl.store(idx_ptr + b * num_chunks + chunk, at)
    _finish_row(b, val_ptr, idx_ptr, num_chunks, done_ptr, out_ptr, rows_ptr, num_gen_ptr, counts_ptr,
                stride_counts, True, HAS_COUNTS, CHUNKS)


def work_buffers(rows: int, V: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scratch for `draw` and `argmax_record` over up to ``rows`` rows of a V vocabulary: each
    chunk's best (float32, int32) and each row's finished-chunk counter (int32, zero between calls:
    the kernels leave it so). The Sampler keeps one set; a call without one allocates its own."""
    n = triton.cdiv(V, BLOCK)
    return (torch.empty(rows, n, dtype=torch.float32, device=device),
            torch.empty(rows, n, dtype=torch.int32, device=device),
            torch.zeros(rows, dtype=torch.int32, device=device))


def _work(work, B: int, V: int, device):
    if work is None:
        return work_buffers(B, V, device)
    vals, idx, done = work
    if len(done) < B or vals.shape[1] != triton.cdiv(V, BLOCK):
        raise ValueError(f"work buffers hold {len(done)} rows of {vals.shape[1]} chunks; this call needs "
                         f"{B} rows of {triton.cdiv(V, BLOCK)}")
    return work


def argmax_record(logits: torch.Tensor, rows: torch.Tensor, num_generated: torch.Tensor,
                  counts: torch.Tensor | None = None, work: tuple | None = None) -> torch.Tensor:
    """kernels.argmax's greedy pick, (B,) int64, that also records it as the Sampler's ``_record``
    does: ``num_generated[rows] += 1`` and ``counts[rows, token] += 1`` (counts None: no counts).
    One launch: each row's last chunk program picks and records (at batch 1 a step is launches, not
    bandwidth). ``work``: `work_buffers` to reuse (default: allocated here)."""
    logits = check_logits(logits)
    check_runnable("logits", logits, dict(rows=rows, num_generated=num_generated, counts=counts))
    B, V = logits.shape
    out = torch.empty(B, dtype=torch.long, device=logits.device)
    if B == 0:
        return out
    vals, idx, done = _work(work, B, V, logits.device)
    num_chunks = vals.shape[1]
    _argmax_record_kernel[(B, num_chunks)](
        logits, logits.stride(0), V, vals, idx, num_chunks, done, out, rows, num_generated,
        out if counts is None else counts, 0 if counts is None else counts.stride(0),
        HAS_COUNTS=counts is not None, CHUNKS=triton.next_power_of_2(num_chunks), BLOCK=BLOCK, num_warps=8)
    return out


def draw(logits: torch.Tensor, seeds: torch.Tensor, positions: torch.Tensor, rows: torch.Tensor | None = None,
         temperature: torch.Tensor | None = None, min_p: torch.Tensor | None = None,
         log_input: bool = False, record: tuple | None = None, work: tuple | None = None) -> torch.Tensor:
    """One token per row of ``logits`` (B, V) (any float dtype): (B,) int64.

    Tables of N entries, row b of ``logits`` using entry ``rows[b]`` (default b): ``seeds`` (N, 2)
    int64 halves (seed_halves), ``positions`` (N,) int, ``temperature`` (N,) float32 (0 = greedy;
    None = 1), ``min_p`` (N,) float32 or None (no min-p pass). The 1-D tables may be strided
    columns of a wider table. ``log_input``: ``logits`` holds filtered probabilities; draw from them.
    ``record``: (num_generated (N,) int32, counts (N, V) int32 or None) to update as the Sampler's
    ``_record`` does, in the same launch that picks the tokens (``positions`` may be num_generated:
    a row's last program writes it after every program of the row has read it). ``work``:
    `work_buffers` to reuse (default: allocated here). One launch (two with min-p)."""
    logits = check_logits(logits)
    check_runnable("logits", logits, dict(seeds=seeds, positions=positions, rows=rows,
                                          temperature=temperature, min_p=min_p))
    B, V = logits.shape
    out = torch.empty(B, dtype=torch.long, device=logits.device)
    if B == 0:
        return out
    rows = torch.arange(B, device=logits.device) if rows is None else rows
    if seeds.dim() != 2 or seeds.shape[1] != 2 or seeds.stride(1) != 1 or seeds.dtype != torch.long:
        raise ValueError(f"seeds must be (N, 2) int64 (low, high halves), got {tuple(seeds.shape)} {seeds.dtype}")
    if temperature is None:
        temperature = torch.ones((), device=logits.device).expand(len(seeds))   # stride 0
    vals, idx, done = _work(work, B, V, logits.device)
    num_chunks = vals.shape[1]
    chunk_max = vals if min_p is None else chunk_maxima(logits)[0]   # the row max first: argmax's pass 1
    num_gen, counts = record if record is not None else (out, None)
    _draw_chunks_kernel[(B, num_chunks)](
        logits, logits.stride(0), rows, temperature, temperature.stride(0),
        temperature if min_p is None else min_p, 0 if min_p is None else min_p.stride(0), chunk_max,
        seeds, seeds.stride(0), positions, vals, idx, V, num_chunks, done, out, num_gen,
        out if counts is None else counts, 0 if counts is None else counts.stride(0),
        USE_MIN_P=min_p is not None, LOG_INPUT=log_input, RECORD=record is not None,
        HAS_COUNTS=counts is not None, CHUNKS=triton.next_power_of_2(num_chunks), BLOCK=BLOCK, num_warps=8)
    return out


# ---- the draw among top-k candidates ------------------------------------------------------------------

@triton.jit
def _candidates_kernel(val_ptr, ids_ptr, stride_c, rows_ptr, temp_ptr, top_k_ptr, top_p_ptr, min_p_ptr,
                       stride_f, stride_k, seed_ptr, stride_seed, pos_ptr, out_ptr, K, counts_ptr,
                       stride_counts, USE_TOP_P: tl.constexpr, USE_MIN_P: tl.constexpr,
                       RECORD: tl.constexpr, HAS_COUNTS: tl.constexpr, KP: tl.constexpr):
    # grid: (B,); a row's K candidates, best first (top_candidates), KP = next power of two >= K
    b = tl.program_id(0).to(tl.int64)
    r = tl.load(rows_ptr + b)
    rank = tl.arange(0, KP)
    t = tl.load(temp_ptr + r * stride_f)
    inv_t = 1.0 / tl.where(t == 0, 1.0, t)                    # greedy rows: the caller's argmax
    x = tl.load(val_ptr + b * stride_c + rank, mask=rank < K, other=float("-inf")).to(tl.float32) * inv_t
    x = tl.where(rank < tl.load(top_k_ptr + r * stride_k), x, float("-inf"))
    if USE_TOP_P:                                             # mass above each rank, of what top-k kept
        top_p = tl.load(top_p_ptr + r * stride_f)
        top_p = tl.where(top_p < 1, top_p, float("inf"))      # top_p = 1 drops nothing, even where
        e = tl.exp(x - tl.max(x, axis=0))                     # the float cumsum reaches 1.0 early
        p = e / tl.sum(e, axis=0)
        above = tl.cumsum(p, axis=0) - p
        x = tl.where(above >= top_p, float("-inf"), x)
    if USE_MIN_P:
        x = tl.where(x >= tl.max(x, axis=0) + _log(tl.load(min_p_ptr + r * stride_f)), x, float("-inf"))
    ids = tl.load(ids_ptr + b * stride_c + rank, mask=rank < K, other=0)
    score = x + _neg_log_race(_row_key(seed_ptr + r * stride_seed, tl.load(pos_ptr + r)), ids)
    _, at = tl.max(score, axis=0, return_indices=True)
    token = tl.load(ids_ptr + b * stride_c + at).to(tl.int64)
    tl.store(out_ptr + b, token)
    if RECORD:                                                # as _finish_row: positions, counts
        tl.store(pos_ptr + r, tl.load(pos_ptr + r) + 1)
        if HAS_COUNTS:
            at_count = counts_ptr + r * stride_counts + token
            tl.store(at_count, tl.load(at_count) + 1)


def candidate_logits_ref(values, temperature, top_k, top_p=None, min_p=None):
    """The candidates kernel's filter in torch: tempered candidate logits (B, K), -inf where top-k,
    top-p or min-p drops them. ``values`` (B, K) best first; per-row (B,) parameters."""
    inv_t = 1.0 / torch.where(temperature == 0, 1.0, temperature.float())[:, None]
    rank = torch.arange(values.shape[1], device=values.device)[None, :]
    x = (values.float() * inv_t).masked_fill(rank >= top_k[:, None], float("-inf"))
    if top_p is not None:
        p = x.softmax(dim=-1)
        x = x.masked_fill(((p.cumsum(-1) - p) >= top_p[:, None]) & (top_p[:, None] < 1), float("-inf"))
    if min_p is not None:
        x = x.masked_fill(x < x.amax(-1, keepdim=True) + min_p.float().log()[:, None], float("-inf"))
    return x


def draw_candidates_ref(values, ids, seeds, positions, rows, temperature, top_k, top_p=None, min_p=None):
    """Torch reference of `draw_candidates`."""
    x = candidate_logits_ref(values, temperature[rows], top_k[rows], None if top_p is None else top_p[rows],
                             None if min_p is None else min_p[rows])
    score = x + -race_noise(seeds[rows], positions[rows], ids).log()
    return ids.gather(1, score.argmax(dim=-1, keepdim=True))[:, 0]


def draw_candidates(values: torch.Tensor, ids: torch.Tensor, seeds: torch.Tensor, positions: torch.Tensor,
                    rows: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor,
                    top_p: torch.Tensor | None = None, min_p: torch.Tensor | None = None,
                    counts: torch.Tensor | None = None, record: bool = False) -> torch.Tensor:
    """One token per row among its top-k candidates: ``values``/``ids`` (B, K) from
    ``top_candidates(logits, K)`` or ``torch.topk`` (K >= every row's top_k), the tables as in `draw` (``top_k`` (N,)
    int64; ``top_p``/``min_p`` None: no row uses them). Greedy rows (temperature 0) are drawn at
    temperature 1 here: the caller takes their argmax. Returns (B,) int64 token ids. ``record``:
    also do the Sampler's ``_record`` (``positions`` is then its num_generated: +1 at each row's
    entry, after the row's program read it; and ``counts[entry, token] += 1`` unless None)."""
    if values.shape != ids.shape or values.dim() != 2 or not 1 <= values.shape[1] <= MAX_CANDIDATES:
        raise ValueError(f"values and ids must both be (B, K) with 1 <= K <= {MAX_CANDIDATES}, got "
                         f"{tuple(values.shape)} and {tuple(ids.shape)}")
    check_runnable("values", values, dict(ids=ids, seeds=seeds, positions=positions, rows=rows, counts=counts))
    B, K = values.shape
    out = torch.empty(B, dtype=torch.long, device=values.device)
    if B == 0:
        return out
    values, ids = values.contiguous(), ids.contiguous()
    f_stride = temperature.stride(0)
    if any(t is not None and t.stride(0) != f_stride for t in (top_p, min_p)):
        raise ValueError("temperature, top_p and min_p must be columns of one table (one stride)")
    _candidates_kernel[(B,)](values, ids, values.stride(0), rows, temperature, top_k,
                             temperature if top_p is None else top_p, temperature if min_p is None else min_p,
                             f_stride, top_k.stride(0), seeds, seeds.stride(0), positions, out, K,
                             out if counts is None else counts, 0 if counts is None else counts.stride(0),
                             USE_TOP_P=top_p is not None, USE_MIN_P=min_p is not None, RECORD=record,
                             HAS_COUNTS=record and counts is not None, KP=max(16, triton.next_power_of_2(K)))
    return out
