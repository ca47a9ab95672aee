"""Rotary position embeddings (RoPE), with Llama 3's frequency rescaling for long context."""
import math

import torch
from torch import nn

from ..config import ModelConfig


def rope_inv_freq(cfg: ModelConfig) -> torch.Tensor:
    """Angular frequency of each rotated pair: theta^(-2i/d) for i < d/2, rescaled for Llama 3."""
    d = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float64, device="cpu") / d))
    scaling = cfg.rope_scaling
    if not scaling:
        return inv_freq.float()
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind == "linear":
        return (inv_freq / scaling["factor"]).float()
    if kind != "llama3":
        raise ValueError(f"rope_scaling.rope_type must be one of ['default', 'linear', 'llama3'], got {kind!r}")
    # Llama 3: long wavelengths (slow-turning pairs) are stretched by `factor` so positions past the
    # training length stay in the range the model saw; short wavelengths are kept; between the two
    # thresholds the frequency is blended linearly in 1/wavelength.
    factor = scaling["factor"]
    old_ctx = scaling["original_max_position_embeddings"]
    low_wl = old_ctx / scaling["low_freq_factor"]    # wavelengths above this: fully scaled
    high_wl = old_ctx / scaling["high_freq_factor"]  # wavelengths below this: untouched
    wavelen = 2 * math.pi / inv_freq
    blend = (old_ctx / wavelen - scaling["low_freq_factor"]) / (
        scaling["high_freq_factor"] - scaling["low_freq_factor"])
    blended = (1 - blend) * inv_freq / factor + blend * inv_freq
    out = torch.where(wavelen > low_wl, inv_freq / factor, inv_freq)
    out = torch.where((wavelen <= low_wl) & (wavelen >= high_wl), blended, out)
    return out.float()


class RotaryEmbedding(nn.Module):
    """Maps positions to (cos, sin) of shape (..., head_dim), computed on the fly in float32.

    The frequencies are deliberately not a buffer: ``model.to(torch.bfloat16)`` would round them, and
    at position 10,000 a 3-significant-digit frequency is a visibly wrong angle. They stay float32,
    copied once to each device they are used on."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.inv_freq = rope_inv_freq(cfg)
        self._per_device: dict[torch.device, torch.Tensor] = {}

    def forward(self, positions: torch.Tensor, dtype: torch.dtype):
        inv_freq = self._per_device.get(positions.device)
        if inv_freq is None:
            inv_freq = self._per_device[positions.device] = self.inv_freq.to(positions.device)
        freqs = positions.float()[..., None] * inv_freq          # (..., head_dim/2)
        emb = torch.cat([freqs, freqs], dim=-1)                # (..., head_dim): halves, not pairs
        return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, T, heads, head_dim) by position. HF layout: dim i pairs with dim i + d/2."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos[..., None, :] + rotated * sin[..., None, :]   # cos (B, T, D) -> (B, T, 1, D)
