"""Plausible wrong versions of notebook 13's exercise (the token-budget step of a chunked-prefill
scheduler). tests/test_exercises.py runs the notebook's check cells against each and requires an
AssertionError."""

VARIANTS = {
    "schedule_step": {
        # prefill-first: running prompts take the budget before the decodes (the stall chunking should fix)
        "prompts_before_decodes": '''def schedule_step(running, waiting, budget, max_num_seqs):
    left, plan = budget, {}
    decodes = [r for r in running if r.num_tokens - r.num_computed == 1]
    prompts = [r for r in running if r.num_tokens - r.num_computed > 1]
    for r in prompts + decodes:
        n = min(r.num_tokens - r.num_computed, left)
        if n > 0:
            plan[r.name] = n
            left -= n
    free_slots = max_num_seqs - len(running)
    for r in waiting:
        if left == 0 or free_slots == 0:
            break
        plan[r.name] = min(r.num_tokens - r.num_computed, left)
        left -= plan[r.name]
        free_slots -= 1
    return plan''',
        # the decodes' tokens are handed out but never taken from the budget: steps overshoot it
        "decodes_not_subtracted": '''def schedule_step(running, waiting, budget, max_num_seqs):
    left, plan = budget, {}
    decodes = [r for r in running if r.num_tokens - r.num_computed == 1]
    prompts = [r for r in running if r.num_tokens - r.num_computed > 1]
    for r in decodes:
        if left > 0:
            plan[r.name] = 1
    for r in prompts:
        n = min(r.num_tokens - r.num_computed, left)
        if n > 0:
            plan[r.name] = n
            left -= n
    free_slots = max_num_seqs - len(running)
    for r in waiting:
        if left == 0 or free_slots == 0:
            break
        plan[r.name] = min(r.num_tokens - r.num_computed, left)
        left -= plan[r.name]
        free_slots -= 1
    return plan''',
        # a chunk cut to what is left plus one: off by one where the budget runs out
        "chunk_one_too_long": '''def schedule_step(running, waiting, budget, max_num_seqs):
    left, plan = budget, {}
    decodes = [r for r in running if r.num_tokens - r.num_computed == 1]
    prompts = [r for r in running if r.num_tokens - r.num_computed > 1]
    for r in decodes + prompts:
        n = min(r.num_tokens - r.num_computed, left)
        if n > 0:
            plan[r.name] = n
            left -= n
    free_slots = max_num_seqs - len(running)
    for r in waiting:
        if left == 0 or free_slots == 0:
            break
        plan[r.name] = min(r.num_tokens - r.num_computed, left + 1)
        left = max(0, left - plan[r.name])
        free_slots -= 1
    return plan''',
        # keeps admitting once the budget is spent: requests join the batch with 0 tokens
        "admits_at_zero_budget": '''def schedule_step(running, waiting, budget, max_num_seqs):
    left, plan = budget, {}
    decodes = [r for r in running if r.num_tokens - r.num_computed == 1]
    prompts = [r for r in running if r.num_tokens - r.num_computed > 1]
    for r in decodes + prompts:
        n = min(r.num_tokens - r.num_computed, left)
        if n > 0:
            plan[r.name] = n
            left -= n
    free_slots = max_num_seqs - len(running)
    for r in waiting:
        if free_slots == 0:
            break
        plan[r.name] = min(r.num_tokens - r.num_computed, left)
        left -= plan[r.name]
        free_slots -= 1
    return plan''',
        # admits while there is budget, whatever the batch size: max_num_seqs ignored
        "ignores_max_num_seqs": '''def schedule_step(running, waiting, budget, max_num_seqs):
    left, plan = budget, {}
    decodes = [r for r in running if r.num_tokens - r.num_computed == 1]
    prompts = [r for r in running if r.num_tokens - r.num_computed > 1]
    for r in decodes + prompts:
        n = min(r.num_tokens - r.num_computed, left)
        if n > 0:
            plan[r.name] = n
            left -= n
    for r in waiting:
        if left == 0:
            break
        plan[r.name] = min(r.num_tokens - r.num_computed, left)
        left -= plan[r.name]
    return plan''',
    },
}
