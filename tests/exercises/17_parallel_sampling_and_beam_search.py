"""Plausible wrong versions of notebook 17's exercise (a block manager's fork and copy-on-write
append_slot). tests/test_exercises.py runs the notebook's check cells against each and requires an
AssertionError."""

VARIANTS = {
    "fork": {
        # shares the blocks but counts no new owner: the first free of either sequence frees them
        "no_incref": '''def fork(pool, parent, child):
    pool.tables[child] = list(pool.tables[parent])
    pool.lengths[child] = pool.lengths[parent]''',
        # the child and the parent hold one list object: a copy on write changes both tables
        "aliased_table": '''def fork(pool, parent, child):
    pool.tables[child] = pool.tables[parent]
    pool.lengths[child] = pool.lengths[parent]
    for b in pool.tables[child]:
        pool.ref[b] += 1''',
        # copies every block up front: right tokens, none of the memory saved
        "copies_every_block": '''def fork(pool, parent, child):
    pool.tables[child] = []
    for b in pool.tables[parent]:
        new = pool.take()
        pool.data[new] = list(pool.data[b])
        pool.tables[child].append(new)
    pool.lengths[child] = pool.lengths[parent]''',
    },
    "append_slot": {
        # writes into a shared block: the other owners' K/V change under them
        "no_copy_on_write": '''def append_slot(pool, seq):
    table, n = pool.tables[seq], pool.lengths[seq]
    slot = n % pool.block_size
    if slot == 0:
        table.append(pool.take())
    pool.lengths[seq] = n + 1
    return table[-1], slot, None''',
        # copies a block that is its own already (ref 1): right tokens, a copy per write
        "copies_its_own_block": '''def append_slot(pool, seq):
    table, n = pool.tables[seq], pool.lengths[seq]
    slot, copied = n % pool.block_size, None
    if slot == 0:
        table.append(pool.take())
    else:
        old = table[-1]
        table[-1] = pool.take()
        pool.data[table[-1]] = list(pool.data[old][:slot])
        pool.release(old)
        copied = old
    pool.lengths[seq] = n + 1
    return table[-1], slot, copied''',
        # never starts a new block: the slot after a full block is outside it
        "no_new_block_when_full": '''def append_slot(pool, seq):
    table, n = pool.tables[seq], pool.lengths[seq]
    slot, copied = n % pool.block_size, None
    if not table:
        table.append(pool.take())
    elif pool.ref[table[-1]] > 1:
        old = table[-1]
        table[-1] = pool.take()
        pool.data[table[-1]] = list(pool.data[old][:slot])
        pool.release(old)
        copied = old
    pool.lengths[seq] = n + 1
    return table[-1], slot, copied''',
        # copies, but keeps its reference to the old block: it never becomes free
        "copy_keeps_the_old_reference": '''def append_slot(pool, seq):
    table, n = pool.tables[seq], pool.lengths[seq]
    slot, copied = n % pool.block_size, None
    if slot == 0:
        table.append(pool.take())
    elif pool.ref[table[-1]] > 1:
        old = table[-1]
        table[-1] = pool.take()
        pool.data[table[-1]] = list(pool.data[old][:slot])
        copied = old
    pool.lengths[seq] = n + 1
    return table[-1], slot, copied''',
        # takes a fresh block on write but copies nothing into it: the shared tokens are lost
        "copy_without_the_data": '''def append_slot(pool, seq):
    table, n = pool.tables[seq], pool.lengths[seq]
    slot, copied = n % pool.block_size, None
    if slot == 0:
        table.append(pool.take())
    elif pool.ref[table[-1]] > 1:
        old = table[-1]
        table[-1] = pool.take()
        pool.release(old)
        copied = old
    pool.lengths[seq] = n + 1
    return table[-1], slot, copied''',
        # copies when the block is shared, tested on the wrong count: only when a third owner reads it
        "copies_only_above_two_owners": '''def append_slot(pool, seq):
    table, n = pool.tables[seq], pool.lengths[seq]
    slot, copied = n % pool.block_size, None
    if slot == 0:
        table.append(pool.take())
    elif pool.ref[table[-1]] > 2:
        old = table[-1]
        table[-1] = pool.take()
        pool.data[table[-1]] = list(pool.data[old][:slot])
        pool.release(old)
        copied = old
    pool.lengths[seq] = n + 1
    return table[-1], slot, copied''',
    },
}
