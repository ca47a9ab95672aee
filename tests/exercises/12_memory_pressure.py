"""Plausible wrong versions of notebook 12's exercises (the preemption decision and its cost).
tests/test_exercises.py runs the notebook's check cells against each and requires an AssertionError."""

VARIANTS = {
    "choose_victims": {
        # walks the running list from the front: evicts the oldest, the sequence with the most invested
        "oldest_first": '''def choose_victims(running, requester, free_blocks, need):
    victims = []
    for seq_id, blocks in running:
        if free_blocks >= need:
            break
        victims.append(seq_id)
        if seq_id == requester:
            break
        free_blocks += blocks
    return victims''',
        # stops only once there is MORE than needed: one victim too many when the blocks cover it exactly
        "one_too_many": '''def choose_victims(running, requester, free_blocks, need):
    victims = []
    for seq_id, blocks in reversed(running):
        if free_blocks > need:
            break
        victims.append(seq_id)
        if seq_id == requester:
            break
        free_blocks += blocks
    return victims''',
        # counts only the victims' blocks, not those already free: evicts when nothing had to go
        "ignores_free_blocks": '''def choose_victims(running, requester, free_blocks, need):
    victims, freed = [], 0
    for seq_id, blocks in reversed(running):
        if freed >= need:
            break
        victims.append(seq_id)
        if seq_id == requester:
            break
        freed += blocks
    return victims''',
        # never gives up the sequence that asks: evicts older ones behind it instead
        "spares_the_requester": '''def choose_victims(running, requester, free_blocks, need):
    victims = []
    for seq_id, blocks in reversed(running):
        if free_blocks >= need:
            break
        if seq_id == requester:
            continue
        victims.append(seq_id)
        free_blocks += blocks
    return victims''',
    },
    "preemption_cost": {
        # a swap counted one way only: the blocks go out, and are forgotten on the way back in
        "swap_one_direction": '''def preemption_cost(mode, num_tokens, block_size, kv_bytes_per_token, flops_per_token, flops_per_s, bytes_per_s):
    if mode == "recompute":
        return num_tokens * flops_per_token / flops_per_s
    if mode == "swap":
        blocks = -(-num_tokens // block_size)
        return blocks * block_size * kv_bytes_per_token / bytes_per_s
    raise ValueError(f"mode must be 'recompute' or 'swap', got {mode!r}")''',
        # moves tokens, not blocks: the partly filled last block is copied whole
        "swap_tokens_not_blocks": '''def preemption_cost(mode, num_tokens, block_size, kv_bytes_per_token, flops_per_token, flops_per_s, bytes_per_s):
    if mode == "recompute":
        return num_tokens * flops_per_token / flops_per_s
    if mode == "swap":
        return 2 * num_tokens * kv_bytes_per_token / bytes_per_s
    raise ValueError(f"mode must be 'recompute' or 'swap', got {mode!r}")''',
        # floor instead of ceil: the partly filled last block stays behind
        "swap_floor_blocks": '''def preemption_cost(mode, num_tokens, block_size, kv_bytes_per_token, flops_per_token, flops_per_s, bytes_per_s):
    if mode == "recompute":
        return num_tokens * flops_per_token / flops_per_s
    if mode == "swap":
        blocks = num_tokens // block_size
        return 2 * blocks * block_size * kv_bytes_per_token / bytes_per_s
    raise ValueError(f"mode must be 'recompute' or 'swap', got {mode!r}")''',
        # recompute charged for whole blocks: the empty slots of the last block are not tokens to compute
        "recompute_whole_blocks": '''def preemption_cost(mode, num_tokens, block_size, kv_bytes_per_token, flops_per_token, flops_per_s, bytes_per_s):
    blocks = -(-num_tokens // block_size)
    if mode == "recompute":
        return blocks * block_size * flops_per_token / flops_per_s
    if mode == "swap":
        return 2 * blocks * block_size * kv_bytes_per_token / bytes_per_s
    raise ValueError(f"mode must be 'recompute' or 'swap', got {mode!r}")''',
    },
}
