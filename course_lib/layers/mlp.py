import torch
from torch import nn
from torch.nn import functional as F

from ..config import ModelConfig


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)). gate and up are one matmul (`gate_up`): one weight read, one launch."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_up = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=cfg.mlp_bias)
        self.down = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=cfg.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)
