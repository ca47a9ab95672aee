"""Plausible wrong versions of notebook 20's exercise (speculative decoding's rejection sampling rule).
tests/test_exercises.py runs the notebook's check cells against each and requires an AssertionError."""

VARIANTS = {
    "rejection_sample": {
        # keeps every draft: the draft's distribution comes out, not the target's
        "always_accepts": '''def rejection_sample(draft_tokens, draft_probs, target_probs, generator):
    out = list(draft_tokens)
    out.append(int(torch.multinomial(target_probs[len(draft_tokens)], 1, generator=generator)))
    return out''',
        # the ratio upside down: q / p
        "inverted_ratio": '''def rejection_sample(draft_tokens, draft_probs, target_probs, generator):
    out = []
    for i, x in enumerate(draft_tokens):
        p, q = target_probs[i], draft_probs[i]
        if torch.rand((), generator=generator) < min(1.0, (q[x] / p[x]).item()):
            out.append(x)
            continue
        residual = (p - q).clamp(min=0)
        out.append(int(torch.multinomial(residual if residual.sum() > 0 else p, 1, generator=generator)))
        return out
    out.append(int(torch.multinomial(target_probs[len(draft_tokens)], 1, generator=generator)))
    return out''',
        # after a rejection draws from p itself: tokens the draft covered come out too often
        "resamples_from_p": '''def rejection_sample(draft_tokens, draft_probs, target_probs, generator):
    out = []
    for i, x in enumerate(draft_tokens):
        p, q = target_probs[i], draft_probs[i]
        if torch.rand((), generator=generator) < min(1.0, (p[x] / q[x]).item()):
            out.append(x)
            continue
        out.append(int(torch.multinomial(p, 1, generator=generator)))
        return out
    out.append(int(torch.multinomial(target_probs[len(draft_tokens)], 1, generator=generator)))
    return out''',
        # keeps a draft only where the target likes it more, with no coin: deterministic and biased
        "accepts_where_p_beats_q": '''def rejection_sample(draft_tokens, draft_probs, target_probs, generator):
    out = []
    for i, x in enumerate(draft_tokens):
        p, q = target_probs[i], draft_probs[i]
        if p[x] >= q[x]:
            out.append(x)
            continue
        residual = (p - q).clamp(min=0)
        out.append(int(torch.multinomial(residual if residual.sum() > 0 else p, 1, generator=generator)))
        return out
    out.append(int(torch.multinomial(target_probs[len(draft_tokens)], 1, generator=generator)))
    return out''',
        # forgets the bonus token when every draft is kept
        "no_bonus_token": '''def rejection_sample(draft_tokens, draft_probs, target_probs, generator):
    out = []
    for i, x in enumerate(draft_tokens):
        p, q = target_probs[i], draft_probs[i]
        if torch.rand((), generator=generator) < min(1.0, (p[x] / q[x]).item()):
            out.append(x)
            continue
        residual = (p - q).clamp(min=0)
        out.append(int(torch.multinomial(residual if residual.sum() > 0 else p, 1, generator=generator)))
        return out
    return out''',
        # goes on after a rejection instead of stopping
        "continues_after_a_rejection": '''def rejection_sample(draft_tokens, draft_probs, target_probs, generator):
    out = []
    for i, x in enumerate(draft_tokens):
        p, q = target_probs[i], draft_probs[i]
        if torch.rand((), generator=generator) < min(1.0, (p[x] / q[x]).item()):
            out.append(x)
        else:
            residual = (p - q).clamp(min=0)
            out.append(int(torch.multinomial(residual if residual.sum() > 0 else p, 1, generator=generator)))
    out.append(int(torch.multinomial(target_probs[len(draft_tokens)], 1, generator=generator)))
    return out''',
    },
}
