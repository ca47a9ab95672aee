"""Grouped-query attention. Where K and V live (nowhere, a contiguous cache, paged blocks) is the
job of a KV object passed in from outside, so this layer reads the same in every day's notebook."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..config import ModelConfig
from .linear import Linear
from .norm import RMSNorm
from .rotary import apply_rope


def sdpa(q, k, v, *, causal: bool = False, mask: torch.Tensor | None = None,
         scale: float | None = None) -> torch.Tensor:
    """softmax(q k^T * scale + mask) v on (B, T, heads, D) tensors; K/V may have fewer heads (GQA).

    ``scale`` defaults to 1/sqrt(D); a bool ``mask`` is True where attention is allowed."""
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))           # (B, heads, T, D)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None,
                                         scale=scale, enable_gqa=q.shape[1] != k.shape[1])
    return out.transpose(1, 2)                                  # (B, T, heads, D)


def causal_mask(q_len: int, kv_len: int, device) -> torch.Tensor:
    """Bool (q_len, kv_len): query i (the last q_len of kv_len positions) sees keys j <= its position."""
    q_pos = torch.arange(kv_len - q_len, kv_len, device=device)
    return torch.arange(kv_len, device=device)[None, :] <= q_pos[:, None]


class Attention(nn.Module):
    """q, k, v projections (one fused matmul), optional q/k RMSNorm (Qwen3), RoPE, attention, output.

    ``fused`` (set by ``LlamaModel.use_fused_kernels``): when the KV object can apply RoPE itself
    (``attend_rope``, the paged context), RoPE and the K/V cache write run as one Triton kernel (Day 9)."""
    fused = False

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        q_size, kv_size = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
        self.split = (q_size, kv_size, kv_size)
        self.qkv = Linear(cfg.hidden_size, sum(self.split), bias=cfg.qkv_bias)
        self.o = Linear(q_size, cfg.hidden_size, bias=cfg.o_bias)
        self.q_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps) if cfg.qk_norm else None

    def forward(self, x, cos, sin, kv=None):
        B, T, _ = x.shape
        q, k, v = self.qkv(x).split(self.split, dim=-1)
        q = q.view(B, T, self.num_heads, self.head_dim)         # (B, T, H, D)
        k = k.view(B, T, self.num_kv_heads, self.head_dim)      # (B, T, KVH, D)
        v = v.view(B, T, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None and self.fused:   # one kernel per norm instead of ~8 torch ops
            q, k = self.q_norm.add_norm(q, None)[0], self.k_norm.add_norm(k, None)[0]
        elif self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.fused and hasattr(kv, "attend_rope"):
            out = kv.attend_rope(self.layer_idx, q, k, v, cos, sin)   # q is rotated in place
            return self.o(out.reshape(B, T, -1))
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = sdpa(q, k, v, causal=True) if kv is None else kv.attend(self.layer_idx, q, k, v)
        return self.o(out.reshape(B, T, -1))
