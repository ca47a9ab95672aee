import torch
from torch import nn
from torch.nn import functional as F

from ..config import ModelConfig
from .linear import Linear


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)). gate and up are one matmul (`gate_up`): one weight read, one launch.

    ``fused`` (set by ``LlamaModel.use_fused_kernels``): silu(gate) * up in one Triton kernel (Day 9)."""
    fused = False

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_up = Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=cfg.mlp_bias)
        self.down = Linear(cfg.intermediate_size, cfg.hidden_size, bias=cfg.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:      # one pass (read 2f, write f per token) instead of silu's and the multiply's
            from ..kernels.swiglu import silu_mul
            return self.down(silu_mul(self.gate_up(x)))
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)
