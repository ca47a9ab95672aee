"""The Llama family in plain PyTorch: SmolLM2, Llama 2/3, Qwen2 (qkv bias), Qwen3 (q/k norm).

    tokens -> embed -> [ RMSNorm -> attention -> +residual -> RMSNorm -> SwiGLU -> +residual ] x L
           -> RMSNorm -> lm_head -> logits

With ``use_fused_kernels(True)`` (Day 9) the same math runs through Triton kernels: the residual
stream is carried next to h, and each "+residual -> RMSNorm" pair is one kernel.

    h, r = embed, None
    per layer:  x, r = add_norm(h, r)  -> h = attention(x)  (RoPE + K/V write fused when paged)
                x, r = add_norm(h, r)  -> h = down(silu_mul(gate_up(x)))
    end:        x, _ = add_norm(h, r)  -> lm_head

and (Day 14) every linear layer given a single row (decode at batch 1) runs the Triton GEMV kernel.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from ..config import ModelConfig
from ..layers.attention import Attention
from ..layers.linear import Linear
from ..layers.mlp import SwiGLU
from ..layers.norm import RMSNorm
from ..layers.rotary import RotaryEmbedding


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.input_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.attn = Attention(cfg, layer_idx)
        self.post_attn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = SwiGLU(cfg)

    def forward(self, h, cos, sin, kv=None):
        h = h + self.attn(self.input_norm(h), cos, sin, kv)
        return h + self.mlp(self.post_attn_norm(h))

    def forward_fused(self, h, residual, cos, sin, kv=None):
        """forward() with the residual carried apart: the layer's output is h + residual (returned as
        the pair), and each add happens inside the next norm's kernel."""
        x, residual = self.input_norm.add_norm(h, residual)         # residual = h + residual
        h = self.attn(x, cos, sin, kv)
        x, residual = self.post_attn_norm.add_norm(h, residual)
        return self.mlp(x), residual


class LlamaModel(nn.Module):
    """Decoder-only transformer. ``forward(input_ids, positions, kv)`` returns logits (B, T, vocab).

    ``kv`` decides where keys and values live: ``None`` recomputes attention over the whole input (Day 1),
    a :class:`~course_lib.kv.ContiguousKVCache` appends to per-sequence tensors (Day 3), a paged
    context writes into blocks (Day 5). Any object with ``attend(layer_idx, q, k, v)`` and
    ``commit(num_tokens)`` works.

    ``use_fused_kernels(True)`` switches to Triton kernels (Day 9), ``False`` to plain torch. Until
    either is called ``fused`` is None: plain torch, and an engine may choose (on for CUDA).
    """
    fused: bool | None = None

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.rotary = RotaryEmbedding(cfg)
        self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.tie_weights()

    def tie_weights(self) -> None:
        """Small models share one matrix between the embedding and the LM head (saves vocab x hidden)."""
        if self.cfg.tie_word_embeddings:
            self.lm_head.weight = self.embed.weight

    def use_fused_kernels(self, flag: bool = True, gemv: bool = True) -> "LlamaModel":
        """Run the residual add + RMSNorm, SwiGLU activation and (over a paged KV context) RoPE + K/V
        cache write as fused Triton kernels (Day 9), or, with False, as plain torch ops again.

        With the flag and ``gemv`` on, a linear layer given one row of input (decode at batch 1) runs
        the Triton GEMV kernel instead of cuBLAS (Day 14; cuBLAS wins from two rows up).

        For inference only (q is rotated in place, outside autograd). Needs CUDA, or
        TRITON_INTERPRET=1 in the environment before the kernels are first imported (slow: tests)."""
        flag = bool(flag)
        if flag and self.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError(f"use_fused_kernels(True) needs the model on CUDA, or TRITON_INTERPRET=1 "
                             f"set before course_lib.kernels is imported; the model is on {self.device}")
        for m in self.modules():
            if hasattr(m, "fused"):
                m.fused = flag
            if isinstance(m, Linear):
                m.gemv = flag and bool(gemv)
        return self

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.weight.dtype

    def hidden_states(self, input_ids, positions=None, kv=None) -> torch.Tensor:
        """Final-norm hidden states (B, T, hidden) for ``input_ids`` (B, T) at ``positions`` (B, T)."""
        if positions is None:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        h = self.embed(input_ids)
        cos, sin = self.rotary(positions, h.dtype)             # (B, T, head_dim) each
        if self.fused:
            residual = None                                    # the residual stream rides along
            for layer in self.layers:
                h, residual = layer.forward_fused(h, residual, cos, sin, kv)
        else:
            for layer in self.layers:
                h = layer(h, cos, sin, kv)
        if kv is not None:
            kv.commit(input_ids.shape[1])
        return self.norm.add_norm(h, residual)[0] if self.fused else self.norm(h)

    def forward(self, input_ids, positions=None, kv=None) -> torch.Tensor:
        return self.lm_head(self.hidden_states(input_ids, positions, kv))
