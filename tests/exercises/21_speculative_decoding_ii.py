"""Plausible wrong versions of notebook 21's exercise (the n-gram proposer of prompt lookup decoding).
tests/test_exercises.py runs the notebook's check cells against each and requires an AssertionError."""

VARIANTS = {
    "propose_ngram": {
        # the earliest occurrence instead of the latest
        "earliest_match": '''def propose_ngram(context, k, max_n, min_n):
    for n in range(min(max_n, len(context) - 1), min_n - 1, -1):
        suffix = context[-n:]
        for start in range(0, len(context) - n):
            if context[start:start + n] == suffix:
                return context[start + n:start + n + k]
    return []''',
        # shortest n first: a one-token match wins over a longer history
        "shortest_n_first": '''def propose_ngram(context, k, max_n, min_n):
    for n in range(min_n, min(max_n, len(context) - 1) + 1):
        suffix = context[-n:]
        for start in range(len(context) - n - 1, -1, -1):
            if context[start:start + n] == suffix:
                return context[start + n:start + n + k]
    return []''',
        # lets the suffix match itself: proposes nothing useful (the empty tail after it)
        "matches_the_suffix_itself": '''def propose_ngram(context, k, max_n, min_n):
    for n in range(min(max_n, len(context)), min_n - 1, -1):
        suffix = context[-n:]
        for start in range(len(context) - n, -1, -1):
            if context[start:start + n] == suffix:
                return context[start + n:start + n + k]
    return []''',
        # proposes the matched n-gram again instead of what followed it
        "proposes_the_match": '''def propose_ngram(context, k, max_n, min_n):
    for n in range(min(max_n, len(context) - 1), min_n - 1, -1):
        suffix = context[-n:]
        for start in range(len(context) - n - 1, -1, -1):
            if context[start:start + n] == suffix:
                return context[start:start + k]
    return []''',
        # ignores min_n: always falls back to one-token matches
        "ignores_min_n": '''def propose_ngram(context, k, max_n, min_n):
    for n in range(min(max_n, len(context) - 1), 0, -1):
        suffix = context[-n:]
        for start in range(len(context) - n - 1, -1, -1):
            if context[start:start + n] == suffix:
                return context[start + n:start + n + k]
    return []''',
        # stops at the first n tried, even when it does not match
        "gives_up_after_max_n": '''def propose_ngram(context, k, max_n, min_n):
    n = min(max_n, len(context) - 1)
    if n < min_n:
        return []
    suffix = context[-n:]
    for start in range(len(context) - n - 1, -1, -1):
        if context[start:start + n] == suffix:
            return context[start + n:start + n + k]
    return []''',
    },
}
