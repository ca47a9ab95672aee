import torch
from torch import nn


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * weight, computed in float32 (as HF does) and cast back."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)

    def add_norm(self, x: torch.Tensor, residual: torch.Tensor | None):
        """(forward(x + residual), x + residual) in one Triton kernel (Day 9); (forward(x), x) if
        residual is None.

        The fused decoder path carries the residual stream separately so that the add which ends one
        half-layer and the norm which starts the next read and write the activations once."""
        from ..kernels.rmsnorm import add_rmsnorm   # Triton loads on first use, not with the model
        return add_rmsnorm(x, residual, self.weight, self.eps)
