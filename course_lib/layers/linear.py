"""nn.Linear that switches to the Triton GEMV kernel (Day 14) for one row of input, and on a CPU
computes the same product with the weight as the left operand.

Why the CPU order matters: ``F.linear(x, W)`` with few rows of x (decode) hands MKL an M x K by K x N
product with tiny M, and on the 2-core AMD EPYC of CI (torch's wheels link Intel MKL) that path
streams the weights at 5-12 GB/s; ``W @ x^T`` is the same GEMM transposed (C^T = W x^T) with the big
operand first, and there MKL runs 2.3-3.7x faster at 1-4 rows and 1.1-1.3x at 8-48 (one row goes to
MKL's GEMV, just as slow, so it is computed as two; odd row counts are padded to a multiple of 8).
``python -m course_lib bench linear`` measures both orders on the model's own matrices on this
machine; data/results/cpu_linear.json is the recorded run.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

# Rows of input up to which a CPU linear layer computes (W x^T)^T; above it F.linear, whose GEMM is
# as fast or faster (prefill). Set to 0 to turn the CPU path off (the reference in the tests).
CPU_WEIGHT_FIRST_MAX_ROWS = 128


def padded_rows(m: int) -> int:
    """The row count `linear_weight_first` computes for m rows: 2, 4, then multiples of 8. MKL's
    GEMM on this CPU takes about as long for 15 or 31 columns as for 32 or 40 (the recorded sweep)."""
    return 2 if m <= 2 else 4 if m <= 4 else -(-m // 8) * 8


def linear_weight_first(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None):
    """``F.linear(x, weight, bias)`` computed as ``(weight @ x^T)^T``: x (..., K), weight (N, K).

    The rows are zero-padded to `padded_rows` (one row included: MKL's GEMM on two columns beats its
    GEMV on one); the padding's outputs are dropped."""
    rows = x.reshape(-1, x.shape[-1])                                   # (M, K)
    m = rows.shape[0]
    if padded_rows(m) != m:
        rows = torch.cat([rows, rows.new_zeros(padded_rows(m) - m, rows.shape[1])])
    if bias is None:
        out = torch.mm(weight, rows.t())                                # (N, M padded)
    else:
        out = torch.addmm(bias[:, None], weight, rows.t())
    return out[:, :m].t().contiguous().view(*x.shape[:-1], weight.shape[0])


class Linear(nn.Linear):
    """``y = x W^T + b``. With ``gemv`` on, one row of input (a decode step at batch 1) runs through
    the Triton GEMV kernel (course_lib/kernels/gemv.py), anything larger through cuBLAS.
    ``gemv`` is off until ``LlamaModel.use_fused_kernels`` sets it. Under CUDA graphs the choice is
    made once, at capture: a graph's number of rows is fixed. On a CPU, up to
    ``CPU_WEIGHT_FIRST_MAX_ROWS`` rows run through `linear_weight_first` (the module docstring says why)."""
    gemv = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gemv and x.numel() == x.shape[-1] > 0:
            from ..kernels.gemv import gemv
            return gemv(x, self.weight, self.bias)
        if x.device.type == "cpu" and 0 < x.numel() <= CPU_WEIGHT_FIRST_MAX_ROWS * x.shape[-1]:
            return linear_weight_first(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)
