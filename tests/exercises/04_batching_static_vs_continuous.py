"""Plausible wrong versions of notebook 04's exercise: each must make the exercise's checks fail with an
AssertionError (tests/test_exercises.py runs them through course_lib/exercises.py)."""

VARIANTS = {
    "continuous_step": {
        # admits first, while finished requests still hold their slots: a freed slot idles one step.
        "admit_before_retire": '''def continuous_step(running, waiting, remaining, max_num_seqs):
    admitted = []
    while waiting and len(running) < max_num_seqs:
        admitted.append(waiting.popleft())
        running.append(admitted[-1])
    running[:] = [r for r in running if remaining[r] > 0]
    for r in running:
        remaining[r] -= 1
    return admitted''',
        # off by one on the finishing step: retires a request when one token is left, so its last
        # token is never produced.
        "retires_one_token_early": '''def continuous_step(running, waiting, remaining, max_num_seqs):
    running[:] = [r for r in running if remaining[r] > 1]
    admitted = []
    while waiting and len(running) < max_num_seqs:
        admitted.append(waiting.popleft())
        running.append(admitted[-1])
    for r in running:
        remaining[r] -= 1
    return admitted''',
        # off by one the other way: treats the admission step as prompt-only, so the first token comes
        # one step later and every request finishes a step late.
        "prefill_gives_no_token": '''def continuous_step(running, waiting, remaining, max_num_seqs):
    running[:] = [r for r in running if remaining[r] > 0]
    admitted = []
    while waiting and len(running) < max_num_seqs:
        admitted.append(waiting.popleft())
        running.append(admitted[-1])
    for r in running:
        if r not in admitted:
            remaining[r] -= 1
    return admitted''',
        # forgets the slot limit: admits everyone who waits.
        "ignores_max_num_seqs": '''def continuous_step(running, waiting, remaining, max_num_seqs):
    running[:] = [r for r in running if remaining[r] > 0]
    admitted = []
    while waiting:
        admitted.append(waiting.popleft())
        running.append(admitted[-1])
    for r in running:
        remaining[r] -= 1
    return admitted''',
        # takes the newest arrival first (pop instead of popleft): first come, first served broken.
        "newest_first": '''def continuous_step(running, waiting, remaining, max_num_seqs):
    running[:] = [r for r in running if remaining[r] > 0]
    admitted = []
    while waiting and len(running) < max_num_seqs:
        admitted.append(waiting.pop())
        running.append(admitted[-1])
    for r in running:
        remaining[r] -= 1
    return admitted''',
        # refills at most one free slot per step (one admission per iteration).
        "one_admission_per_step": '''def continuous_step(running, waiting, remaining, max_num_seqs):
    running[:] = [r for r in running if remaining[r] > 0]
    admitted = []
    if waiting and len(running) < max_num_seqs:
        admitted.append(waiting.popleft())
        running.append(admitted[-1])
    for r in running:
        remaining[r] -= 1
    return admitted''',
    },
}
