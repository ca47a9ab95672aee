"""Plausible wrong versions of notebook 19's exercise (rounding float32 to an 8-bit float format).
tests/test_exercises.py runs the notebook's check cells against each and requires an AssertionError."""

_HEAD = '''def round_to_fp8(x, exp_bits, man_bits, max_value):
    bias = 2 ** (exp_bits - 1) - 1
    x = torch.nan_to_num(x.float(), nan=0.0, posinf=max_value, neginf=-max_value)
'''

VARIANTS = {
    "round_to_fp8": {
        # no subnormals: below the smallest normal the step keeps shrinking
        "no_subnormals": _HEAD + '''    mag = x.abs().clamp(max=max_value)
    exponent = torch.floor(torch.log2(mag.clamp(min=1e-30)))
    step = 2.0 ** (exponent - man_bits)
    return torch.sign(x) * torch.clamp(torch.round(mag / step) * step, max=max_value)''',
        # ties away from zero instead of to even
        "ties_away_from_zero": _HEAD + '''    mag = x.abs().clamp(max=max_value)
    exponent = torch.floor(torch.log2(mag.clamp(min=2.0 ** (1 - bias))))
    step = 2.0 ** (exponent - man_bits)
    return torch.sign(x) * torch.clamp(torch.floor(mag / step + 0.5) * step, max=max_value)''',
        # truncates toward zero
        "truncates": _HEAD + '''    mag = x.abs().clamp(max=max_value)
    exponent = torch.floor(torch.log2(mag.clamp(min=2.0 ** (1 - bias))))
    step = 2.0 ** (exponent - man_bits)
    return torch.sign(x) * torch.clamp(torch.floor(mag / step) * step, max=max_value)''',
        # no saturation: values beyond the largest one round on up
        "no_saturation": '''def round_to_fp8(x, exp_bits, man_bits, max_value):
    bias = 2 ** (exp_bits - 1) - 1
    x = torch.nan_to_num(x.float(), nan=0.0)
    mag = x.abs()
    exponent = torch.floor(torch.log2(mag.clamp(min=2.0 ** (1 - bias))))
    step = 2.0 ** (exponent - man_bits)
    return torch.sign(x) * torch.round(mag / step) * step''',
        # the IEEE-style largest value, (2 - 2**-m) * 2**(2**(e-1) - 1): 480 for e4m3, whose top pattern is NaN
        "ieee_largest_value": '''def round_to_fp8(x, exp_bits, man_bits, max_value):
    bias = 2 ** (exp_bits - 1) - 1
    top = (2 - 2.0 ** -man_bits) * 2.0 ** bias
    x = torch.nan_to_num(x.float(), nan=0.0, posinf=top, neginf=-top)
    mag = x.abs().clamp(max=top)
    exponent = torch.floor(torch.log2(mag.clamp(min=2.0 ** (1 - bias))))
    step = 2.0 ** (exponent - man_bits)
    return torch.sign(x) * torch.clamp(torch.round(mag / step) * step, max=top)''',
        # one mantissa bit too many
        "one_bit_too_fine": _HEAD + '''    mag = x.abs().clamp(max=max_value)
    exponent = torch.floor(torch.log2(mag.clamp(min=2.0 ** (1 - bias))))
    step = 2.0 ** (exponent - man_bits - 1)
    return torch.sign(x) * torch.clamp(torch.round(mag / step) * step, max=max_value)''',
        # NaN passes through
        "keeps_nan": '''def round_to_fp8(x, exp_bits, man_bits, max_value):
    bias = 2 ** (exp_bits - 1) - 1
    x = x.float().clamp(-max_value, max_value)
    mag = x.abs()
    exponent = torch.floor(torch.log2(mag.clamp(min=2.0 ** (1 - bias))))
    step = 2.0 ** (exponent - man_bits)
    return torch.sign(x) * torch.clamp(torch.round(mag / step) * step, max=max_value)''',
    },
}
