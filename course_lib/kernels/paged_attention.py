"""Paged attention in Triton (Day 5 kernels): varlen queries over K/V stored in cache blocks.

Computes exactly `course_lib.kv.paged.paged_attention_ref`: query j of a sequence with q_len queries
and seq_len keys sits at position seq_len - q_len + j and sees keys 0..that position.

    one program = (query tile of one sequence, one KV head); its M rows pack the GROUP query heads
    sharing that KV head (GQA), so each K/V tile is loaded once per group, not once per head:
        row r -> token t0 + r // GROUP_PAD, query head kv_head * GROUP + r % GROUP_PAD
    key tile of BLOCK_N positions n -> physical slot block_table[n // block_size], n % block_size

Key tiles are sized for tl.dot (>= 16), not for the cache: a tile may span several cache blocks
(block_size 1..8) or sit inside one (block_size >= BLOCK_N). Either way each key row's address comes
from the block table, which costs one small extra load per tile but lets block_size be any power of two.
Decode over long contexts uses a second kernel (split-KV, "Flash-Decoding") plus a reduction.
"""
from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

from .checks import BF16_DOT, FP8_CACHE, check_runnable

LOG2E = 1.4426950408889634   # softmax in base 2: exp2 is one instruction, exp is exp2 plus a multiply
NEG = tl.constexpr(-1.0e30)  # finite "minus infinity": masked padding rows never compute inf - inf
MAX_SPLITS = 64              # the reduce kernel holds (splits x head_dim) floats per program


