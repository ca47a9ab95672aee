"""Plausible wrong versions of notebook 18's exercise (group-wise symmetric quantization and its
inverse). tests/test_exercises.py runs the notebook's check cells against each and requires an
AssertionError."""

VARIANTS = {
    "quantize_groups": {
        # the scale from the signed max: a group of negative weights gets a negative or tiny scale
        "signed_max": '''def quantize_groups(w, bits, group_size):
    N, K = w.shape
    g = K if group_size is None else group_size
    qmax = 2 ** (bits - 1) - 1
    groups = w.float().view(N, K // g, g)
    amax = groups.amax(-1)
    scales = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    q = torch.clamp(torch.round(groups / scales[:, :, None]), -qmax - 1, qmax)
    return q.view(N, K).to(torch.int8), scales''',
        # divides by 2**(bits-1): the largest weight lands on qmax + 1 and is clamped
        "scale_by_the_level_count": '''def quantize_groups(w, bits, group_size):
    N, K = w.shape
    g = K if group_size is None else group_size
    qmax = 2 ** (bits - 1) - 1
    groups = w.float().view(N, K // g, g)
    amax = groups.abs().amax(-1)
    scales = torch.where(amax > 0, amax / (qmax + 1), torch.ones_like(amax))
    q = torch.clamp(torch.round(groups / scales[:, :, None]), -qmax - 1, qmax)
    return q.view(N, K).to(torch.int8), scales''',
        # truncates toward zero instead of rounding: errors up to a whole step
        "truncates": '''def quantize_groups(w, bits, group_size):
    N, K = w.shape
    g = K if group_size is None else group_size
    qmax = 2 ** (bits - 1) - 1
    groups = w.float().view(N, K // g, g)
    amax = groups.abs().amax(-1)
    scales = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    q = torch.clamp(torch.trunc(groups / scales[:, :, None]), -qmax - 1, qmax)
    return q.view(N, K).to(torch.int8), scales''',
        # ignores group_size: one scale per row always
        "one_scale_per_row": '''def quantize_groups(w, bits, group_size):
    N, K = w.shape
    qmax = 2 ** (bits - 1) - 1
    amax = w.float().abs().amax(-1, keepdim=True)
    scales = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    q = torch.clamp(torch.round(w.float() / scales), -qmax - 1, qmax)
    return q.to(torch.int8), scales''',
        # a group of zeros divides 0 by 0: NaN scales and integers
        "zero_group_divides_by_zero": '''def quantize_groups(w, bits, group_size):
    N, K = w.shape
    g = K if group_size is None else group_size
    qmax = 2 ** (bits - 1) - 1
    groups = w.float().view(N, K // g, g)
    scales = groups.abs().amax(-1) / qmax
    q = torch.clamp(torch.round(groups / scales[:, :, None]), -qmax - 1, qmax)
    return q.view(N, K).to(torch.int8), scales''',
    },
    "dequantize_groups": {
        # uses each row's first scale for every group
        "first_scale_only": '''def dequantize_groups(q, scales):
    return q.float() * scales[:, :1]''',
        # repeats the scales in the wrong order (tile, not repeat each one g times)
        "tiled_scales": '''def dequantize_groups(q, scales):
    N, K = q.shape
    g = K // scales.shape[1]
    return q.float() * scales.repeat(1, g)''',
    },
}
