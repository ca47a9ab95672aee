"""Plausible wrong versions of notebook 01's exercises: each must make the exercise's checks fail with an
AssertionError (tests/test_exercises.py runs them through course_lib/exercises.py)."""

VARIANTS = {
    "rms_norm": {
        # LayerNorm habits: subtract the mean first.
        "subtracts_mean": '''def rms_norm(x, weight, eps):
    x32 = x.float()
    x32 = x32 - x32.mean(-1, keepdim=True)
    normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * normed.to(x.dtype)''',
        # eps added to the root instead of under it: only tiny rows notice.
        "eps_outside_sqrt": '''def rms_norm(x, weight, eps):
    x32 = x.float()
    normed = x32 / (x32.pow(2).mean(-1, keepdim=True).sqrt() + eps)
    return weight * normed.to(x.dtype)''',
        # sum of squares instead of their mean: off by sqrt(d).
        "sum_not_mean": '''def rms_norm(x, weight, eps):
    x32 = x.float()
    normed = x32 * torch.rsqrt(x32.pow(2).sum(-1, keepdim=True) + eps)
    return weight * normed.to(x.dtype)''',
    },
    "rope": {
        # GPT-J layout: rotate adjacent pairs (0,1), (2,3), ... instead of (i, i + D/2).
        "adjacent_pairs": '''def rope(x, cos, sin):
    x1, x2 = x[..., 0::2], x[..., 1::2]
    rotated = torch.stack([-x2, x1], dim=-1).flatten(-2)
    return x * cos[:, :, None, :] + rotated * sin[:, :, None, :]''',
        # the sign on the wrong half: rotates by -p*theta (relative property still holds).
        "rotates_backwards": '''def rope(x, cos, sin):
    half = x.shape[-1] // 2
    rotated = torch.cat([x[..., half:], -x[..., :half]], dim=-1)
    return x * cos[:, :, None, :] + rotated * sin[:, :, None, :]''',
    },
    "decoder_layer": {
        # GQA with repeat (tiles heads 0,1,2,0,1,2,...) instead of repeat_interleave (0,0,0,1,1,1,...).
        "wrong_gqa_repeat": '''def decoder_layer(h, layer, cos, sin, cfg):
    B, T, _ = h.shape
    H, KVH, D, eps = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.rms_norm_eps
    attn, mlp = layer.attn, layer.mlp
    x = rms_norm(h, layer.input_norm.weight, eps)
    q, k, v = F.linear(x, attn.qkv.weight, attn.qkv.bias).split([H * D, KVH * D, KVH * D], dim=-1)
    q, k, v = q.view(B, T, H, D), k.view(B, T, KVH, D), v.view(B, T, KVH, D)
    if cfg.qk_norm:
        q, k = rms_norm(q, attn.q_norm.weight, eps), rms_norm(k, attn.k_norm.weight, eps)
    q, k = rope(q, cos, sin), rope(k, cos, sin)
    k = k.repeat(1, 1, H // KVH, 1)
    v = v.repeat(1, 1, H // KVH, 1)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / D**0.5
    causal = torch.ones(T, T, dtype=torch.bool, device=h.device).tril()
    probs = scores.masked_fill(~causal, float("-inf")).softmax(-1)
    out = torch.einsum("bhqk,bkhd->bqhd", probs, v).reshape(B, T, H * D)
    a = h + F.linear(out, attn.o.weight, attn.o.bias)
    gate, up = F.linear(rms_norm(a, layer.post_attn_norm.weight, eps), mlp.gate_up.weight,
                        mlp.gate_up.bias).chunk(2, dim=-1)
    return a + F.linear(F.silu(gate) * up, mlp.down.weight, mlp.down.bias)''',
        # RoPE applied to the values as well as to q and k.
        "rope_on_v": '''def decoder_layer(h, layer, cos, sin, cfg):
    B, T, _ = h.shape
    H, KVH, D, eps = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.rms_norm_eps
    attn, mlp = layer.attn, layer.mlp
    x = rms_norm(h, layer.input_norm.weight, eps)
    q, k, v = F.linear(x, attn.qkv.weight, attn.qkv.bias).split([H * D, KVH * D, KVH * D], dim=-1)
    q, k, v = q.view(B, T, H, D), k.view(B, T, KVH, D), v.view(B, T, KVH, D)
    if cfg.qk_norm:
        q, k = rms_norm(q, attn.q_norm.weight, eps), rms_norm(k, attn.k_norm.weight, eps)
    q, k, v = rope(q, cos, sin), rope(k, cos, sin), rope(v, cos, sin)
    k = k.repeat_interleave(H // KVH, dim=2)
    v = v.repeat_interleave(H // KVH, dim=2)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / D**0.5
    causal = torch.ones(T, T, dtype=torch.bool, device=h.device).tril()
    probs = scores.masked_fill(~causal, float("-inf")).softmax(-1)
    out = torch.einsum("bhqk,bkhd->bqhd", probs, v).reshape(B, T, H * D)
    a = h + F.linear(out, attn.o.weight, attn.o.bias)
    gate, up = F.linear(rms_norm(a, layer.post_attn_norm.weight, eps), mlp.gate_up.weight,
                        mlp.gate_up.bias).chunk(2, dim=-1)
    return a + F.linear(F.silu(gate) * up, mlp.down.weight, mlp.down.bias)''',
        # no causal mask: earlier positions see the future (the last position is still right).
        "missing_causal_mask": '''def decoder_layer(h, layer, cos, sin, cfg):
    B, T, _ = h.shape
    H, KVH, D, eps = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.rms_norm_eps
    attn, mlp = layer.attn, layer.mlp
    x = rms_norm(h, layer.input_norm.weight, eps)
    q, k, v = F.linear(x, attn.qkv.weight, attn.qkv.bias).split([H * D, KVH * D, KVH * D], dim=-1)
    q, k, v = q.view(B, T, H, D), k.view(B, T, KVH, D), v.view(B, T, KVH, D)
    if cfg.qk_norm:
        q, k = rms_norm(q, attn.q_norm.weight, eps), rms_norm(k, attn.k_norm.weight, eps)
    q, k = rope(q, cos, sin), rope(k, cos, sin)
    k = k.repeat_interleave(H // KVH, dim=2)
    v = v.repeat_interleave(H // KVH, dim=2)
    probs = (torch.einsum("bqhd,bkhd->bhqk", q, k) / D**0.5).softmax(-1)
    out = torch.einsum("bhqk,bkhd->bqhd", probs, v).reshape(B, T, H * D)
    a = h + F.linear(out, attn.o.weight, attn.o.bias)
    gate, up = F.linear(rms_norm(a, layer.post_attn_norm.weight, eps), mlp.gate_up.weight,
                        mlp.gate_up.bias).chunk(2, dim=-1)
    return a + F.linear(F.silu(gate) * up, mlp.down.weight, mlp.down.bias)''',
        # forgot the second residual: returns the MLP's correction, not the stream plus it.
        "forgot_mlp_residual": '''def decoder_layer(h, layer, cos, sin, cfg):
    B, T, _ = h.shape
    H, KVH, D, eps = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.rms_norm_eps
    attn, mlp = layer.attn, layer.mlp
    x = rms_norm(h, layer.input_norm.weight, eps)
    q, k, v = F.linear(x, attn.qkv.weight, attn.qkv.bias).split([H * D, KVH * D, KVH * D], dim=-1)
    q, k, v = q.view(B, T, H, D), k.view(B, T, KVH, D), v.view(B, T, KVH, D)
    if cfg.qk_norm:
        q, k = rms_norm(q, attn.q_norm.weight, eps), rms_norm(k, attn.k_norm.weight, eps)
    q, k = rope(q, cos, sin), rope(k, cos, sin)
    k = k.repeat_interleave(H // KVH, dim=2)
    v = v.repeat_interleave(H // KVH, dim=2)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / D**0.5
    causal = torch.ones(T, T, dtype=torch.bool, device=h.device).tril()
    probs = scores.masked_fill(~causal, float("-inf")).softmax(-1)
    out = torch.einsum("bhqk,bkhd->bqhd", probs, v).reshape(B, T, H * D)
    a = h + F.linear(out, attn.o.weight, attn.o.bias)
    gate, up = F.linear(rms_norm(a, layer.post_attn_norm.weight, eps), mlp.gate_up.weight,
                        mlp.gate_up.bias).chunk(2, dim=-1)
    return F.linear(F.silu(gate) * up, mlp.down.weight, mlp.down.bias)''',
    },
}
