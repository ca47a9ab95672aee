"""Paged KV storage (Day 5): K and V live in fixed-size blocks; a block table maps each sequence's
logical block i to a physical block id, so memory is claimed a block at a time as a sequence grows.

    k_cache[layer]: (num_blocks, block_size, kv_heads, head_dim)
    sequence with block_table [7, 2, 9], block_size 4, 10 tokens:
        positions 0-3 -> block 7, 4-7 -> block 2, 8-9 -> block 9 (slots 2-3 of it still free)
    slot of position p = block_table[p // block_size] * block_size + p % block_size

The cache may hold K/V in another dtype than the model computes in (``EngineConfig.kv_cache_dtype``,
Day 19: one-byte fp8): writers round into it with `to_cache` (saturating, NaN -> 0), readers turn what
they gather back into the query's dtype.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import ModelConfig
from ..layers.attention import causal_mask, sdpa


def to_cache(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x`` as the cache stores it: NaN -> 0 and +-inf (or anything beyond the cache dtype's range)
    -> its largest finite value (a request that overflows must not poison the next owner of its
    blocks, and fp8 has no inf), then rounded to ``dtype``."""
    big = torch.finfo(dtype).max
    x = x.nan_to_num()
    if dtype != x.dtype:
        x = x.clamp(-big, big).to(dtype)
    return x


