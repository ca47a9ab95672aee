"""nn.Linear that switches to the Triton GEMV kernel (Day 14) for one row of input."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class Linear(nn.Linear):
    """``y = x W^T + b``. With ``gemv`` on, one row of input (a decode step at batch 1) runs through
    the Triton GEMV kernel (course_lib/kernels/gemv.py), anything larger through cuBLAS.

    ``gemv`` is off until ``LlamaModel.use_fused_kernels`` sets it. Under CUDA graphs the choice is
    made once, at capture: a graph's number of rows is fixed."""
    gemv = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gemv and x.numel() == x.shape[-1] > 0:
            from ..kernels.gemv import gemv
            return gemv(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)
