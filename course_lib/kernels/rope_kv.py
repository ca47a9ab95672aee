"""Fused RoPE + paged KV-cache write in Triton (Day 9), next to its torch reference.

Unfused, one attention layer of a paged step rotates q and k (5 launches each: a negate, a cat, two
multiplies and an add; the slices are views), then sanitises k and v (`nan_to_num`) and scatters them
into the cache by slot: 14 launches, each a full pass over its tensors. Fused, one program per token reads q, k, v, cos and sin once, writes q back in place
and writes the rotated k and v straight into their cache slot:

    q (N, H, D)    --rotate-->  q (in place)
    k (N, KVH, D)  --rotate, sanitise-->  k_cache.view(slots, KVH, D)[slot_mapping]
    v (N, KVH, D)  --sanitise------------>  v_cache.view(slots, KVH, D)[slot_mapping]

RoPE is the "rotate half" layout of layers/rotary.py: dim i pairs with dim i + D/2, and cos/sin are
(N, D) with both halves present (the kernel reads both, as the torch ops do). Rounding follows the
torch ops in the input dtype: x * cos and rotate_half(x) * sin are each rounded, then their sum.
Qwen3's per-head q/k RMSNorm happens before this kernel (it takes q and k after the norm).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .checks import FP8_CACHE, check_runnable


@triton.jit
def _rotate(x_ptr, c1, c2, s1, s2, heads, i, HALF: tl.constexpr, mask):
    """Load a (HEADS_PAD, HALF_PAD) pair of half-tiles at x_ptr, return them rotated (input dtype).

    x * cos + rotate_half(x) * sin with rotate_half(x) = [-x2, x1]; each product is rounded to the
    dtype before the add, as the unfused torch ops round them."""
    x1 = tl.load(x_ptr + heads + i, mask=mask, other=0.0)
    x2 = tl.load(x_ptr + heads + HALF + i, mask=mask, other=0.0)
    dt = x1.dtype
    a1, a2 = x1.to(tl.float32), x2.to(tl.float32)
    o1 = (a1 * c1).to(dt).to(tl.float32) - (a2 * s1).to(dt).to(tl.float32)
    o2 = (a2 * c2).to(dt).to(tl.float32) + (a1 * s2).to(dt).to(tl.float32)
    return o1.to(dt), o2.to(dt)


@triton.jit
def _finite(x, MAX: tl.constexpr):
    """torch.nan_to_num on values already rounded to the cache dtype: NaN -> 0, +-inf -> +-MAX."""
    x = x.to(tl.float32)
    x = tl.where(x != x, 0.0, x)
    return tl.minimum(tl.maximum(x, -MAX), MAX)


@triton.jit
def _rope_kv_kernel(
    q_ptr, k_ptr, v_ptr, cos_ptr, sin_ptr,    # q (N, H, D), in place; k, v (N, KVH, D); cos, sin (N, D)
    kc_ptr, vc_ptr, slot_ptr,                 # caches viewed as (slots, KVH, D); slot_mapping (N,)
    stride_qn, stride_qh, stride_kn, stride_kh, stride_vn, stride_vh, stride_cn, stride_sn,
    stride_kcs, stride_kch, stride_vcs, stride_vch,   # strides in elements; the D stride is 1
    H, KVH,
    HALF: tl.constexpr, HALF_PAD: tl.constexpr,       # D / 2 and its next power of two
    H_PAD: tl.constexpr, KVH_PAD: tl.constexpr,       # head counts padded to powers of two
    MAX: tl.constexpr,                                # largest finite value of the cache dtype
):
    # grid: (N,), one program per token: all its heads of q, k and v
    tok = tl.program_id(0).to(tl.int64)
    i = tl.arange(0, HALF_PAD)
    i_ok = i < HALF
    c1 = tl.load(cos_ptr + tok * stride_cn + i, mask=i_ok, other=0.0).to(tl.float32)[None, :]
    c2 = tl.load(cos_ptr + tok * stride_cn + HALF + i, mask=i_ok, other=0.0).to(tl.float32)[None, :]
    s1 = tl.load(sin_ptr + tok * stride_sn + i, mask=i_ok, other=0.0).to(tl.float32)[None, :]
    s2 = tl.load(sin_ptr + tok * stride_sn + HALF + i, mask=i_ok, other=0.0).to(tl.float32)[None, :]
    i = i[None, :]

    h = tl.arange(0, H_PAD)[:, None]                                  # (H_PAD, 1)
    q_mask = (h < H) & i_ok[None, :]
    q_row = q_ptr + tok * stride_qn
    q1, q2 = _rotate(q_row, c1, c2, s1, s2, h * stride_qh, i, HALF, q_mask)
    tl.store(q_row + h * stride_qh + i, q1, mask=q_mask)
    tl.store(q_row + h * stride_qh + HALF + i, q2, mask=q_mask)

    slot = tl.load(slot_ptr + tok).to(tl.int64)      # int64: slot * stride passes 2^31 in big pools
    kh = tl.arange(0, KVH_PAD)[:, None]
    kv_mask = (kh < KVH) & i_ok[None, :]
    k1, k2 = _rotate(k_ptr + tok * stride_kn, c1, c2, s1, s2, kh * stride_kh, i, HALF, kv_mask)
    kc = kc_ptr + slot * stride_kcs + kh * stride_kch + i
    tl.store(kc, _finite(k1, MAX).to(kc_ptr.dtype.element_ty), mask=kv_mask)
    tl.store(kc + HALF, _finite(k2, MAX).to(kc_ptr.dtype.element_ty), mask=kv_mask)

    v_row = v_ptr + tok * stride_vn + kh * stride_vh + i
    vc = vc_ptr + slot * stride_vcs + kh * stride_vch + i
    for half in tl.static_range(2):                  # v is copied as is, in two half-tiles
        v = tl.load(v_row + half * HALF, mask=kv_mask, other=0.0)
        tl.store(vc + half * HALF, _finite(v, MAX).to(vc_ptr.dtype.element_ty), mask=kv_mask)


def rope_ref(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """layers/rotary.apply_rope on (N, heads, D), cos/sin (N, D); restated, as kernels sit below layers."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos[:, None, :] + rotated * sin[:, None, :]          # cos (N, D) -> (N, 1, D)


