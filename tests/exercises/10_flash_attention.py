"""Plausible wrong versions of notebook 10's exercise: each must make the exercise's checks fail with an
AssertionError (tests/test_exercises.py runs them through course_lib/exercises.py)."""

_SOLUTION = '''def flash_attention(q, k, v, causal=False, block_m=16, block_n=16):
    Tq, d = q.shape
    Tk = k.shape[0]
    out = torch.empty(Tq, v.shape[1])
    for qs in range(0, Tq, block_m):
        qt = q[qs:qs + block_m] / math.sqrt(d)
        pos = Tk - Tq + torch.arange(qs, qs + qt.shape[0])
        m = torch.full((qt.shape[0],), float("-inf"))
        l = torch.zeros(qt.shape[0])
        acc = torch.zeros(qt.shape[0], v.shape[1])
        k_end = int(pos[-1]) + 1 if causal else Tk
        for ks in range(0, k_end, block_n):
            s = qt @ k[ks:ks + block_n].T
            if causal:
                s = s.masked_fill(ks + torch.arange(s.shape[1]) > pos[:, None], float("-inf"))
            m_new = torch.maximum(m, s.max(-1).values)
            alpha = torch.exp(m - m_new)
            p = torch.exp(s - m_new[:, None])
            l = alpha * l + p.sum(-1)
            acc = alpha[:, None] * acc + p @ v[ks:ks + block_n]
            m = m_new
        out[qs:qs + block_m] = acc / l[:, None]
    return out'''


def _wrong(old: str, new: str) -> str:
    """The solution with one line changed (the replaced text must be there exactly once)."""
    assert _SOLUTION.count(old) == 1, old
    return _SOLUTION.replace(old, new)


VARIANTS = {
    "flash_attention": {
        # the sum is rescaled when the max grows, the accumulated output is not: old tiles weigh too much.
        "no_rescale_of_acc": _wrong("acc = alpha[:, None] * acc + p @ v", "acc = acc + p @ v"),
        # the output is rescaled, the running sum is not: the denominator mixes maxima.
        "no_rescale_of_sum": _wrong("l = alpha * l + p.sum(-1)", "l = l + p.sum(-1)"),
        # causal by the loop bound alone: the keys after a query inside its diagonal tile leak in.
        "no_mask_in_last_tile": _wrong(
            '''            if causal:
                s = s.masked_fill(ks + torch.arange(s.shape[1]) > pos[:, None], float("-inf"))
''', ""),
        # normalised by the last tile's sum instead of the running one.
        "wrong_final_normalisation": _wrong("acc / l[:, None]", "acc / p.sum(-1)[:, None]"),
        # exact, but not FlashAttention: builds each query tile's whole row of scores (bm, Tk) at once.
        "materialises_the_scores": '''def flash_attention(q, k, v, causal=False, block_m=16, block_n=16):
    Tq, d = q.shape
    Tk = k.shape[0]
    s = q @ k.T / math.sqrt(d)
    if causal:
        pos = Tk - Tq + torch.arange(Tq)
        s = s.masked_fill(torch.arange(Tk)[None, :] > pos[:, None], float("-inf"))
    return s.softmax(-1) @ v''',
    },
}
