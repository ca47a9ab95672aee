"""Matrix-vector product for decode at batch 1 ("GEMV") in Triton (Day 14), next to its torch reference.

At batch 1 a decode step is a chain of matrix-vector products: each weight is read once from memory
and used for one multiply-add, so the step's time is bytes / bandwidth. cuBLAS's matmul picks tiles
made for many rows; at one row it leaves part of the bandwidth unused, most on a layer's small
matrices (an 8 MB projection takes ~2 us at an H200's bandwidth, close to what starting any kernel
costs). This kernel is the plain reduction instead:

    y[n] = sum_k W[n, k] * x[k]
    one program = BLOCK_N rows of W; it walks K in BLOCK_K chunks, loads a (BLOCK_N, BLOCK_K) tile,
    multiplies it by the matching slice of x and sums along K in float32

Many small programs keep many loads in flight on every SM; that is all a memory-bound kernel needs.
From two rows of x up, cuBLAS is faster (the recorded sweep: data/results/gpu_h200_gemv.json), so
the model uses this kernel for exactly one row (``layers/linear.py``).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.nn import functional as F

from .checks import check_runnable


@triton.jit
def _gemv_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr,          # x (K,), w (N, K) with row stride stride_wn, b (N,), y (N,)
    N, K, stride_wn,
    HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # grid: (cdiv(N, BLOCK_N),)
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = n < N
    w_rows = w_ptr + n.to(tl.int64)[:, None] * stride_wn       # int64: N * K passes 2^31 (LM heads)
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        k_ok = k < K
        w = tl.load(w_rows + k[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0.0)
        x = tl.load(x_ptr + k, mask=k_ok, other=0.0)
        acc += w.to(tl.float32) * x.to(tl.float32)[None, :]   # products summed along K once, below
    y = tl.sum(acc, axis=1)
    if HAS_BIAS:
        y += tl.load(b_ptr + n, mask=n_ok, other=0.0).to(tl.float32)
    tl.store(y_ptr + n, y.to(y_ptr.dtype.element_ty), mask=n_ok)


def gemv_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """What this replaces: F.linear (cuBLAS on a GPU)."""
    return F.linear(x, weight, bias)


def gemv_config(N: int, K: int) -> dict:
    """Tile sizes: 2 rows of W per program (many programs), K in chunks of up to 1024, and warps for
    16 elements (two 16-byte loads of bf16) per thread per chunk. One rule for every shape: in the
    recorded sweep (data/results/gpu_h200_gemv.json) it is within ~10% of the best of 36 configs on
    each projection and LM head of llama-3.2-1b and qwen3-0.6b, where tuning each shape apart is not
    worth a table."""
    block_k = min(1024, triton.next_power_of_2(K))
    return dict(BLOCK_N=2, BLOCK_K=block_k, num_warps=max(1, 2 * block_k // (32 * 16)))


def gemv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
         config: dict | None = None) -> torch.Tensor:
    """Triton version of `gemv_ref` for one row: x (..., K) with one row in all -> (..., N).
    ``config`` overrides the tile sizes of `gemv_config` (BLOCK_N, BLOCK_K, num_warps)."""
    if x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"x dtype must be float16, bfloat16 or float32, got {x.dtype}")
    if weight.dim() != 2 or weight.dtype != x.dtype or weight.stride(1) != 1:
        raise ValueError(f"weight must be a 2-D {x.dtype} matrix (N, K) with contiguous rows, got "
                         f"{weight.dtype} shape {tuple(weight.shape)} strides {weight.stride()}")
    N, K = weight.shape
    if x.shape[-1] != K or x.numel() != K:
        raise ValueError(f"x must hold one row of K = {K} elements (weight is {tuple(weight.shape)}), got "
                         f"shape {tuple(x.shape)}")
    if bias is not None and (bias.shape != (N,) or bias.dtype != x.dtype):
        raise ValueError(f"bias must be {x.dtype} of shape ({N},), got {bias.dtype} {tuple(bias.shape)}")
    check_runnable("x", x, {"weight": weight, "bias": bias})
    x1 = x.reshape(K)
    if x1.stride(0) != 1:
        x1 = x1.contiguous()
    y = torch.empty(*x.shape[:-1], N, device=x.device, dtype=x.dtype)
    cfg = dict(gemv_config(N, K), **(config or {}))
    _gemv_kernel[(triton.cdiv(N, cfg["BLOCK_N"]),)](
        x1, weight, bias if bias is not None else weight, y, N, K, weight.stride(0),
        HAS_BIAS=bias is not None, **cfg)
    return y
