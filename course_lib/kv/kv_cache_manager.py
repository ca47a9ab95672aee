"""The KV cache manager: which blocks each sequence owns, on the device and (swapped out) on the host.

    block_size 4, seq 7 holds 10 tokens:   block table [5, 2, 9]
        positions 0-3 -> block 5, 4-7 -> block 2, 8-9 -> block 9 (slots 2-3 of it still empty)
        slot of position p = table[p // block_size] * block_size + p % block_size

The scheduler asks for room before it schedules tokens (`allocate_slots`), and gets None rather than a
partial allocation when the pool cannot give it, so a failed request changes nothing. A sequence claims
a block only when its next token needs one: at most block_size - 1 slots per sequence sit reserved and
empty (Day 3's contiguous cache reserved max_len). Shared blocks (``fork``) are counted by the pool.

Swapping (Day 12) moves a sequence's blocks to a second pool that stands for pinned host memory and
back; this class only decides which block goes where and returns the (src, dst) pairs; the model
runner copies the data.

Prefix caching (Day 15, ``enable_prefix_caching``) names every full block by its content and by
everything before it, a hash chain:

    block_size 4     tokens  [s y s t | e m . . | U s e r | : h i ?]
                     hashes   h0 = H(root, syst)  h1 = H(h0, em..)  h2 = H(h1, User)   (last: not full)

Two prompts get the same h_i exactly when their first (i + 1) * block_size tokens are the same, so a
new request walks its own chain through the pool's ``cached`` map and stops at the first miss
(`get_computed_blocks`); the blocks it found become the head of its table and it computes only the
rest. The last prompt token is always computed (its logits give the first output token), so a prompt
found whole still runs one block. A request's blocks are filed as soon as the step that computes them
is scheduled (`cache_blocks`): a layer writes every new K/V before any query reads the cache
(kv/paged.py), so a request admitted in the same step may already share them.
"""
from __future__ import annotations

import hashlib
from array import array
from dataclasses import dataclass
from typing import Callable

from .block_pool import BlockPool


def hash_block(parent: int | None, token_ids) -> int:
    """The name of a full block: a 128-bit hash of its token ids and of its parent's name (None for
    a sequence's first block). 128 bits, not Python's 64-bit ``hash``: a collision would hand a
    request another prompt's K/V without a sound, and Python's tuple hash is easy to collide on
    purpose. Day 24 (LoRA) adds the adapter to the name: the same tokens under another adapter
    are other K/V."""
    h = hashlib.blake2b(b"" if parent is None else parent.to_bytes(16, "little"), digest_size=16)
    h.update(array("q", token_ids).tobytes())
    return int.from_bytes(h.digest(), "little")


@dataclass
class PrefixCacheStats:
    """Tokens looked up in the cache and found there since the start (vLLM's prefix cache queries
    and hits), counted at each admission from the waiting queue (a sequence preempted by recompute
    is looked up again). Requests with prompt_logprobs skip the cache and are not counted."""
    requests: int = 0         # admissions that looked the cache up
    queries: int = 0          # their tokens
    hits: int = 0             # of those, tokens whose K/V was found

    @property
    def hit_rate(self) -> float:
        return self.hits / self.queries if self.queries else 0.0


TokenSlice = Callable[[int, int], list]      # (start, stop) -> the sequence's token ids there


