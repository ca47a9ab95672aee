"""Plausible wrong versions of notebook 05's exercise (the block allocator and the slot mapping).
tests/test_exercises.py runs the notebook's check cells against each and requires an AssertionError."""

VARIANTS = {
    "grow": {
        # ceil written as floor + 1: a table of exactly k * block_size tokens claims a block too early
        "ceil_off_by_one_early": '''def grow(table, num_tokens, free_list, block_size):
    need = num_tokens // block_size + 1 - len(table)
    if need <= 0:
        return []
    if need > len(free_list):
        return None
    new = [free_list.pop(0) for _ in range(need)]
    table.extend(new)
    return new''',
        # floor instead of ceil: the block for a partly filled last block comes one token too late
        "floor_claims_too_late": '''def grow(table, num_tokens, free_list, block_size):
    need = num_tokens // block_size - len(table)
    if need <= 0:
        return []
    if need > len(free_list):
        return None
    new = [free_list.pop(0) for _ in range(need)]
    table.extend(new)
    return new''',
        # forgets the blocks the table already holds: takes blocks for the whole length on every call
        "whole_length_each_time": '''def grow(table, num_tokens, free_list, block_size):
    need = -(-num_tokens // block_size)
    if need > len(free_list):
        return None
    new = [free_list.pop(0) for _ in range(need)]
    table.extend(new)
    return new''',
        # runs out half-way: claims what is free, then returns None with the pool already changed
        "partial_on_failure": '''def grow(table, num_tokens, free_list, block_size):
    need = -(-num_tokens // block_size) - len(table)
    new = []
    while len(new) < max(need, 0):
        if not free_list:
            table.extend(new)
            return None
        new.append(free_list.pop(0))
    table.extend(new)
    return new''',
    },
    "free_table": {
        # empties the table but never gives the blocks back: the pool leaks
        "forgets_to_return_blocks": '''def free_table(table, free_list):
    table.clear()''',
        # gives the blocks back but leaves them in the table: the sequence still "owns" them
        "keeps_the_table": '''def free_table(table, free_list):
    free_list.extend(reversed(table))''',
    },
    "slot_mapping": {
        # forgets to scale the physical block id by the block size
        "forgets_times_block_size": '''def slot_mapping(table, positions, block_size):
    return [table[p // block_size] + p % block_size for p in positions]''',
        # ignores the block table: where a contiguous cache would put the position
        "ignores_the_table": '''def slot_mapping(table, positions, block_size):
    return [(p // block_size) * block_size + p % block_size for p in positions]''',
    },
}
