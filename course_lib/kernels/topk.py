"""The k best logits of every row, for the Sampler's top-k draw (Day 06, issue 12), next to the
torch reference they must equal.

``torch.topk(logits, 50)`` over 256 rows of a 128k vocabulary took 0.49 ms on an H200, most of the
Sampler's 0.65 ms filters+penalties step: a radix select makes several passes over each row. Two
Triton top-ks that select in one go lost to it (bitonic merges of each chunk's best, a radix select
by ``tl.histogram``: git f3ef205, 56e039f). This one does not select over the row at all. It finds a
value every one of the k best must reach, keeps the few logits that reach it, and selects among those:

    pass 1, grid (B, tiles):   each program cuts TILE logits into chunks of S and writes each
                               chunk's max, as an order key (below)
    threshold, grid (B,):      t = the k-th best chunk maximum (a bisection on the key). The k
                               best chunk maxima are k different logits >= t, so each of the row's
                               k best logits is >= t.
    pass 2, grid (B, tiles):   each program appends its logits >= t to its row's buffer of CAP
                               slots (each survivor takes its slot with an atomic add)
    select, grid (B,):         each survivor's rank among the row's survivors (pairwise compares)
                               is its place in the output. A row with more than CAP survivors
                               (clustered or tied logits) is first selected exactly: a bisection
                               on the order key (32 counting passes over the row), then the logits
                               above the k-th best and the ties at it, lowest ids first. Real
                               logits do not get there.

Two reads of the logits, four launches, four allocations and no other torch op: at small batch the
host's time per launch or torch op, not the GPU, is the cost (a first version that used torch.topk
for the two small selections and torch ops to decode was several times slower at batch 1 on the
H100 machine; data/results/README.md, `gpu_h100_sampler.json`). With C = V / S >= 8k chunks the k
best logits fall mostly into different chunks: k (1 + k / 2C) survive on average for random logits.
Real ones cluster (common tokens have low ids), so more survive; on the embedded model's next-token
logits of 8 prompts every row stays within its CAP slots (tests/test_kernel_topk.py holds that).

**Order keys.** A float32's bits b, read as int32 and turned by b ^ ((b >> 31) & 0x7FFFFFFF), sort as
the floats do (negative floats' bits run backwards; -0.0 just below +0.0; NaN is read as +inf first,
as kernels/argmax.py counts it). A survivor is stored as one int64: that key in the high half, and
2**32 - 1 - id in the low half. So the survivors sort by value, ties lowest id first, whatever order
the appends landed in: the result is deterministic and the same for a row alone or in any batch,
which a seeded draw needs (bf16 logits tie often).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..layers.sampler import MAX_CANDIDATES
from .checks import check_logits, check_runnable

TILE = 4096                 # logits per program in passes 1 and 2 (and per step of the repair's loops)
MAX_CHUNK = 1024            # the largest chunk S; V / S >= 8k picks it smaller
LOW = 0xFFFFFFFF            # low half of a survivor's key: LOW - id
NEG_INF_KEY = tl.constexpr(-2139095041)   # the order key of -inf (bits 0xFF800000)
FILL = (-2139095041 << 32) | LOW          # an empty slot: -inf, id 0


@triton.jit
def _order_key(x):
    # float32 -> int32 that sorts as the floats do; NaN counts as +inf
    x = tl.where(x != x, float("inf"), x)
    b = x.to(tl.int32, bitcast=True)
    return b ^ ((b >> 31) & 0x7FFFFFFF)


@triton.jit
def _survivor(key, cols):
    # a survivor's int64: order key high, LOW - id low (ties: lowest id first)
    return (key.to(tl.int64) << 32) | (4294967295 - cols.to(tl.int64))


@triton.jit
def _chunk_max_kernel(x_ptr, stride_x, ws_ptr, V, W, TILE: tl.constexpr, S: tl.constexpr):
    # grid: (B, cdiv(V, TILE)); TILE // S chunk maxima per program, into the row's workspace
    row, tile = tl.program_id(0).to(tl.int64), tl.program_id(1)
    cols = tile * TILE + tl.arange(0, TILE)
    x = tl.load(x_ptr + row * stride_x + cols, mask=cols < V, other=float("-inf")).to(tl.float32)
    m = tl.max(tl.reshape(_order_key(x), (TILE // S, S)), axis=1)
    j = tile * (TILE // S) + tl.arange(0, TILE // S)
    tl.store(ws_ptr + row * W + j, m)


@triton.jit
def _threshold_kernel(ws_ptr, W, NM, keys_ptr, K, CAP: tl.constexpr, FILL: tl.constexpr, CP: tl.constexpr):
    # grid: (B,); t = the K-th best of the row's NM chunk maxima (CP = next power of two >= NM); the
    # row's survivor count to 0 and its CAP slots emptied, for pass 2
    row = tl.program_id(0).to(tl.int64)
    ws = ws_ptr + row * W
    c = tl.arange(0, CP)
    m = tl.load(ws + c, mask=c < NM, other=-2147483648).to(tl.int64)
    lo = tl.min(m, axis=0)                              # bisection: the largest lo with K maxima >= it
    hi = lo * 0 + 2147483648
    for _ in range(32):
        mid = lo + (hi - lo) // 2
        enough = tl.sum((m >= mid).to(tl.int32), axis=0) >= K
        lo, hi = tl.where(enough, mid, lo), tl.where(enough, hi, mid)
    tl.store(ws + NM, lo.to(tl.int32))
    tl.store(ws + NM + 1, 0)
    tl.store(keys_ptr + row * CAP + tl.arange(0, CAP), tl.full((CAP,), FILL, tl.int64))


@triton.jit
def _compact_kernel(x_ptr, stride_x, ws_ptr, W, NM, keys_ptr, V, CAP: tl.constexpr, TILE: tl.constexpr):
    # grid: (B, cdiv(V, TILE)); appends the logits >= t (and > -inf) to the row's CAP slots. A few
    # per program survive, so each takes its slot with its own atomic (no scan of the tile).
    row, tile = tl.program_id(0).to(tl.int64), tl.program_id(1)
    cols = tile * TILE + tl.arange(0, TILE)
    x = tl.load(x_ptr + row * stride_x + cols, mask=cols < V, other=float("-inf")).to(tl.float32)
    key = _order_key(x)
    ws = ws_ptr + row * W
    keep = (key >= tl.load(ws + NM)) & (key > NEG_INF_KEY)
    slot = tl.atomic_add(ws + NM + 1 + 0 * cols, 1, mask=keep)
    tl.store(keys_ptr + row * CAP + slot, _survivor(key, cols), mask=keep & (slot < CAP))


@triton.jit
def _select_kernel(x_ptr, stride_x, ws_ptr, W, NM, keys_ptr, val_ptr, ids_ptr, V, K,
                   CAP: tl.constexpr, FILL: tl.constexpr, TILE: tl.constexpr, JB: tl.constexpr):
    # grid: (B,); the row's K best survivors, best first, decoded. A row whose survivors overflowed
    # its slots is first selected exactly (the repair): lo = the K-th best key by bisection, then
    # the keys above it and the ties at it, lowest ids first. Each slot's place in the output is its
    # rank: the keys above it, counted JB slots at a time (empty slots tie: the earlier slot first).
    row = tl.program_id(0).to(tl.int64)
    s = tl.arange(0, CAP)
    ws = ws_ptr + row * W
    if tl.load(ws + NM + 1) > CAP:
        x_row = x_ptr + row * stride_x
        lo = tl.load(ws + NM).to(tl.int64)           # at least K keys >= lo (the chunk maxima)
        hi = lo * 0 + 2147483648                          # no key >= hi
        for _ in range(32):
            mid = lo + (hi - lo) // 2
            c = lo * 0
            for start in range(0, V, TILE):
                cols = start + tl.arange(0, TILE)
                x = tl.load(x_row + cols, mask=cols < V, other=float("-inf")).to(tl.float32)
                c += tl.sum((_order_key(x).to(tl.int64) >= mid).to(tl.int64), axis=0)
            lo, hi = tl.where(c >= K, mid, lo), tl.where(c >= K, hi, mid)
        tl.store(keys_ptr + row * CAP + s, tl.full((CAP,), FILL, tl.int64))
        m = lo * 0                                        # slots filled: above the K-th, then ties
        for tied in tl.static_range(2):
            for start in range(0, V, TILE):
                cols = start + tl.arange(0, TILE)
                x = tl.load(x_row + cols, mask=cols < V, other=float("-inf")).to(tl.float32)
                key = _order_key(x).to(tl.int64)
                keep = ((key == lo) if tied == 1 else (key > lo)) & (key > NEG_INF_KEY)
                slot = m + tl.cumsum(keep.to(tl.int64), axis=0) - 1
                tl.store(keys_ptr + row * CAP + slot, _survivor(key, cols), mask=keep & (slot < K))
                m += tl.sum(keep.to(tl.int64), axis=0)
        tl.debug_barrier()                                # the stores above, before the loads below
    keys = tl.load(keys_ptr + row * CAP + s)
    rank = s * 0
    for j in range(0, CAP, JB):
        o = j + tl.arange(0, JB)
        other = tl.load(keys_ptr + row * CAP + o)
        above = (other[None, :] > keys[:, None]) | ((other[None, :] == keys[:, None]) & (o[None, :] < s[:, None]))
        rank += tl.sum(above.to(tl.int32), axis=1)
    okey = (keys >> 32).to(tl.int32)
    value = (okey ^ ((okey >> 31) & 0x7FFFFFFF)).to(tl.float32, bitcast=True)
    tl.store(val_ptr + row * K + rank, value, mask=rank < K)
    tl.store(ids_ptr + row * K + rank, 4294967295 - (keys & 4294967295), mask=rank < K)


def chunk_size(V: int, k: int) -> int:
    """S: the largest power of two <= MAX_CHUNK with at least 8k chunks (1 where V < 16k)."""
    s = 1
    while s * 2 <= MAX_CHUNK and V // (s * 2) >= 8 * k:
        s *= 2
    return s


def capacity(k: int) -> int:
    """CAP: buffer slots per row, 4x the next power of two >= k, at least 256."""
    return max(256, 4 * triton.next_power_of_2(k))


def top_candidates_ref(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best of each row, best first, ties lowest id first (a stable sort); NaN as +inf,
    -inf as no logit at all (its slots hold id 0). Returns (values (B, k) float32, ids (B, k) int64)."""
    x = logits.float()
    x = torch.where(x.isnan(), float("inf"), x)
    values, ids = x.sort(dim=-1, descending=True, stable=True)
    values, ids = values[:, :k], ids[:, :k]
    return values, ids.masked_fill(values == float("-inf"), 0)