class KVCacheManager:
    def __init__(self, num_blocks: int, block_size: int, num_swap_blocks: int = 0,
                 enable_prefix_caching: bool = False):
        if type(block_size) is not int or block_size < 1:
            raise ValueError(f"block_size must be an integer >= 1, got {block_size!r}")
        self.block_size = block_size
        self.pool = BlockPool(num_blocks)
        self.swap_pool = BlockPool(num_swap_blocks) if num_swap_blocks else None
        self.tables: dict[int, list[int]] = {}            # seq_id -> its device block ids, in order
        self.swapped: dict[int, list[int]] = {}           # seq_id -> its host block ids, in order
        self.enable_prefix_caching = enable_prefix_caching
        self.hashes: dict[int, list[int]] = {}            # seq_id -> the hash chain of its full blocks
        self.num_cached_blocks: dict[int, int] = {}       # seq_id -> its table's blocks filed so far
        self.stats = PrefixCacheStats()

    @property
    def num_blocks(self) -> int:
        return self.pool.num_blocks

    @property
    def num_free_blocks(self) -> int:
        return self.pool.num_free_blocks

    def blocks_for(self, num_tokens: int) -> int:
        """Blocks that hold ``num_tokens`` positions: ceil(num_tokens / block_size)."""
        return -(-num_tokens // self.block_size)

    def block_ids(self, seq_id: int) -> list[int]:
        """A copy of ``seq_id``'s block table."""
        return list(self.tables.get(seq_id, ()))

    def num_missing_blocks(self, seq_id: int, num_tokens: int) -> int:
        return max(0, self.blocks_for(num_tokens) - len(self.tables.get(seq_id, ())))

    # ---- prefix caching (Day 15) -----------------------------------------------------------------
    def _chain(self, seq_id: int, num_tokens: int, tokens: TokenSlice) -> list[int]:
        """``seq_id``'s hash chain, extended to the full blocks of its first ``num_tokens`` tokens."""
        chain, bs = self.hashes.setdefault(seq_id, []), self.block_size
        for i in range(len(chain), num_tokens // bs):
            chain.append(hash_block(chain[-1] if chain else None, tokens(i * bs, (i + 1) * bs)))
        return chain

    def get_computed_blocks(self, seq_id: int, num_tokens: int,
                            tokens: TokenSlice) -> tuple[list[int], int]:
        """Cached blocks holding the longest prefix of ``seq_id``'s first ``num_tokens`` tokens, and
        how many tokens they cover (a multiple of block_size, at most ``num_tokens - 1``). Changes no
        block: `allocate_slots` takes them. ([], 0) with prefix caching off."""
        if not self.enable_prefix_caching:
            return [], 0
        found = []
        for h in self._chain(seq_id, num_tokens - 1, tokens):
            block = self.pool.lookup(h)
            if block is None:
                break
            found.append(block)
        return found, len(found) * self.block_size

    def cache_blocks(self, seq_id: int, num_tokens: int, tokens: TokenSlice) -> None:
        """File the blocks of ``seq_id`` that its first ``num_tokens`` tokens (known ids, their K/V
        computed or being computed by the step just scheduled) fill, so later requests find them."""
        if not self.enable_prefix_caching:
            return
        table, done = self.tables[seq_id], self.num_cached_blocks.get(seq_id, 0)
        full = min(num_tokens // self.block_size, len(table))
        if full <= done:
            return
        chain = self._chain(seq_id, full * self.block_size, tokens)
        for i in range(done, full):
            self.pool.cache(table[i], chain[i])
        self.num_cached_blocks[seq_id] = full

    def reset_prefix_cache(self) -> bool:
        """Forget every cached block; False (nothing done) while a sequence holds blocks."""
        return self.pool.reset_cache()

    # ---- owning blocks -----------------------------------------------------------------------------
    def allocate_slots(self, seq_id: int, num_tokens: int, reserve: int = 0,
                       computed_blocks: list[int] = ()) -> list[int] | None:
        """Grow ``seq_id``'s table to cover ``num_tokens`` positions; return the new block ids.

        ``computed_blocks`` (from `get_computed_blocks`, for a sequence that owns none yet) become
        the head of its table, shared with whoever else holds them. Returns None, changing nothing,
        when that would leave fewer than ``reserve`` blocks free (``reserve`` is the admission
        watermark: running sequences need room to decode). A cached block that sits free counts as
        free until it is taken here."""
        if computed_blocks:
            assert seq_id not in self.tables, f"sequence {seq_id} owns blocks: no prefix to take"
        need = self.num_missing_blocks(seq_id, num_tokens) - len(computed_blocks)
        revived = sum(self.pool.blocks[b].ref_cnt == 0 for b in computed_blocks)
        if need + revived > self.pool.num_free_blocks - reserve:
            return None
        if computed_blocks:
            self.pool.touch(computed_blocks)
            self.tables[seq_id] = list(computed_blocks)
            self.num_cached_blocks[seq_id] = len(computed_blocks)
        new = self.pool.allocate(max(0, need))
        self.tables.setdefault(seq_id, []).extend(new)
        return new

    def uncache(self, seq_id: int) -> None:
        """Make ``seq_id``'s blocks unfindable (a failed step may have left their K/V half written)."""
        self.pool.uncache(self.tables.get(seq_id, ()))

    def free(self, seq_id: int) -> None:
        """Drop ``seq_id``'s blocks, on the device and on the host; unknown ids are a no-op. Its cached
        blocks stay findable until the free queue hands them out again."""
        self.pool.free(reversed(self.tables.pop(seq_id, [])))
        self.hashes.pop(seq_id, None)
        self.num_cached_blocks.pop(seq_id, None)
        if seq_id in self.swapped:
            self.swap_pool.free(reversed(self.swapped.pop(seq_id)))

    def fork(self, parent_id: int, child_id: int) -> None:
        """The child shares every block of the parent (ref counts up). The engine does not fork: its
        sequences share full blocks through the prefix cache and never write into a shared block, so
        no copy on write is needed (notebook 17 builds the copy-on-write manager vLLM v0 used)."""
        if child_id in self.tables:
            raise ValueError(f"sequence {child_id} already owns blocks")
        blocks = self.tables.get(parent_id, [])
        self.pool.incref(blocks)
        self.tables[child_id] = list(blocks)

    # ---- swapping (Day 12) -----------------------------------------------------------------------
    def can_swap_out(self, seq_id: int) -> bool:
        n = len(self.tables.get(seq_id, ()))
        return self.swap_pool is not None and n <= self.swap_pool.num_free_blocks

    def swap_out(self, seq_id: int) -> list[tuple[int, int]]:
        """Move ``seq_id``'s blocks to the host pool; returns (device block, host block) pairs to copy."""
        blocks = self.tables.pop(seq_id, [])
        host = self.swap_pool.allocate(len(blocks))
        self.swapped[seq_id] = host
        self.pool.free(reversed(blocks))         # their hashes stay: the content is still there
        self.num_cached_blocks.pop(seq_id, None)  # the blocks it comes back to are filed again
        return list(zip(blocks, host))

    def swap_in(self, seq_id: int, reserve: int = 0) -> list[tuple[int, int]] | None:
        """Bring ``seq_id``'s blocks back; returns (host block, device block) pairs, or None (no room)."""
        host = self.swapped[seq_id]
        if len(host) > self.pool.num_free_blocks - reserve:
            return None
        dev = self.pool.allocate(len(host))
        self.tables[seq_id] = dev
        del self.swapped[seq_id]
        self.swap_pool.free(reversed(host))
        return list(zip(host, dev))
