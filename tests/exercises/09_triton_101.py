"""Plausible wrong versions of notebook 09's exercises (two Triton kernels): each must make the
exercise's checks fail with an AssertionError (tests/test_exercises.py runs them through
course_lib/exercises.py). Under TRITON_INTERPRET=1 a @triton.jit kernel exec'd from a string runs
(the interpreter needs no source file); the checks put every tensor in a guarded buffer, so the
variants that read or write past the end touch only the guard, never foreign memory."""

_ADD = '''@triton.jit
def add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask)
    y = tl.load(y_ptr + offs, mask=mask)
    tl.store(out_ptr + offs, x + y, mask=mask)'''

_NORM = '''@triton.jit
def fused_add_rmsnorm_kernel(x_ptr, res_ptr, w_ptr, y_ptr, r_ptr, stride, d, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < d
    x = tl.load(x_ptr + row * stride + cols, mask=mask, other=0.0).to(tl.float32)
    res = tl.load(res_ptr + row * stride + cols, mask=mask, other=0.0).to(tl.float32)
    r = x + res
    tl.store(r_ptr + row * stride + cols, r, mask=mask)
    ms = tl.sum(r * r, axis=0) / d
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    y = r * tl.rsqrt(ms + eps) * w
    tl.store(y_ptr + row * stride + cols, y, mask=mask)'''


def _wrong(src: str, *edits: tuple[str, str]) -> str:
    """``src`` with every occurrence of each old text replaced by the new one (each must occur)."""
    for old, new in edits:
        assert old in src, old
        src = src.replace(old, new)
    return src


VARIANTS = {
    "add_kernel": {
        # no mask at all: the last block reads past the end of x and y and writes past the end of out.
        "missing_mask": _wrong(_ADD, (", mask=mask)", ")")),
        # loads masked, the store forgotten: the last program writes its padding into foreign memory.
        "store_not_masked": _wrong(_ADD, (", x + y, mask=mask)", ", x + y)")),
        # off by one: index n is treated as inside the vector.
        "mask_off_by_one": _wrong(_ADD, ("offs < n", "offs <= n")),
        # every program starts at element pid, not pid * BLOCK: the blocks overlap.
        "offset_not_scaled_by_block": _wrong(_ADD, ("pid * BLOCK + tl.arange", "pid + tl.arange")),
    },
    "fused_add_rmsnorm_kernel": {
        # no mask: a row of d = 100 in a block of 128 reads 28 elements of the next row (or the guard).
        "missing_mask": _wrong(_NORM, (", mask=mask, other=0.0)", ")"), (", mask=mask)", ")")),
        # the mean over the block, padding included: d / BLOCK too small whenever d is not a power of two.
        "mean_over_block": _wrong(_NORM, ("/ d\n", "/ BLOCK\n")),
        # eps forgotten: fine on ordinary rows, 0 / 0 on a zero row and far off on tiny ones.
        "no_eps": _wrong(_NORM, ("ms + eps", "ms")),
        # divided by the mean square, not its root: the wrong scale.
        "no_square_root": _wrong(_NORM, ("tl.rsqrt(ms + eps)", "(1.0 / (ms + eps))")),
        # the weight forgotten.
        "no_weight": _wrong(_NORM, ("* tl.rsqrt(ms + eps) * w", "* tl.rsqrt(ms + eps)")),
    },
}
