"""Plausible wrong versions of notebook 02's exercises: each must make the exercise's checks fail with an
AssertionError (tests/test_exercises.py runs them through course_lib/exercises.py)."""

VARIANTS = {
    "matmul_weights": {
        # forgot the LM head (it is "just the embedding", but it is a V x d matmul every token).
        "forgot_lm_head": '''def matmul_weights(cfg):
    d, f, L = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers
    q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    return L * (d * (q + 2 * kv) + q * d + 3 * d * f)''',
        # K and V projections sized as if every query head had its own (MHA, not GQA).
        "mha_kv_projections": '''def matmul_weights(cfg):
    d, f, L = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers
    q = cfg.num_heads * cfg.head_dim
    return L * (d * 3 * q + q * d + 3 * d * f) + cfg.vocab_size * d''',
        # the MLP counted as two matrices (up, down), forgetting SwiGLU's gate.
        "mlp_without_gate": '''def matmul_weights(cfg):
    d, f, L = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers
    q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    return L * (d * (q + 2 * kv) + q * d + 2 * d * f) + cfg.vocab_size * d''',
    },
    "step_flops": {
        # multiply-accumulates, not FLOPs: forgot the factor 2 on the weights.
        "macs_not_flops": '''def step_flops(cfg, num_tokens, context=0, batch=1):
    T = num_tokens
    keys_seen = T * context + T * (T + 1) // 2
    attention = 4 * cfg.num_layers * cfg.num_heads * cfg.head_dim * batch * keys_seen
    return matmul_weights(cfg) * batch * T + attention''',
        # attention counted over KV heads: GQA shares K/V, not the per-query-head work.
        "attention_over_kv_heads": '''def step_flops(cfg, num_tokens, context=0, batch=1):
    T = num_tokens
    keys_seen = T * context + T * (T + 1) // 2
    attention = 4 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * batch * keys_seen
    return 2 * matmul_weights(cfg) * batch * T + attention''',
        # every new query sees all T new keys (mask ignored) and the batch forgotten in attention.
        "no_causal_no_batch_in_attention": '''def step_flops(cfg, num_tokens, context=0, batch=1):
    T = num_tokens
    keys_seen = T * (context + T)
    attention = 4 * cfg.num_layers * cfg.num_heads * cfg.head_dim * keys_seen
    return 2 * matmul_weights(cfg) * batch * T + attention''',
    },
    "step_bytes": {
        # weights read once per token instead of once per pass: the mistake that hides batching's win.
        "weights_per_token": '''def step_bytes(cfg, num_tokens, context=0, batch=1, dtype_bytes=2):
    d, f, L, w = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers, dtype_bytes
    q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    weights = matmul_weights(cfg) * w * batch * num_tokens
    kv_cache = cfg.kv_bytes_per_token(w) * batch * (context + 2 * num_tokens)
    activations = batch * num_tokens * w * (L * (4 * d + 2 * q + 2 * kv + 3 * f) + cfg.vocab_size)
    return weights + kv_cache + activations''',
        # the KV cache: reads the cached positions but forgets writing and reading the new ones.
        "kv_context_only": '''def step_bytes(cfg, num_tokens, context=0, batch=1, dtype_bytes=2):
    d, f, L, w = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers, dtype_bytes
    q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    weights = matmul_weights(cfg) * w
    kv_cache = cfg.kv_bytes_per_token(w) * batch * context
    activations = batch * num_tokens * w * (L * (4 * d + 2 * q + 2 * kv + 3 * f) + cfg.vocab_size)
    return weights + kv_cache + activations''',
        # the KV cache always counted at 2 bytes a number, whatever the dtype.
        "kv_dtype_fixed_2_bytes": '''def step_bytes(cfg, num_tokens, context=0, batch=1, dtype_bytes=2):
    d, f, L, w = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers, dtype_bytes
    q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    weights = matmul_weights(cfg) * w
    kv_cache = cfg.kv_bytes_per_token(2) * batch * (context + 2 * num_tokens)
    activations = batch * num_tokens * w * (L * (4 * d + 2 * q + 2 * kv + 3 * f) + cfg.vocab_size)
    return weights + kv_cache + activations''',
    },
    "attainable_time": {
        # adds the two times: assumes compute and memory traffic never overlap.
        "sum_not_max": '''def attainable_time(flops, nbytes, peak_flops, bandwidth):
    return flops / peak_flops + nbytes / bandwidth''',
        # the faster of the two: a lower bound that is not the tightest one.
        "min_not_max": '''def attainable_time(flops, nbytes, peak_flops, bandwidth):
    return min(flops / peak_flops, nbytes / bandwidth)''',
        # FLOPs divided by the bandwidth and bytes by the peak.
        "swapped_roofs": '''def attainable_time(flops, nbytes, peak_flops, bandwidth):
    return max(flops / bandwidth, nbytes / peak_flops)''',
    },
}
