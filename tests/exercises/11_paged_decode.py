"""Plausible wrong versions of notebook 11's exercise (split-KV: the chunks' partials and their merge):
each must make the exercise's checks fail with an AssertionError (tests/test_exercises.py runs them
through course_lib/exercises.py)."""

_PARTIALS = '''def split_kv_partials(q, k, v, num_splits, tile=1):
    L, H, D = k.shape
    chunk = -(-L // num_splits)
    chunk = -(-chunk // tile) * tile
    o = torch.zeros(num_splits, H, D)
    m = torch.full((num_splits, H), float("-inf"))
    l = torch.zeros(num_splits, H)
    for s in range(num_splits):
        lo, hi = s * chunk, min((s + 1) * chunk, L)
        if lo >= hi:
            continue
        sc = torch.einsum("hd,lhd->hl", q, k[lo:hi]) / math.sqrt(D)
        m[s] = sc.max(-1).values
        p = torch.exp(sc - m[s][:, None])
        l[s] = p.sum(-1)
        o[s] = torch.einsum("hl,lhd->hd", p, v[lo:hi]) / l[s][:, None]
    return o, m, l'''


def _wrong(old: str, new: str) -> str:
    """The solution with one piece changed (the replaced text must be there exactly once)."""
    assert _PARTIALS.count(old) == 1, old
    return _PARTIALS.replace(old, new)


VARIANTS = {
    "split_kv_partials": {
        # chunk = floor(L / S): the last L mod S keys belong to no chunk.
        "floor_chunk_drops_the_tail": _wrong("chunk = -(-L // num_splits)", "chunk = max(L // num_splits, 1)"),
        # an inclusive end: the first key of every next chunk is counted twice.
        "chunks_overlap_by_one": _wrong("min((s + 1) * chunk, L)", "min((s + 1) * chunk + 1, L)"),
        # the end clipped at L - 1: the newest key (the token's own) never attends.
        "drops_the_last_key": _wrong("min((s + 1) * chunk, L)", "min((s + 1) * chunk, L - 1)"),
    },
    "merge_partials": {
        # each chunk's output is already a softmax average, so average them: wrong unless chunks are equal.
        "plain_average": '''def merge_partials(o, m, l):
    seen = l[:, 0] > 0
    return o[seen].mean(0)''',
        # weights from the sums alone: each l_s was taken relative to its own max m_s.
        "sums_without_max_correction": '''def merge_partials(o, m, l):
    w = l
    return (w[..., None] * o).sum(0) / w.sum(0)[..., None]''',
        # rescaled by exp(m_s - M) but the sum l_s forgotten: a short chunk weighs as much as a long one.
        "max_without_sums": '''def merge_partials(o, m, l):
    M = m.max(0).values
    w = torch.exp(m - M)
    return (w[..., None] * o).sum(0) / w.sum(0)[..., None]''',
    },
}
