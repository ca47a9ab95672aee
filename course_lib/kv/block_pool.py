"""The block pool: every physical KV block, its reference count, and the free queue. Pure Python.

    blocks:      [B0 ref 1] [B1 ref 2] [B2 ref 0] [B3 ref 0] [B4 ref 1] ...
    free queue:  B3 <-> B2 <-> ...      (front = evicted/reused first)

A block is in the free queue exactly when its ref count is 0. Sharing a block (a forked sample, a
cached prefix on Day 15) raises its count; each owner's `free` lowers it, and the last owner returns
it to the *back* of the queue, so the blocks freed longest ago are reused first.

Prefix caching (Day 15) gives a full block an identity, its ``block_hash`` (a hash of its tokens and
of every token before it: kv_cache_manager.py), and files it in ``cached``:

    cached:      {h(A): B0, h(A,B): B4, h(C): B2}          B2 is cached *and* free (ref 0)
    free queue:  B3 <-> B2 <-> ...

A free block keeps its hash and its K/V until the queue hands it out again: a later request whose
prompt starts with C takes B2 back out of the middle of the queue (`touch`) instead of computing C.
Handing a cached block out for new content evicts it (`allocate` drops its hash), so the free queue is
also the LRU eviction order. Nothing is ever "in use and evicted": a block with owners is never on
the queue.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterable


class NoFreeBlocksError(RuntimeError):
    pass


@dataclass
class Block:
    block_id: int
    ref_cnt: int = 0
    block_hash: int | None = None     # set by prefix caching (Day 15); None: not reusable by content


class BlockPool:
    def __init__(self, num_blocks: int):
        if type(num_blocks) is not int or num_blocks < 1:
            raise ValueError(f"num_blocks must be an integer >= 1, got {num_blocks!r}")
        self.blocks = [Block(i) for i in range(num_blocks)]
        # OrderedDict as a doubly linked list: O(1) pop from the front, append at the back and, for
        # prefix caching later, removal from the middle when a cached free block is hit again.
        self.free_queue: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self.cached: dict[int, int] = {}      # block hash -> the block holding that content (Day 15)

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_queue)

    def free_block_ids(self) -> list[int]:
        """Free blocks in the order they will be handed out."""
        return list(self.free_queue)

    def allocate(self, n: int) -> list[int]:
        """Take ``n`` blocks from the front of the free queue, each with ref count 1; their ids.

        Ids, not Block objects, travel through the engine: a block table is a plain list of ints,
        so the scheduler can hand the runner a copy of it per step at C speed."""
        if n > len(self.free_queue):
            raise NoFreeBlocksError(f"need {n} blocks, {len(self.free_queue)} free")
        out = []
        for _ in range(n):
            block = self.blocks[self.free_queue.popitem(last=False)[0]]
            assert block.ref_cnt == 0, f"block {block.block_id} on the free queue is in use"
            if block.block_hash is not None:              # evict: its content is about to change
                del self.cached[block.block_hash]
                block.block_hash = None
            block.ref_cnt = 1
            out.append(block.block_id)
        return out

    # ---- prefix caching (Day 15) -----------------------------------------------------------------
    def lookup(self, block_hash: int) -> int | None:
        """The block holding the content named ``block_hash``, in use or free; None if none does."""
        return self.cached.get(block_hash)

    def touch(self, block_ids: Iterable[int]) -> None:
        """One more owner for each cached block a request found (a free one leaves the queue)."""
        for i in block_ids:
            block = self.blocks[i]
            if block.ref_cnt == 0:
                del self.free_queue[i]
            block.ref_cnt += 1

    def cache(self, block_id: int, block_hash: int) -> bool:
        """File an owned, full block under ``block_hash``. False (and nothing filed) when another
        block already holds that content: two requests computed it side by side; the first stays."""
        block = self.blocks[block_id]
        assert block.ref_cnt > 0, f"block {block_id} is free: only an owner's full block is cached"
        if block.block_hash is not None:                  # filed already (a cache hit, or earlier)
            assert block.block_hash == block_hash, f"block {block_id} filed under another content"
            return True
        if block_hash in self.cached:
            return False
        block.block_hash = block_hash
        self.cached[block_hash] = block_id
        return True

    def uncache(self, block_ids: Iterable[int]) -> None:
        """Forget what these blocks hold (a failed step may have left them half written)."""
        for i in block_ids:
            block = self.blocks[i]
            if block.block_hash is not None:
                del self.cached[block.block_hash]
                block.block_hash = None

    def reset_cache(self) -> bool:
        """Forget every cached block (vLLM's reset_prefix_cache). Refused (False) while any block has
        an owner: a running request's blocks may be filed and must stay consistent."""
        if self.num_free_blocks != self.num_blocks:
            return False
        for block in self.blocks:
            block.block_hash = None
        self.cached.clear()
        return True

    def incref(self, block_ids: Iterable[int]) -> None:
        """One more owner for each block (fork, shared prefix)."""
        for i in block_ids:
            block = self.blocks[i]
            assert block.ref_cnt > 0, f"block {i} is free: nothing to share"
            block.ref_cnt += 1

    def free(self, block_ids: Iterable[int]) -> None:
        """One owner fewer for each block; a block nobody owns goes to the back of the free queue.

        Callers pass a sequence's blocks tail first, so its last block is reused before its first (a
        sequence's first blocks are the ones a later request is most likely to share, Day 15)."""
        for i in block_ids:
            block = self.blocks[i]
            block.ref_cnt -= 1
            assert block.ref_cnt >= 0, f"block {i} freed more often than taken"
            if block.ref_cnt == 0:
                self.free_queue[i] = None