def rope_write_kv_ref(q, k, v, cos, sin, k_cache, v_cache, slot_mapping):
    """The unfused torch ops (layers/attention.py + PagedAttentionContext.attend); returns rotated q.

    q (N, H, D), k/v (N, KVH, D), cos/sin (N, D); k_cache/v_cache (num_blocks, block_size, KVH, D)."""
    q, k = rope_ref(q, cos, sin), rope_ref(k, cos, sin)
    from ..kv.paged import to_cache
    k_cache.view(-1, *k_cache.shape[2:])[slot_mapping] = to_cache(k, k_cache.dtype)      # (N, KVH, D)
    v_cache.view(-1, *v_cache.shape[2:])[slot_mapping] = to_cache(v, v_cache.dtype)
    return q


def _check(q, k, v, cos, sin, k_cache, v_cache, slot_mapping):
    """Raise ValueError naming the first argument that breaks the contract."""
    if q.dim() != 3 or k.dim() != 3 or v.shape != k.shape or k_cache.dim() != 4 \
            or v_cache.shape != k_cache.shape:
        raise ValueError(f"q must be (N, H, D), k and v equal (N, KVH, D), k_cache and v_cache equal "
                         f"(num_blocks, block_size, KVH, D); got q {tuple(q.shape)}, k {tuple(k.shape)},"
                         f" v {tuple(v.shape)}, k_cache {tuple(k_cache.shape)}, "
                         f"v_cache {tuple(v_cache.shape)}")
    (N, H, D), KVH = q.shape, k.shape[1]
    if k.shape[0] != N or k.shape[2] != D or D % 2 or k_cache.shape[2:] != (KVH, D):
        raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)} and k_cache {tuple(k_cache.shape)} "
                         f"disagree: N, KV heads and head_dim must match, and head_dim be even")
    for name, t in (("cos", cos), ("sin", sin)):
        if t.shape != (N, D) or t.stride(-1) != 1:
            raise ValueError(f"{name} must be ({N}, {D}) with stride(-1) 1, got {tuple(t.shape)} "
                             f"strides {t.stride()}")
    if slot_mapping.shape != (N,) or slot_mapping.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"slot_mapping must be int32/int64 of shape ({N},), got {slot_mapping.dtype} "
                         f"{tuple(slot_mapping.shape)}")
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"q dtype must be float16, bfloat16 or float32, got {q.dtype}")
    for name, t in (("k", k), ("v", v), ("cos", cos), ("sin", sin)):
        if t.dtype != q.dtype:
            raise ValueError(f"{name} dtype {t.dtype} differs from q dtype {q.dtype}")
    for name, t in (("k_cache", k_cache), ("v_cache", v_cache)):
        if t.dtype != q.dtype and t.dtype not in FP8_CACHE:
            raise ValueError(f"{name} dtype {t.dtype} must be q's ({q.dtype}) or fp8 (kv_cache_dtype)")
    for name, t in (("q", q), ("k", k), ("v", v), ("k_cache", k_cache), ("v_cache", v_cache)):
        if t.stride(-1) != 1:
            raise ValueError(f"{name} must be contiguous in head_dim (stride(-1) == 1), got {t.stride()}")
    check_runnable("q", q, dict(k=k, v=v, cos=cos, sin=sin, k_cache=k_cache, v_cache=v_cache,
                                slot_mapping=slot_mapping))


def rope_write_kv(q, k, v, cos, sin, k_cache, v_cache, slot_mapping):
    """Triton version of `rope_write_kv_ref` (same arguments, same effect): rotates q in place and
    returns it; writes rotated k and v (NaN/inf sanitised) into the caches at ``slot_mapping``.

    Every slot must be a real slot of the cache (the engine sends padding rows to a scratch block):
    like the reference, the kernel does not check the values, which would cost a host sync."""
    _check(q, k, v, cos, sin, k_cache, v_cache, slot_mapping)
    (N, H, D), KVH = q.shape, k.shape[1]
    if N == 0:
        return q
    kc = k_cache.view(-1, KVH, D)                      # (slots, KVH, D); fails if blocks are not dense
    vc = v_cache.view(-1, KVH, D)
    half = D // 2
    _rope_kv_kernel[(N,)](
        q, k, v, cos, sin, kc, vc, slot_mapping,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        cos.stride(0), sin.stride(0), kc.stride(0), kc.stride(1), vc.stride(0), vc.stride(1), H, KVH,
        HALF=half, HALF_PAD=triton.next_power_of_2(half), H_PAD=triton.next_power_of_2(H),
        KVH_PAD=triton.next_power_of_2(KVH), MAX=torch.finfo(k_cache.dtype).max,
        num_warps=4 if H * D >= 2048 else 1)
    return q
