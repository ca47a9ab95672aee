"""Plausible wrong versions of notebook 15's exercise (the block hash chain and the longest cached
prefix). tests/test_exercises.py runs the notebook's check cells against each and requires an
AssertionError."""

VARIANTS = {
    "block_hashes": {
        # every block named by its own tokens only: the same block after another prefix looks cached
        "no_chain": '''def block_hashes(token_ids, block_size):
    return [hash_block(None, token_ids[s:s + block_size])
            for s in range(0, len(token_ids) - block_size + 1, block_size)]''',
        # the partial last block gets a name too (its K/V is still being written)
        "names_the_partial_block": '''def block_hashes(token_ids, block_size):
    names = []
    for start in range(0, len(token_ids), block_size):
        names.append(hash_block(names[-1] if names else None, token_ids[start:start + block_size]))
    return names''',
        # chained to the first block instead of the one before
        "chained_to_the_root_block": '''def block_hashes(token_ids, block_size):
    names = []
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        names.append(hash_block(names[0] if names else None, token_ids[start:start + block_size]))
    return names''',
    },
    "cached_prefix": {
        # a prompt found whole takes every block: its last token is never computed, no logits to sample
        "keeps_no_last_token": '''def cached_prefix(token_ids, block_size, cached):
    found = []
    for name in block_hashes(token_ids, block_size):
        if name not in cached:
            break
        found.append(cached[name])
    return found, len(found) * block_size''',
        # skips over a miss: a later block cannot be valid once an earlier one differs
        "skips_misses": '''def cached_prefix(token_ids, block_size, cached):
    found = []
    for name in block_hashes(token_ids[:len(token_ids) - 1], block_size):
        if name in cached:
            found.append(cached[name])
    return found, len(found) * block_size''',
        # counts the tokens of every named block, found or not
        "counts_lookups_not_hits": '''def cached_prefix(token_ids, block_size, cached):
    found, names = [], block_hashes(token_ids[:len(token_ids) - 1], block_size)
    for name in names:
        if name not in cached:
            break
        found.append(cached[name])
    return found, len(names) * block_size''',
        # the hit counted in blocks, not tokens
        "blocks_not_tokens": '''def cached_prefix(token_ids, block_size, cached):
    found = []
    for name in block_hashes(token_ids[:len(token_ids) - 1], block_size):
        if name not in cached:
            break
        found.append(cached[name])
    return found, len(found)''',
    },
}
