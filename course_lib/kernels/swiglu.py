"""Fused SwiGLU activation in Triton (Day 9): silu(gate) * up, next to its torch reference.

The MLP computes gate and up with one matmul (`gate_up`, (N, 2f)); between it and `down` sits
an elementwise step that unfused costs three passes: chunk is free (a view), silu reads Nf and writes
Nf, the multiply reads 2Nf and writes Nf. Fused: read 2Nf once, write Nf once.

    gate_up row:  [ gate_0 ... gate_{f-1} | up_0 ... up_{f-1} ]  ->  out row: silu(gate_j) * up_j

Rounding follows `F.silu(gate) * up` in the input dtype: silu in float32 rounded to the dtype, then
the product rounded once more. Only the exp differs (the GPU's fast exp2 vs libm).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.nn import functional as F

from .checks import check_runnable

MAX_BLOCK = 1024   # columns per program: long rows (f = 8192) get several programs each


@triton.jit
def _silu_mul_kernel(
    gu_ptr, out_ptr,                 # gate_up (N, 2f), out (N, f)
    stride_gu, stride_out, f,        # row strides in elements; the column stride is 1
    BLOCK: tl.constexpr,
):
    # grid: (N, cdiv(f, BLOCK)): one row, one column tile per program
    row = tl.program_id(0).to(tl.int64)     # int64: row * stride overflows int32 for big prefills
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < f
    gate = tl.load(gu_ptr + row * stride_gu + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(gu_ptr + row * stride_gu + f + cols, mask=mask, other=0.0)
    act = (gate / (1.0 + tl.exp(-gate))).to(up.dtype)      # silu, rounded as F.silu rounds
    out = act.to(tl.float32) * up.to(tl.float32)
    tl.store(out_ptr + row * stride_out + cols, out.to(out_ptr.dtype.element_ty), mask=mask)


def silu_mul_ref(gate_up: torch.Tensor) -> torch.Tensor:
    """The unfused torch ops of layers/mlp.py: (..., 2f) -> (..., f)."""
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """Triton version of `silu_mul_ref`: (..., 2f) -> (..., f), gate first, up second."""
    if gate_up.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"gate_up dtype must be float16, bfloat16 or float32, got {gate_up.dtype}")
    if gate_up.shape[-1] % 2:
        raise ValueError(f"gate_up's last dim must be even (gate and up side by side), got "
                         f"{tuple(gate_up.shape)}")
    check_runnable("gate_up", gate_up, {})
    f = gate_up.shape[-1] // 2
    gu = gate_up.reshape(-1, 2 * f)                              # (N, 2f), a view for matmul output
    if gu.stride(-1) != 1:
        gu = gu.contiguous()
    out = torch.empty(*gate_up.shape[:-1], f, device=gate_up.device, dtype=gate_up.dtype)
    out2 = out.view(-1, f)                                       # (N, f)
    N = gu.shape[0]
    if N == 0 or f == 0:
        return out
    block = min(MAX_BLOCK, triton.next_power_of_2(f))
    _silu_mul_kernel[(N, triton.cdiv(f, block))](gu, out2, gu.stride(0), out2.stride(0), f,
                                                 BLOCK=block, num_warps=4 if block >= 512 else 1)
    return out
