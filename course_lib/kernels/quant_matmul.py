"""Weight-only quantized matmul in Triton (Day 18): ``y = x W^T`` where W is stored as int8 or packed
int4 with a float scale per group of ``group_size`` weights along K, next to its torch reference.

At batch 1 a decode step reads every weight once (Day 02's roofline): the time is bytes / bandwidth.
Storing W in 8 or 4 bits reads 2 or 4 times fewer bytes than bf16, *if* the weights are turned back
into floats where they are used, in registers, and never written out as a float matrix. The torch
reference cannot do that: it dequantizes the whole matrix into memory, then multiplies
(``F.linear(x, dequantize(...))``), so it reads the small matrix and writes and reads a big one.

    w[n, k] = q[n, k] * scale[n, k // group_size]        q in [-128, 127] (int8) or [-8, 7] (int4)

int4 is packed two to a byte along K: byte k // 2 of row n holds q[n, k] + 8 in its low nibble for
even k and in its high nibble for odd k (layers/quant.py packs it).

Two kernels:
    one row of x (decode at batch 1)   the GEMV of kernels/gemv.py with the dequantization inside
                                       its loop: BLOCK_N rows of W per program, K in BLOCK_K chunks
    more rows                          a tiled matmul: (BLOCK_M, BLOCK_K) of x times a dequantized
                                       (BLOCK_N, BLOCK_K) tile of W, tl.dot, float32 accumulation
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.nn import functional as F

from .checks import BF16_DOT, check_runnable


@triton.jit
def _dequant_tile(q_ptr, s_ptr, n, k, mask, stride_qn, stride_sn, GROUP: tl.constexpr, BITS: tl.constexpr):
    """The float32 weights W[n, k] of an (n, k) tile (n a column of rows, k a row of columns)."""
    rows = n.to(tl.int64)[:, None]
    if BITS == 8:
        q = tl.load(q_ptr + rows * stride_qn + k[None, :], mask=mask, other=0).to(tl.float32)
    else:
        byte = tl.load(q_ptr + rows * stride_qn + (k // 2)[None, :], mask=mask, other=0).to(tl.int32)
        q = ((byte >> ((k % 2) * 4)[None, :]) & 15).to(tl.float32) - 8.0
    s = tl.load(s_ptr + rows * stride_sn + (k // GROUP)[None, :], mask=mask, other=0.0).to(tl.float32)
    return q * s


@triton.jit
def _wq_gemv_kernel(x_ptr, q_ptr, s_ptr, b_ptr, y_ptr, N, K, stride_qn, stride_sn,
                    GROUP: tl.constexpr, BITS: tl.constexpr, HAS_BIAS: tl.constexpr,
                    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    # grid: (cdiv(N, BLOCK_N),); x is one row of K
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = n < N
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        k_ok = k < K
        w = _dequant_tile(q_ptr, s_ptr, n, k, n_ok[:, None] & k_ok[None, :], stride_qn, stride_sn, GROUP, BITS)
        x = tl.load(x_ptr + k, mask=k_ok, other=0.0).to(tl.float32)
        acc += w * x[None, :]
    y = tl.sum(acc, axis=1)
    if HAS_BIAS:
        y += tl.load(b_ptr + n, mask=n_ok, other=0.0).to(tl.float32)
    tl.store(y_ptr + n, y.to(y_ptr.dtype.element_ty), mask=n_ok)


@triton.jit
def _wq_matmul_kernel(x_ptr, q_ptr, s_ptr, b_ptr, y_ptr, M, N, K, stride_xm, stride_qn, stride_sn, stride_ym,
                      GROUP: tl.constexpr, BITS: tl.constexpr, HAS_BIAS: tl.constexpr, IEEE: tl.constexpr,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    # grid: (cdiv(M, BLOCK_M), cdiv(N, BLOCK_N))
    m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok, n_ok = m < M, n < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        k_ok = k < K
        x = tl.load(x_ptr + m.to(tl.int64)[:, None] * stride_xm + k[None, :], mask=m_ok[:, None] & k_ok[None, :],
                    other=0.0)
        w = _dequant_tile(q_ptr, s_ptr, n, k, n_ok[:, None] & k_ok[None, :], stride_qn, stride_sn, GROUP, BITS)
        if IEEE:                                            # float32 activations: no TF32 rounding
            acc += tl.dot(x.to(tl.float32), tl.trans(w), input_precision="ieee")
        else:                                               # the weights in x's dtype, as the reference
            acc += tl.dot(x, tl.trans(w.to(x.dtype)))
    if HAS_BIAS:
        acc += tl.load(b_ptr + n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + m.to(tl.int64)[:, None] * stride_ym + n[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=m_ok[:, None] & n_ok[None, :])


def dequantize_ref(qweight: torch.Tensor, scales: torch.Tensor, bits: int, group_size: int, K: int,
                   dtype: torch.dtype) -> torch.Tensor:
    """The float (N, K) matrix the packed weights stand for, in ``dtype`` (computed in float32)."""
    N, groups = qweight.shape[0], scales.shape[1]
    if bits == 8:
        q = qweight.float()
    else:
        q = torch.stack([qweight & 15, qweight >> 4], dim=-1).view(N, -1)[:, :K].float() - 8
    if groups * group_size != K:                                  # a short last group: pad it
        q = F.pad(q, (0, groups * group_size - K))
    w = q.view(N, groups, group_size) * scales.float()[:, :, None]
    return w.view(N, -1)[:, :K].to(dtype)


def wq_linear_ref(x, qweight, scales, bits, group_size, K, bias=None):
    """What the kernels compute: F.linear with the dequantized matrix (written to memory first)."""
    return F.linear(x, dequantize_ref(qweight, scales, bits, group_size, K, x.dtype), bias)


def wq_linear(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, bits: int, group_size: int,
              K: int, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Triton version of `wq_linear_ref`: x (..., K) float16/bfloat16/float32 -> (..., N) in x's dtype.
    ``qweight`` is (N, K) int8 for bits 8, (N, ceil(K / 2)) uint8 for bits 4; ``scales`` (N, ceil(K /
    group_size)) float."""
    if x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"x dtype must be float16, bfloat16 or float32, got {x.dtype}")
    if x.shape[-1] != K:
        raise ValueError(f"x must end in K = {K}, got shape {tuple(x.shape)}")
    N = qweight.shape[0]
    check_runnable("x", x, {"qweight": qweight, "scales": scales, "bias": bias}, BF16_DOT)
    rows = x.reshape(-1, K)
    if rows.stride(-1) != 1:
        rows = rows.contiguous()
    M = rows.shape[0]
    y = torch.empty(M, N, device=x.device, dtype=x.dtype)
    if M == 0:
        return y.view(*x.shape[:-1], N)
    common = dict(GROUP=group_size, BITS=bits, HAS_BIAS=bias is not None)
    b = bias if bias is not None else scales
    if M == 1:
        block_k = min(256, triton.next_power_of_2(K))
        _wq_gemv_kernel[(triton.cdiv(N, 8),)](rows, qweight, scales, b, y, N, K, qweight.stride(0),
                                              scales.stride(0), **common, BLOCK_N=8, BLOCK_K=block_k,
                                              num_warps=4)
    else:
        block_m = 16 if M <= 16 else 32 if M <= 32 else 64
        grid = (triton.cdiv(M, block_m), triton.cdiv(N, 64))
        _wq_matmul_kernel[grid](rows, qweight, scales, b, y, M, N, K, rows.stride(0), qweight.stride(0),
                                scales.stride(0), y.stride(0), **common, IEEE=x.dtype == torch.float32,
                                BLOCK_M=block_m, BLOCK_N=64, BLOCK_K=64, num_warps=4)
    return y.view(*x.shape[:-1], N)
