"""Fused residual-add + RMSNorm in Triton (Day 9), next to its torch reference.

A decoder layer ends each half with ``h = h + f(h)`` and starts the next with ``norm(h)``. Unfused,
that is ~8 elementwise launches (add, float cast, square, mean, rsqrt, multiply, cast, weight multiply),
each reading and writing the whole (N, d) activation. Fused, one program per row reads x and the
residual once and writes y and the new residual once:

    unfused:  r = x + res            read 2Nd, write Nd      then rmsnorm(r): ~6 passes over Nd
    fused:    r = x + res; y = norm(r) * w                   read 2Nd + d, write 2Nd

Rounding follows the unfused model exactly: r is rounded to the input dtype (``h = h + attn(...)``),
the norm is computed in float32 and cast back, and only then multiplied by the weight
(``weight * x.to(dtype)``, course_lib/layers/norm.py). Only the order of the row sum differs.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .checks import check_runnable

MAX_FUSED_BYTES = 65536   # a whole row lives in registers; beyond this it would spill (tutorial 05)


@triton.jit
def _add_rmsnorm_kernel(
    x_ptr, res_ptr, w_ptr, y_ptr, r_ptr,   # x, res, y, r: (N, d) rows; w: (d,)
    stride_x, stride_res, stride_y, stride_r,  # row strides in elements; the column stride is 1
    d, eps,
    HAS_RESIDUAL: tl.constexpr,            # False: r = x (the first layer has no residual yet)
    BLOCK: tl.constexpr,                   # next power of two >= d: one tile holds the whole row
):
    # grid: (N,), one program per row
    row = tl.program_id(0).to(tl.int64)    # int64: row * stride overflows int32 past 2^31 elements
    cols = tl.arange(0, BLOCK)
    mask = cols < d
    x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        res = tl.load(res_ptr + row * stride_res + cols, mask=mask, other=0.0)
        # add in float32, round once to the input dtype: what torch does for `x + res` in bf16/fp16
        r = (x.to(tl.float32) + res.to(tl.float32)).to(x.dtype)
        tl.store(r_ptr + row * stride_r + cols, r, mask=mask)
    else:
        r = x
    rf = r.to(tl.float32)
    ms = tl.sum(rf * rf, axis=0) / d       # padding columns loaded as 0 add nothing to the sum
    normed = (rf * tl.rsqrt(ms + eps)).to(x.dtype)             # cast back before the weight, as HF
    w = tl.load(w_ptr + cols, mask=mask, other=0.0)
    y = normed.to(tl.float32) * w.to(tl.float32)               # one rounding, like torch's bf16 multiply
    tl.store(y_ptr + row * stride_y + cols, y.to(y_ptr.dtype.element_ty), mask=mask)


def add_rmsnorm_ref(x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor,
                    eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The unfused torch ops: r = x + residual (or x), y = RMSNorm(r) exactly as layers/norm.py."""
    r = x if residual is None else x + residual
    rf = r.float()
    normed = rf * torch.rsqrt(rf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * normed.to(r.dtype), r


def _check(x, residual, weight):
    """Raise ValueError naming the first argument that breaks the contract."""
    d = x.shape[-1]
    if x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"x dtype must be float16, bfloat16 or float32, got {x.dtype}")
    if residual is not None and (residual.shape != x.shape or residual.dtype != x.dtype):
        raise ValueError(f"residual must match x ({tuple(x.shape)}, {x.dtype}), got "
                         f"{tuple(residual.shape)}, {residual.dtype}")
    if weight.shape != (d,) or weight.stride(0) != 1:
        raise ValueError(f"weight must be contiguous of shape ({d},) (the last dim of x), got "
                         f"{tuple(weight.shape)} strides {weight.stride()}")
    if d * x.element_size() > MAX_FUSED_BYTES:
        raise ValueError(f"rows of {d} {x.dtype} elements exceed {MAX_FUSED_BYTES} bytes: this kernel "
                         f"keeps a whole row in registers")
    check_runnable("x", x, {"residual": residual, "weight": weight})


def _rows(t: torch.Tensor) -> torch.Tensor:
    """(..., d) -> (N, d) with unit column stride (a view when possible, else a copy)."""
    t = t.reshape(-1, t.shape[-1])
    return t if t.stride(-1) == 1 else t.contiguous()


def add_rmsnorm(x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor,
                eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton version of `add_rmsnorm_ref` (same arguments, same result): returns (y, r).

    x, residual: (..., d); residual None means r = x (and r is x itself, nothing is written).
    y has the dtype of ``weight * x`` (torch's promotion), r the dtype of x."""
    _check(x, residual, weight)
    shape, d = x.shape, x.shape[-1]
    x2 = _rows(x)                                                      # (N, d)
    res2 = _rows(residual) if residual is not None else x2
    y = torch.empty(shape, device=x.device, dtype=torch.promote_types(weight.dtype, x.dtype))
    r = torch.empty_like(x) if residual is not None else x
    y2, r2 = y.view(-1, d), (r.view(-1, d) if residual is not None else x2)
    N = x2.shape[0]
    if N == 0:
        return y, r
    block = triton.next_power_of_2(d)
    # ~8 elements per thread: enough loads in flight to cover memory latency, few registers each
    num_warps = min(max(block // 256, 1), 8)
    _add_rmsnorm_kernel[(N,)](
        x2, res2, weight, y2, r2, x2.stride(0), res2.stride(0), y2.stride(0), r2.stride(0), d, eps,
        HAS_RESIDUAL=residual is not None, BLOCK=block, num_warps=num_warps)
    return y, r
