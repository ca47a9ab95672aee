"""Plausible wrong versions of notebook 06's exercises (the top-p filter and the repetition penalty).
tests/test_exercises.py runs the notebook's check cells against each and requires an AssertionError."""

_TOP_P = '''def top_p_filter(logits, top_p):
    probs = logits.float().softmax(dim=-1)
    if top_p >= 1.0:
        return probs
    sorted_probs, order = probs.sort(dim=-1, descending={descending})
    above = {above}
    sorted_probs = sorted_probs.masked_fill({drop}, 0.0)
    kept = {back}
    return {ret}'''

_TOP_P_RIGHT = dict(descending="True", above="sorted_probs.cumsum(dim=-1) - sorted_probs", drop="above >= top_p",
                    back="torch.zeros_like(probs).scatter(-1, order, sorted_probs)",
                    ret="kept / kept.sum(dim=-1, keepdim=True)")


def _top_p(**wrong) -> str:
    return _TOP_P.format(**(_TOP_P_RIGHT | wrong))


_REP = '''def repetition_penalty(logits, prompt_ids, output_ids, penalty):
    out = logits.clone()
    {body}
    return out'''

_REP_RIGHT_BODY = '''seen = torch.tensor(sorted(set(prompt_ids) | set(output_ids)), dtype=torch.long, device=logits.device)
    z = out[seen]
    out[seen] = torch.where(z > 0, z / penalty, z * penalty)'''


def _rep(body: str) -> str:
    return _REP.format(body=body)


VARIANTS = {
    "top_p_filter": {
        # the inclusive cumsum: drops the token that crosses top_p (keeps the top token at least)
        "drops_the_crossing_token": _top_p(
            above="sorted_probs.cumsum(dim=-1)",
            drop="(above > top_p) & (torch.arange(above.shape[-1], device=above.device) > 0)"),
        # strict comparison: a token with exactly top_p of mass above it is kept (one too many at the boundary)
        "keeps_the_token_at_exactly_top_p": _top_p(drop="above > top_p"),
        # zeroes the tail but never renormalises: the kept mass sums to less than 1
        "not_renormalised": _top_p(ret="kept"),
        # sorted least likely first: the "nucleus" is made of the tail
        "sorted_ascending": _top_p(descending="False"),
        # the probabilities come back in sorted order, not in vocabulary order
        "left_in_sorted_order": _top_p(back="sorted_probs"),
    },
    "repetition_penalty": {
        # divides every seen logit: a negative logit moves up, toward 0
        "divides_negative_logits": _rep('''seen = torch.tensor(sorted(set(prompt_ids) | set(output_ids)), dtype=torch.long, device=logits.device)
    out[seen] = out[seen] / penalty'''),
        # one penalty per occurrence: a token seen twice is penalised twice
        "penalises_every_occurrence": _rep('''for t in list(prompt_ids) + list(output_ids):
        out[t] = out[t] / penalty if out[t] > 0 else out[t] * penalty'''),
        # only the output counts (that is the frequency/presence penalties' rule, not this one's)
        "forgets_the_prompt": _rep('''seen = torch.tensor(sorted(set(output_ids)), dtype=torch.long, device=logits.device)
    z = out[seen]
    out[seen] = torch.where(z > 0, z / penalty, z * penalty)'''),
        # multiply positive, divide negative: seen tokens become more likely
        "inverted": _rep('''seen = torch.tensor(sorted(set(prompt_ids) | set(output_ids)), dtype=torch.long, device=logits.device)
    z = out[seen]
    out[seen] = torch.where(z > 0, z * penalty, z / penalty)'''),
        # subtracts the penalty like a presence penalty
        "subtracts": _rep('''seen = torch.tensor(sorted(set(prompt_ids) | set(output_ids)), dtype=torch.long, device=logits.device)
    out[seen] = out[seen] - penalty'''),
    },
}
