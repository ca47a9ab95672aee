"""Model-shape arithmetic, in one place: which matrices a step reads, how many bytes they and the KV
cache hold, what each fused kernel moves. Every benchmark, the roofline and the floor call these.

ModelConfig (config.py) already knows ``num_params`` (every parameter, a tied LM head once) and
``kv_bytes_per_token`` (2 * layers * kv_heads * head_dim * dtype bytes). What a *step* reads is less:
the embedding lookup touches T rows, not V*d, so the weight bytes of a step are the matmul weights:

    P_mm = L * (qkv + o + gate_up + down) + lm_head          (each an N x K matrix below)
"""
from __future__ import annotations

import math

from ..config import ModelConfig


def weight_matrices(cfg: ModelConfig) -> dict[str, tuple[int, int]]:
    """(N, K) of each distinct weight matrix of a decoder step (nn.Linear layout: out x in); the
    first four repeat in every layer, the LM head comes once."""
    q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    d, f = cfg.hidden_size, cfg.intermediate_size
    return {"qkv": (q + 2 * kv, d), "o": (d, q), "gate_up": (2 * f, d), "down": (d, f),
            "lm_head": (cfg.vocab_size, d)}


def matmul_params(cfg: ModelConfig) -> int:
    """P_mm = L*(d*(q + 2*kv) + q*d + 3*d*f) + V*d: weights that take part in a matmul (not norms, and
    the embedding lookup reads only T rows, while the LM head multiplies by all V*d)."""
    m = {name: n * k for name, (n, k) in weight_matrices(cfg).items()}
    return cfg.num_layers * (m["qkv"] + m["o"] + m["gate_up"] + m["down"]) + m["lm_head"]


def weight_bytes(cfg: ModelConfig, dtype_bytes: int) -> int:
    """Bytes every step reads once, whatever its batch: P_mm * w (the weights-only floor's numerator)."""
    return matmul_params(cfg) * dtype_bytes


def decode_attention_bytes(batch, context, heads, kv_heads, head_dim, block_size, dtype_bytes) -> int:
    """Bytes one paged decode-attention call (one layer) must move: K and V (2*B*L*KVH*D*w), int32
    block tables, q in, out written."""
    kv = 2 * batch * context * kv_heads * head_dim * dtype_bytes
    return kv + 4 * batch * math.ceil(context / block_size) + 2 * batch * heads * head_dim * dtype_bytes


def fused_kernel_bytes(cfg: ModelConfig, n: int, dtype_bytes: int) -> dict[str, int]:
    """Bytes each fused Day 9 kernel moves over n tokens of one layer: inputs read once, outputs
    written once. The floor for any implementation, so GB/s is these bytes / time."""
    d, f, es = cfg.hidden_size, cfg.intermediate_size, dtype_bytes
    H, KVH, D = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    return {"add_rmsnorm": es * (4 * n * d + d),                  # read x, res, weight; write y, r
            "silu_mul": es * 3 * n * f,                             # read gate, up; write the product
            "rope_write_kv": es * (2 * n * H * D + 4 * n * KVH * D + 2 * n * D) + 8 * n}
    # rope: q read and written back, k and v read and written to the cache, cos, sin, int64 slots


def model_info(cfg: ModelConfig, name: str, dtype, random_weights: bool, **extra) -> dict:
    """The ``model`` entry of a report: name, dtype, the shape, parameters and the bytes a step reads."""
    dtype_name = str(dtype).removeprefix("torch.")
    w = {"float32": 4, "bfloat16": 2, "float16": 2}.get(dtype_name)
    return dict(name=name, random_weights=random_weights, dtype=dtype_name, params=cfg.num_params,
                layers=cfg.num_layers, hidden=cfg.hidden_size, heads=cfg.num_heads, kv_heads=cfg.num_kv_heads,
                **({"weight_bytes": weight_bytes(cfg, w)} if w else {}), **extra)