def _top_candidates(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`top_candidates`, plus each row's survivor count of pass 2 (> CAP: the repair ran) for tests."""
    logits = check_logits(logits)
    check_runnable("logits", logits, {})
    B, V = logits.shape
    if not 1 <= k <= min(V, MAX_CANDIDATES):
        raise ValueError(f"k must be in 1..{min(V, MAX_CANDIDATES)} (min of V and {MAX_CANDIDATES}), got {k}")
    dev = logits.device
    S, CAP, tiles = chunk_size(V, k), capacity(k), triton.cdiv(V, TILE)
    num_maxima = tiles * (TILE // S)
    work = torch.empty(B, num_maxima + 2, dtype=torch.int32, device=dev)    # per row: maxima, t, count
    keys = torch.empty(B, CAP, dtype=torch.long, device=dev)
    values = torch.empty(B, k, dtype=torch.float32, device=dev)
    ids = torch.empty(B, k, dtype=torch.long, device=dev)
    if B == 0:
        return values, ids, work[:, -1]
    x, stride, W, NM = logits, logits.stride(0), num_maxima + 2, num_maxima
    _chunk_max_kernel[(B, tiles)](x, stride, work, V, W, TILE=TILE, S=S, num_warps=8)
    _threshold_kernel[(B,)](work, W, NM, keys, k, CAP=CAP, FILL=FILL, CP=triton.next_power_of_2(NM),
                            num_warps=4)
    _compact_kernel[(B, tiles)](x, stride, work, W, NM, keys, V, CAP=CAP, TILE=TILE, num_warps=8)
    # the rank's (CAP, JB) compare tiles: 8,192 keys in registers on a GPU; under the interpreter a
    # step costs the same at any size, so few large steps
    _select_kernel[(B,)](x, stride, work, W, NM, keys, values, ids, V, k, CAP=CAP, FILL=FILL, TILE=TILE,
                         JB=max(1, 8192 // CAP) if x.is_cuda else min(CAP, 128), num_warps=4)
    return values, ids, work[:, -1]


def top_candidates(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton version of `top_candidates_ref` for (B, V) logits (any float dtype) and
    1 <= k <= min(V, 1,024): (values (B, k) float32, ids (B, k) int64), best first."""
    values, ids, _ = _top_candidates(logits, k)
    return values, ids
