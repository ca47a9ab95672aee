"""The contiguous KV cache of Day 3: one (B, max_len, kv_heads, head_dim) tensor per layer for K and V.

Every sequence reserves ``max_len`` slots up front, whether it uses them or not; Day 5 measures that waste.
"""
from __future__ import annotations

import torch

from ..config import ModelConfig
from ..layers.attention import causal_mask, sdpa


class ContiguousKVCache:
    """Keys/values for a batch of equal-length sequences, appended ``T`` positions per forward pass."""

    def __init__(self, cfg: ModelConfig, batch_size: int, max_len: int, device="cpu",
                 dtype=torch.float32):
        shape = (cfg.num_layers, batch_size, max_len, cfg.num_kv_heads, cfg.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)   # (L, B, max_len, KVH, D)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.length = 0          # positions filled so far (same for every sequence in the batch)

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes

    def attend(self, layer_idx: int, q, k, v):
        """Store this step's k, v (B, T, KVH, D) after the cached ones, then attend over all of them."""
        T = q.shape[1]
        end = self.length + T
        if end > self.max_len:
            raise ValueError(f"sequence length {end} exceeds the cache's max_len={self.max_len}")
        self.k[layer_idx, :, self.length:end] = k
        self.v[layer_idx, :, self.length:end] = v
        keys, values = self.k[layer_idx, :, :end], self.v[layer_idx, :, :end]   # (B, end, KVH, D)
        if T == 1:   # one new token sees every cached position: no mask needed
            return sdpa(q, keys, values)
        return sdpa(q, keys, values, mask=causal_mask(T, end, q.device))

    def commit(self, num_tokens: int) -> None:
        """Called once per forward pass, after every layer has written: the new positions now count."""
        self.length += num_tokens
