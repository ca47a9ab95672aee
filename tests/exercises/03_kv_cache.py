"""Plausible wrong versions of notebook 03's exercises: each must make the exercise's checks fail with an
AssertionError (tests/test_exercises.py runs them through course_lib/exercises.py)."""

VARIANTS = {
    "kv_bytes_per_token": {
        # the size of a number in bits, not bytes.
        "bits_not_bytes": '''def kv_bytes_per_token(cfg, dtype):
    return 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * torch.finfo(dtype).bits''',
        # keys only: forgot that values are stored too.
        "keys_only": '''def kv_bytes_per_token(cfg, dtype):
    w = torch.finfo(dtype).bits // 8
    return cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * w''',
        # one K/V head per query head (MHA), as if GQA did not share them.
        "query_heads": '''def kv_bytes_per_token(cfg, dtype):
    w = torch.finfo(dtype).bits // 8
    return 2 * cfg.num_layers * cfg.num_heads * cfg.head_dim * w''',
        # always 4 bytes a number: right in float32, wrong in 16 bits.
        "always_fp32": '''def kv_bytes_per_token(cfg, dtype):
    return 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * 4''',
    },
    "cache_attend": {
        # forgot the offset: every pass writes at position 0 (prefill still looks right).
        "writes_from_zero": '''def cache_attend(cache, layer_idx, q, k, v):
    T, start = q.shape[1], cache.length
    end = start + T
    cache.k[layer_idx, :, :T] = k
    cache.v[layer_idx, :, :T] = v
    keys, values = cache.k[layer_idx, :, :end], cache.v[layer_idx, :, :end]
    q_pos = torch.arange(start, end, device=q.device)
    mask = torch.arange(end, device=q.device)[None, :] <= q_pos[:, None]
    return sdpa(q, keys, values, mask=mask)''',
        # stores the new k, v but attends over them only, not over the cached past.
        "reads_only_new": '''def cache_attend(cache, layer_idx, q, k, v):
    T, start = q.shape[1], cache.length
    end = start + T
    cache.k[layer_idx, :, start:end] = k
    cache.v[layer_idx, :, start:end] = v
    return sdpa(q, k, v, causal=True)''',
        # causal mask aligned to position 0 instead of to the queries' positions: a decode step sees key 0 only.
        "mask_not_offset": '''def cache_attend(cache, layer_idx, q, k, v):
    T, start = q.shape[1], cache.length
    end = start + T
    cache.k[layer_idx, :, start:end] = k
    cache.v[layer_idx, :, start:end] = v
    keys, values = cache.k[layer_idx, :, :end], cache.v[layer_idx, :, :end]
    mask = torch.ones(T, end, dtype=torch.bool, device=q.device).tril()
    return sdpa(q, keys, values, mask=mask)''',
        # no mask at all: fine for decode, but the prompt's tokens see the future during prefill.
        "no_mask_in_prefill": '''def cache_attend(cache, layer_idx, q, k, v):
    T, start = q.shape[1], cache.length
    end = start + T
    cache.k[layer_idx, :, start:end] = k
    cache.v[layer_idx, :, start:end] = v
    keys, values = cache.k[layer_idx, :, :end], cache.v[layer_idx, :, :end]
    return sdpa(q, keys, values)''',
    },
    "cached_generate": {
        # the new token's position counted from the first generated token, forgetting the prompt.
        "positions_without_prompt": '''def cached_generate(model, prompt_ids, max_new_tokens):
    device = model.device
    cache = KVCache(model.cfg, 1, len(prompt_ids) + max_new_tokens, device, model.dtype)
    step_input = torch.tensor([prompt_ids], device=device)
    positions = torch.arange(len(prompt_ids), device=device)[None]
    tokens, step_logits = [], []
    for _ in range(max_new_tokens):
        logits = model(step_input, positions, cache)[0, -1]
        tokens.append(int(logits.argmax()))
        step_logits.append(logits)
        step_input = torch.tensor([[tokens[-1]]], device=device)
        positions = torch.tensor([[len(tokens) - 1]], device=device)
    return tokens, step_logits''',
        # off by one: the new token placed one position too far.
        "position_off_by_one": '''def cached_generate(model, prompt_ids, max_new_tokens):
    device = model.device
    cache = KVCache(model.cfg, 1, len(prompt_ids) + max_new_tokens, device, model.dtype)
    step_input = torch.tensor([prompt_ids], device=device)
    positions = torch.arange(len(prompt_ids), device=device)[None]
    tokens, step_logits = [], []
    for _ in range(max_new_tokens):
        logits = model(step_input, positions, cache)[0, -1]
        tokens.append(int(logits.argmax()))
        step_logits.append(logits)
        step_input = torch.tensor([[tokens[-1]]], device=device)
        positions = torch.tensor([[cache.length + 1]], device=device)
    return tokens, step_logits''',
        # prefill run without the cache: decode steps then find it empty.
        "prefill_bypasses_cache": '''def cached_generate(model, prompt_ids, max_new_tokens):
    device = model.device
    cache = KVCache(model.cfg, 1, len(prompt_ids) + max_new_tokens, device, model.dtype)
    logits = model(torch.tensor([prompt_ids], device=device))[0, -1]
    tokens, step_logits = [int(logits.argmax())], [logits]
    for _ in range(max_new_tokens - 1):
        pos = len(prompt_ids) + len(tokens) - 1
        logits = model(torch.tensor([[tokens[-1]]], device=device), torch.tensor([[pos]], device=device), cache)[0, -1]
        tokens.append(int(logits.argmax()))
        step_logits.append(logits)
    return tokens, step_logits''',
    },
}