@triton.jit
def _attend_tile(q, m_i, l_i, acc, k_ptr, v_ptr, bt_row_ptr, start, kv_end, pos,
                 d, d_ok, scale_log2e, stride_kb, stride_ks, stride_vb, stride_vs,
                 BLOCK_N: tl.constexpr, BLOCK_SIZE: tl.constexpr, PRECISION: tl.constexpr):
    """One online-softmax step over keys start..start+BLOCK_N (shared by both kernels).

    k_ptr/v_ptr already point at this program's KV head; bt_row_ptr at its sequence's block table."""
    n = start + tl.arange(0, BLOCK_N)                                   # (BLOCK_N,) key positions
    n_ok = n < kv_end
    blk = tl.load(bt_row_ptr + n // BLOCK_SIZE, mask=n_ok, other=0)    # physical block of each key
    blk = blk.to(tl.int64)   # int32 blk * stride_kb overflows past 2^31 elements (a ~4 GB bf16 pool)
    slot = n % BLOCK_SIZE
    kv_mask = n_ok[:, None] & d_ok[None, :]
    k = tl.load(k_ptr + blk[:, None] * stride_kb + slot[:, None] * stride_ks + d[None, :],
                mask=kv_mask, other=0.0)                                # (BLOCK_N, BLOCK_D)
    v = tl.load(v_ptr + blk[:, None] * stride_vb + slot[:, None] * stride_vs + d[None, :],
                mask=kv_mask, other=0.0)
    k, v = k.to(q.dtype), v.to(q.dtype)          # an fp8 cache (Day 19) is read in q's dtype; else a no-op
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale_log2e  # (BLOCK_M, BLOCK_N), fp32
    s = tl.where((n[None, :] <= pos[:, None]) & n_ok[None, :], s, NEG)   # causal + end of context
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.exp2(m_i - m_new)          # rescales what was summed under the old running max
    p = tl.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
    return m_new, l_i, acc


@triton.jit
def _paged_attn_kernel(
    q_ptr, k_ptr, v_ptr, out_ptr,        # q/out (N, H, D); k/v (num_blocks, block_size, KVH, D)
    bt_ptr, seq_lens_ptr, qsl_ptr,       # (B, max_blocks), (B,), (B + 1,) int32
    scale_log2e,                         # softmax scale * log2(e)
    stride_qn, stride_qh, stride_on, stride_oh, stride_kb, stride_ks, stride_kh,
    stride_vb, stride_vs, stride_vh, stride_bt,     # strides in elements; the D stride is 1
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,  # BLOCK_D = next power of two >= HEAD_DIM
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr,   # query heads per KV head, padded to a power of 2
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,   # rows (tokens x group heads), keys per tile
    BLOCK_SIZE: tl.constexpr, PRECISION: tl.constexpr,
):
    # grid: (cdiv(max_query_len, BLOCK_M // GROUP_PAD), B, KVH)
    tile, seq, kvh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    q_start = tl.load(qsl_ptr + seq)
    q_len = tl.load(qsl_ptr + seq + 1) - q_start
    BLOCK_Q: tl.constexpr = BLOCK_M // GROUP_PAD
    t0 = tile * BLOCK_Q
    if t0 >= q_len:                      # grid sized for the longest sequence; shorter ones stop here
        return
    seq_len = tl.load(seq_lens_ptr + seq)
    r = tl.arange(0, BLOCK_M)
    tok, g = t0 + r // GROUP_PAD, r % GROUP_PAD
    row_ok = (tok < q_len) & (g < GROUP)
    head = kvh * GROUP + g
    pos = seq_len - q_len + tok                                         # (BLOCK_M,) absolute positions
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM
    io_mask = row_ok[:, None] & d_ok[None, :]
    q = tl.load(q_ptr + (q_start + tok)[:, None] * stride_qn + head[:, None] * stride_qh + d[None, :],
                mask=io_mask, other=0.0)                                # (BLOCK_M, BLOCK_D)
    m_i = tl.full([BLOCK_M], NEG, tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    # Keys past the tile's last query are never seen: causality shortens the loop, not only masks it.
    kv_end = seq_len - q_len + tl.minimum(t0 + BLOCK_Q, q_len)
    k_head, v_head = k_ptr + kvh * stride_kh, v_ptr + kvh * stride_vh
    bt_row = bt_ptr + seq * stride_bt
    for start in range(0, kv_end, BLOCK_N):
        m_i, l_i, acc = _attend_tile(q, m_i, l_i, acc, k_head, v_head, bt_row, start, kv_end, pos,
                                     d, d_ok, scale_log2e, stride_kb, stride_ks, stride_vb,
                                     stride_vs, BLOCK_N, BLOCK_SIZE, PRECISION)
    out = acc / l_i[:, None]    # every real row saw key 0, so l_i > 0; padding rows are not stored
    tl.store(out_ptr + (q_start + tok)[:, None] * stride_on + head[:, None] * stride_oh + d[None, :],
             out.to(out_ptr.dtype.element_ty), mask=io_mask)


@triton.jit
def _decode_split_kernel(
    q_ptr, k_ptr, v_ptr, part_ptr, lse_ptr,  # q (N, H, D); part (B, H, S, D) fp32; lse (B, H, S) fp32
    bt_ptr, seq_lens_ptr, qsl_ptr, scale_log2e,
    stride_qn, stride_qh, stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh, stride_bt,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, GROUP: tl.constexpr, NUM_SPLITS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_SIZE: tl.constexpr, PRECISION: tl.constexpr,
):
    # grid: (B, KVH, NUM_SPLITS); rows are the GROUP heads of one KV head (BLOCK_M >= 16 for tl.dot)
    seq, kvh, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    q_start = tl.load(qsl_ptr + seq)
    seq_len = tl.load(seq_lens_ptr + seq)
    # Each sequence cuts ITS OWN context into NUM_SPLITS chunks (whole key tiles), so the split count
    # depends only on the batch size and a CUDA graph captured once serves every context length.
    chunk = tl.cdiv(tl.cdiv(seq_len, NUM_SPLITS), BLOCK_N) * BLOCK_N
    lo = split * chunk
    hi = tl.minimum(lo + chunk, seq_len)
    if (tl.load(qsl_ptr + seq + 1) == q_start) | (lo >= hi):   # no query, or context ends before us
        return
    g = tl.arange(0, BLOCK_M)
    row_ok = g < GROUP
    head = kvh * GROUP + g
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM
    io_mask = row_ok[:, None] & d_ok[None, :]
    q = tl.load(q_ptr + q_start * stride_qn + head[:, None] * stride_qh + d[None, :], mask=io_mask,
                other=0.0)
    pos = tl.full([BLOCK_M], 0, tl.int32) + seq_len - 1   # the one query sits at the last position
    m_i = tl.full([BLOCK_M], NEG, tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    k_head, v_head = k_ptr + kvh * stride_kh, v_ptr + kvh * stride_vh
    bt_row = bt_ptr + seq * stride_bt
    for start in range(lo, hi, BLOCK_N):
        m_i, l_i, acc = _attend_tile(q, m_i, l_i, acc, k_head, v_head, bt_row, start, hi, pos,
                                     d, d_ok, scale_log2e, stride_kb, stride_ks, stride_vb,
                                     stride_vs, BLOCK_N, BLOCK_SIZE, PRECISION)
    # Partial result normalised by its own sum, plus its log2-sum-exp2 (in scaled-score units).
    row = (seq * GROUP * tl.num_programs(1) + head) * NUM_SPLITS + split     # index into (B, H, S)
    tl.store(part_ptr + row[:, None] * HEAD_DIM + d[None, :], acc / l_i[:, None], mask=io_mask)
    tl.store(lse_ptr + row, m_i + tl.log2(l_i), mask=row_ok)


@triton.jit
def _decode_reduce_kernel(
    part_ptr, lse_ptr, out_ptr, seq_lens_ptr, qsl_ptr,  # part (B, H, S, D); out (N, H, D)
    stride_on, stride_oh, H: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    NUM_SPLITS: tl.constexpr, SPLITS_PAD: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # grid: (B, H). Reads S*(D+1) floats, writes D: small next to the K/V the splits streamed.
    seq, h = tl.program_id(0), tl.program_id(1)
    q_start = tl.load(qsl_ptr + seq)
    if tl.load(qsl_ptr + seq + 1) == q_start:
        return
    seq_len = tl.load(seq_lens_ptr + seq)
    chunk = tl.cdiv(tl.cdiv(seq_len, NUM_SPLITS), BLOCK_N) * BLOCK_N   # as in the split kernel
    n_valid = tl.cdiv(seq_len, chunk)                        # splits that saw keys (always >= 1)
    s = tl.arange(0, SPLITS_PAD)
    s_ok = s < n_valid
    d = tl.arange(0, BLOCK_D)
    row = (seq * H + h) * NUM_SPLITS + s
    lse = tl.load(lse_ptr + row, mask=s_ok, other=NEG)
    w = tl.where(s_ok, tl.exp2(lse - tl.max(lse, 0)), 0.0)             # each split's share of the sum
    part = tl.load(part_ptr + row[:, None] * HEAD_DIM + d[None, :],
                   mask=s_ok[:, None] & (d[None, :] < HEAD_DIM), other=0.0)   # (SPLITS_PAD, BLOCK_D)
    out = tl.sum(part * w[:, None], 0) / tl.sum(w, 0)
    tl.store(out_ptr + q_start * stride_on + h * stride_oh + d, out.to(out_ptr.dtype.element_ty),
             mask=d < HEAD_DIM)


def _check(q, k_cache, v_cache, block_tables, seq_lens, query_start_loc):
    """Raise ValueError naming the first argument that breaks the contract; return (GROUP, block_size)."""
    if q.dim() != 3 or k_cache.dim() != 4 or v_cache.shape != k_cache.shape:
        raise ValueError(f"q must be (N, H, D) and k_cache/v_cache equal (num_blocks, block_size, KVH, D);"
                         f" got q {tuple(q.shape)}, k_cache {tuple(k_cache.shape)}, "
                         f"v_cache {tuple(v_cache.shape)}")
    (N, H, D), (_, bs, KVH, Dk) = q.shape, k_cache.shape
    if D != Dk or H % KVH:
        raise ValueError(f"q {tuple(q.shape)} and k_cache {tuple(k_cache.shape)} disagree: head_dim "
                         f"must match and num_heads be a multiple of kv_heads")
    if bs < 1 or bs & (bs - 1):
        raise ValueError(f"k_cache block_size must be a power of two, got {bs}")
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"q dtype must be float16, bfloat16 or float32, got {q.dtype}")
    for name, t in (("k_cache", k_cache), ("v_cache", v_cache)):
        if t.dtype != q.dtype and t.dtype not in FP8_CACHE:
            raise ValueError(f"{name} dtype {t.dtype} must be q's ({q.dtype}) or fp8 (kv_cache_dtype)")
    for name, t in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache)):
        if t.stride(-1) != 1:
            raise ValueError(f"{name} must be contiguous in head_dim (stride(-1) == 1), got {t.stride()}")
    B = block_tables.shape[0] if block_tables.dim() == 2 else -1
    for name, t, shape in (("block_tables", block_tables, (B, block_tables.shape[-1])),
                           ("seq_lens", seq_lens, (B,)), ("query_start_loc", query_start_loc, (B + 1,))):
        if t.dtype != torch.int32 or tuple(t.shape) != shape or not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous int32 of shape {shape} (B = rows of "
                             f"block_tables), got {t.dtype} {tuple(t.shape)} strides {t.stride()}")
    check_runnable("q", q, dict(k_cache=k_cache, v_cache=v_cache, block_tables=block_tables,
                                seq_lens=seq_lens, query_start_loc=query_start_loc), BF16_DOT)
    return H // KVH, bs


def _output(q, out):
    if out is None:
        return torch.empty_like(q)
    if out.shape != q.shape or out.dtype != q.dtype or out.device != q.device or out.stride(-1) != 1:
        raise ValueError(f"out must match q ({tuple(q.shape)}, {q.dtype}, {q.device}) with stride(-1) "
                         f"1, got {tuple(out.shape)}, {out.dtype}, {out.device}, {out.stride()}")
    return out


def _config(D, group, decode):
    """Tile sizes. Decode has one token per program: BLOCK_M is just the group, padded to tl.dot's 16."""
    group_pad = triton.next_power_of_2(group)
    block_m = max(16, group_pad) if decode else max(64, group_pad)
    # BLOCK_N: keys per tile. Decode with head_dim <= 64 streamed a few percent faster with 128-key
    # tiles in a one-off tile sweep on an H200 (not kept); larger heads keep 64 (registers).
    block_n = 128 if decode and D <= 64 else 64 if D <= 128 else 32
    return dict(HEAD_DIM=D, BLOCK_D=max(16, triton.next_power_of_2(D)), BLOCK_M=block_m,
                BLOCK_N=block_n), group_pad


@functools.lru_cache(maxsize=None)
def _sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1


def num_kv_splits(programs: int, sm_count: int) -> int:
    """How many splits a decode step should use (1 = the plain kernel), from the batch alone.

    The plain kernel runs B * KVH programs, each streaming its whole context. Below ~2 programs per SM
    most SMs sit idle (and each program's loop is latency-bound), so every context is cut into chunks,
    aiming at ~8 programs per SM. `python -m course_lib bench kernels` times this choice against
    one split (its split_kv section; data/results/gpu_h200_kernels.json: batch 8 at 4k context 53 us
    vs 132 us unsplit on an H200); batch >= 64 is best unsplit (its decode section)."""
    if programs >= 2 * sm_count:
        return 1
    return max(1, min(triton.cdiv(8 * sm_count, programs), MAX_SPLITS))


def paged_decode_split_kv(q, k_cache, v_cache, block_tables, seq_lens, query_start_loc,
                          scale=None, num_splits=None, out=None):
    """Decode (each sequence has q_len == 1, or 0 = skipped) with the context split over programs.

    Pass 1 writes, per (sequence, head, split), the split's normalised output and log-sum-exp;
    pass 2 combines them: out = sum_s exp(lse_s - max) * o_s / sum_s exp(lse_s - max).
    The split count is fixed for the batch from max_blocks * block_size (no host sync), so
    shorter sequences leave their tail splits idle. q_len > 1 is not detected (that needs a sync)."""
    group, bs = _check(q, k_cache, v_cache, block_tables, seq_lens, query_start_loc)
    (N, H, D), B, KVH = q.shape, block_tables.shape[0], k_cache.shape[2]
    if num_splits is not None and num_splits < 1:
        raise ValueError(f"num_splits must be >= 1 or None, got {num_splits}")
    if N > B:
        raise ValueError(f"q has {N} tokens for {B} sequences: split-KV handles decode (q_len <= 1) only")
    out = _output(q, out)
    if N == 0:
        return out
    if num_splits is None:
        num_splits = num_kv_splits(B * KVH, _sm_count(q.device))
    return _split_kv(q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, scale, num_splits,
                     out, group, bs)


def _split_kv(q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, scale, num_splits, out,
              group, bs):
    """Launch both split-KV passes on checked inputs (each check costs host time on every step)."""
    (N, H, D), B, KVH = q.shape, block_tables.shape[0], k_cache.shape[2]
    cfg, _ = _config(D, group, decode=True)
    part = torch.empty(B, H, num_splits, D, device=q.device, dtype=torch.float32)  # (B, H, S, D)
    lse = torch.empty(B, H, num_splits, device=q.device, dtype=torch.float32)     # (B, H, S)
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    precision = "ieee" if q.dtype == torch.float32 else "tf32"   # fp32: no silent TF32 rounding
    _decode_split_kernel[(B, KVH, num_splits)](
        q, k_cache, v_cache, part, lse, block_tables, seq_lens, query_start_loc, scale * LOG2E,
        q.stride(0), q.stride(1), *k_cache.stride()[:3], *v_cache.stride()[:3], block_tables.stride(0),
        GROUP=group, NUM_SPLITS=num_splits, BLOCK_SIZE=bs, PRECISION=precision, **cfg)
    _decode_reduce_kernel[(B, H)](
        part, lse, out, seq_lens, query_start_loc, out.stride(0), out.stride(1), H=H,
        HEAD_DIM=D, BLOCK_D=cfg["BLOCK_D"], NUM_SPLITS=num_splits,
        SPLITS_PAD=triton.next_power_of_2(num_splits), BLOCK_N=cfg["BLOCK_N"])
    return out


def paged_attention_triton(q, k_cache, v_cache, block_tables, seq_lens, query_start_loc,
                           scale=None, max_query_len=None, *, num_splits=None, out=None):
    """Triton version of `paged_attention_ref` (same arguments, same result); returns (N, H, D).

    max_query_len: longest q_len in the batch; pass it (the scheduler knows it) to avoid a host sync.
    A value below the true one leaves queries unwritten.
    num_splits: split-KV for decode-only batches; None = heuristic (`num_kv_splits`), 1 = never.
    out: optional preallocated (N, H, D) result buffer."""
    group, bs = _check(q, k_cache, v_cache, block_tables, seq_lens, query_start_loc)
    (N, H, D), B, KVH = q.shape, block_tables.shape[0], k_cache.shape[2]
    out = _output(q, out)
    if N == 0:
        return out
    if max_query_len is None:
        max_query_len = int((query_start_loc[1:] - query_start_loc[:-1]).max().item())   # host sync
    if num_splits is not None and num_splits < 1:
        raise ValueError(f"num_splits must be >= 1 or None, got {num_splits}")
    if max_query_len == 1 and num_splits != 1:
        splits = num_splits or num_kv_splits(B * KVH, _sm_count(q.device))
        if splits > 1:
            return _split_kv(q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, scale,
                             splits, out, group, bs)
    elif num_splits is not None and num_splits != 1:
        raise ValueError(f"num_splits={num_splits} needs a decode-only batch, got max_query_len "
                         f"{max_query_len}")
    cfg, group_pad = _config(D, group, decode=max_query_len == 1)
    grid = (triton.cdiv(max_query_len, cfg["BLOCK_M"] // group_pad), B, KVH)
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    _paged_attn_kernel[grid](
        q, k_cache, v_cache, out, block_tables, seq_lens, query_start_loc, scale * LOG2E,
        q.stride(0), q.stride(1), out.stride(0), out.stride(1), *k_cache.stride()[:3],
        *v_cache.stride()[:3], block_tables.stride(0), GROUP=group, GROUP_PAD=group_pad,
        BLOCK_SIZE=bs, PRECISION="ieee" if q.dtype == torch.float32 else "tf32", **cfg)
    return out