class PagedKVCache:
    """One (2, num_blocks + 1, block_size, KVH, D) tensor per layer: index 0 holds K, 1 holds V.

    Block ``num_blocks`` (the extra one) is a scratch block that the block manager never hands out:
    padding rows of a CUDA-graph batch write their K/V there instead of into someone's block."""

    def __init__(self, cfg: ModelConfig, num_blocks: int, block_size: int, device="cpu",
                 dtype=torch.float32, num_swap_blocks: int = 0):
        self.num_blocks, self.block_size = num_blocks, block_size
        self.scratch_block = num_blocks
        shape = (cfg.num_layers, 2, num_blocks + 1, block_size, cfg.num_kv_heads, cfg.head_dim)
        self.kv = torch.zeros(shape, device=device, dtype=dtype)
        # Host pool for swapped-out blocks (Day 12), pinned so the copies run at full PCIe speed.
        self.host_kv = None
        if num_swap_blocks:
            pin = torch.device(device).type == "cuda"
            self.host_kv = torch.zeros((*shape[:2], num_swap_blocks, *shape[3:]), dtype=dtype,
                                       pin_memory=pin)

    def _raw(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` as bytes when it is fp8: torch's CPU index_copy_ has no fp8 kernel, a copy needs none."""
        return t.view(torch.uint8) if t.element_size() == 1 and t.is_floating_point() else t

    def swap_out(self, pairs) -> None:
        """Copy device blocks to host blocks: ``pairs`` of (device block, host block)."""
        src, dst = zip(*pairs)
        self._raw(self.host_kv)[:, :, list(dst)] = self._raw(self.kv)[:, :, list(src)].to("cpu")

    def swap_in(self, pairs) -> None:
        """Copy host blocks back: ``pairs`` of (host block, device block)."""
        src, dst = zip(*pairs)
        idx = torch.tensor(dst, device=self.kv.device)
        self._raw(self.kv).index_copy_(2, idx, self._raw(self.host_kv)[:, :, list(src)].to(self.kv.device))

    @property
    def nbytes(self) -> int:
        return self.kv.nbytes

    def layer(self, i: int):
        return self.kv[i, 0], self.kv[i, 1]       # each (num_blocks, block_size, KVH, D)


def paged_attention_ref(q, k_cache, v_cache, block_tables, seq_lens, query_start_loc,
                        scale: float | None = None, max_query_len: int | None = None):
    """Attention of varlen queries over paged keys/values: the slow, obviously-correct reference.

    Args:
        q: (N, H, D) queries of all sequences, concatenated.
        k_cache, v_cache: (num_blocks, block_size, KVH, D); this step's K/V are already written.
        block_tables: (B, max_blocks) int, physical block ids (padding entries are never read).
        seq_lens: (B,) context length of each sequence, this step's tokens included.
        query_start_loc: (B + 1,) offsets of each sequence's queries in q.
        max_query_len: unused here; the Triton kernel takes it to size its grid without a host sync.
    Returns:
        (N, H, D). Query j of a sequence with q_len queries and seq_len keys sits at position
        seq_len - q_len + j and attends to keys 0..that position (prefill, decode, chunked prefill and
        a cached prefix are all this one case).
    """
    out = torch.empty_like(q)
    bs = k_cache.shape[1]
    starts, lens = query_start_loc.tolist(), seq_lens.tolist()
    for i, L in enumerate(lens):
        q_i = q[starts[i]:starts[i + 1]]                               # (q_len, H, D)
        n_blocks = -(-L // bs)
        blocks = block_tables[i, :n_blocks].long()
        k = k_cache[blocks].flatten(0, 1)[:L].to(q.dtype)              # (L, KVH, D)
        v = v_cache[blocks].flatten(0, 1)[:L].to(q.dtype)
        mask = None if q_i.shape[0] == 1 else causal_mask(q_i.shape[0], L, q.device)
        out[starts[i]:starts[i + 1]] = sdpa(q_i[None], k[None], v[None], mask=mask, scale=scale)[0]
    return out


@dataclass
class PagedAttentionContext:
    """Everything one engine step's attention needs, built by the model runner (one per step).

    The model is called with input_ids of shape (1, N): all sequences' new tokens side by side.
    """
    cache: PagedKVCache
    slot_mapping: torch.Tensor       # (N,) where each new token's K/V goes
    block_tables: torch.Tensor       # (B, max_blocks)
    seq_lens: torch.Tensor           # (B,)
    query_start_loc: torch.Tensor    # (B + 1,)
    max_query_len: int = 1           # longest q_len, known on the host (no sync to find it)
    attention_fn: object = paged_attention_ref

    def attend(self, layer_idx: int, q, k, v):
        k_cache, v_cache = self.cache.layer(layer_idx)
        # Write first, then read: the new tokens attend to themselves through the cache. NaN/inf
        # never enter the cache (a request that overflows fp16 must not poison the next owner of its
        # blocks), so readers may mask positions by score alone. Costs two ops on N rows.
        k_cache.view(-1, *k_cache.shape[2:])[self.slot_mapping] = to_cache(k[0], k_cache.dtype)   # (N, KVH, D)
        v_cache.view(-1, *v_cache.shape[2:])[self.slot_mapping] = to_cache(v[0], v_cache.dtype)
        out = self.attention_fn(q[0], k_cache, v_cache, self.block_tables, self.seq_lens,
                                self.query_start_loc, max_query_len=self.max_query_len)
        return out[None]                                               # (1, N, H, D)

    def attend_rope(self, layer_idx: int, q, k, v, cos, sin):
        """attend() on q, k before RoPE: one Triton kernel rotates q (in place) and k, and writes k and
        v into the cache, sanitised as attend() does (Day 9). Replaces 14 launches (two RoPEs of
        5 ops, two nan_to_num, two scatters).

        q (1, N, H, D), k/v (1, N, KVH, D), cos/sin (1, N, D) as layers/rotary.py makes them."""
        from ..kernels.rope_kv import rope_write_kv   # Triton loads on first use, not with the engine
        k_cache, v_cache = self.cache.layer(layer_idx)
        q = rope_write_kv(q[0], k[0], v[0], cos[0], sin[0], k_cache, v_cache,
                          self.slot_mapping)                   # (N, H, D), rotated in place
        out = self.attention_fn(q, k_cache, v_cache, self.block_tables, self.seq_lens,
                                self.query_start_loc, max_query_len=self.max_query_len)
        return out[None]                                               # (1, N, H, D)

    def commit(self, num_tokens: int) -> None:
        pass   # the block manager, not the cache, tracks how many positions each sequence has


def gather_blocks(k_cache, v_cache, block_tables, dtype=None):
    """Each sequence's blocks side by side: (B, max_blocks * block_size, KVH, D) for K and for V, in
    ``dtype`` (default: the cache's).

    index_select on the flattened table, not k_cache[block_tables]: the same copy, ~7x faster on a
    CPU (advanced indexing with a 2-D index takes a slow general path)."""
    B, width = block_tables.shape
    idx = block_tables.reshape(-1).long()
    return tuple(c.index_select(0, idx).view(B, width * c.shape[1], *c.shape[2:]).to(dtype or c.dtype)
                 for c in (k_cache, v_cache))


def paged_decode_torch(q, k_cache, v_cache, block_tables, seq_lens, query_start_loc=None,
                       scale: float | None = None, max_query_len: int | None = None):
    """Decode-only fast path in plain torch: one query per sequence, all sequences in one batched call.

    Gathers every sequence's blocks into (B, max_blocks * block_size, KVH, D) and masks the positions
    past each seq_len, so it reads padding blocks too: simple and vectorised, not bandwidth-optimal
    (the Triton kernel reads only the blocks a sequence owns).
    """
    B, max_blocks = block_tables.shape
    bs = k_cache.shape[1]
    k, v = gather_blocks(k_cache, v_cache, block_tables, q.dtype)  # (B, max_blocks * bs, KVH, D)
    valid = torch.arange(max_blocks * bs, device=q.device)[None, :] < seq_lens[:, None]   # (B, S)
    return sdpa(q[:, None], k, v, mask=valid[:, None, None, :], scale=scale)[:, 0]   # (B, H, D)


def paged_attention_torch(q, k_cache, v_cache, block_tables, seq_lens, query_start_loc,
                          scale: float | None = None, max_query_len: int | None = None):
    """The torch backend for any step (prefill, decode or mixed) in batched SDPA calls.

    Decode rows (one query) go through `paged_decode_torch` together; the sequences with several
    queries (prompt chunks) through `padded_prefill_torch`. A mixed CPU step is ~30 decode rows and one
    or two 16-token prompts: padding all of them to 16 queries made SDPA's work 8x the real rows and
    took 48 of a 227 ms step; split, the two calls take what the rows need.
    Reads query_start_loc on the host (free on a CPU; a GPU uses the Triton kernel instead)."""
    if max_query_len == 1:
        return paged_decode_torch(q, k_cache, v_cache, block_tables, seq_lens, scale=scale)
    starts = query_start_loc.tolist()
    q_lens = [b - a for a, b in zip(starts, starts[1:])]
    one = [i for i, n in enumerate(q_lens) if n == 1]
    if not one:
        return padded_prefill_torch(q, k_cache, v_cache, block_tables, seq_lens, q_lens, scale)
    many = [i for i, n in enumerate(q_lens) if n > 1]
    out = torch.empty_like(q)
    rows = torch.tensor([starts[i] for i in one], device=q.device)
    seqs = torch.tensor(one, device=q.device)
    out[rows] = paged_decode_torch(q[rows], k_cache, v_cache, block_tables[seqs], seq_lens[seqs], scale=scale)
    if many:
        rows = torch.cat([torch.arange(starts[i], starts[i + 1], device=q.device) for i in many])
        seqs = torch.tensor(many, device=q.device)
        out[rows] = padded_prefill_torch(q[rows], k_cache, v_cache, block_tables[seqs], seq_lens[seqs],
                                         [q_lens[i] for i in many], scale)
    return out


def padded_prefill_torch(q, k_cache, v_cache, block_tables, seq_lens, q_lens: list[int],
                         scale: float | None = None):
    """Varlen attention in one SDPA call: every sequence's queries (``q_lens`` of them, concatenated
    in q) padded to the longest, its blocks gathered as in `paged_decode_torch`. Query j of a sequence
    with q_len queries sits at position seq_len - q_len + j and sees keys up to it."""
    B, M = len(q_lens), max(q_lens)
    q_lens_t = torch.tensor(q_lens, device=q.device)                         # (B,)
    starts = torch.cumsum(q_lens_t, 0) - q_lens_t
    j = torch.arange(M, device=q.device)
    real = j[None, :] < q_lens_t[:, None]                                 # (B, M) real query rows
    rows = (starts[:, None] + j[None, :])[real]                           # their rows in q
    q_pad = q.new_zeros(B, M, *q.shape[1:])
    q_pad[real] = q[rows]                                                 # (B, M, H, D)
    k, v = gather_blocks(k_cache, v_cache, block_tables, q.dtype)        # (B, S, KVH, D)
    pos = seq_lens[:, None] - q_lens_t[:, None] + j[None, :]              # (B, M) query positions
    key = torch.arange(k.shape[1], device=q.device)
    mask = key[None, None, :] <= pos[:, :, None]     # causal; pos < seq_len ends the context too
    mask |= ~real[:, :, None]     # padding rows see every key: no all-masked row (NaN); discarded
    out = sdpa(q_pad, k, v, mask=mask[:, None], scale=scale)              # (B, M, H, D)
    return out[real]                                                      # (N, H, D), in q's order
