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
"""
from __future__ import annotations

from .block_pool import BlockPool


class KVCacheManager:
    def __init__(self, num_blocks: int, block_size: int, num_swap_blocks: int = 0):
        if type(block_size) is not int or block_size < 1:
            raise ValueError(f"block_size must be an integer >= 1, got {block_size!r}")
        self.block_size = block_size
        self.pool = BlockPool(num_blocks)
        self.swap_pool = BlockPool(num_swap_blocks) if num_swap_blocks else None
        self.tables: dict[int, list[int]] = {}            # seq_id -> its device block ids, in order
        self.swapped: dict[int, list[int]] = {}           # seq_id -> its host block ids, in order

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

    def get_computed_blocks(self, seq_id: int, token_ids: list[int]) -> tuple[list[int], int]:
        """Blocks already holding a prefix of ``token_ids``, and how many tokens they cover.

        Nothing is cached yet: prefix caching (Day 15) fills this in from block hashes."""
        return [], 0

    def allocate_slots(self, seq_id: int, num_tokens: int, reserve: int = 0) -> list[int] | None:
        """Grow ``seq_id``'s table to cover ``num_tokens`` positions; return the new block ids.

        Returns None, changing nothing, when that would leave fewer than ``reserve`` blocks free
        (``reserve`` is the admission watermark: running sequences need room to decode)."""
        need = self.num_missing_blocks(seq_id, num_tokens)
        if need > self.pool.num_free_blocks - reserve:
            return None
        new = self.pool.allocate(need)
        self.tables.setdefault(seq_id, []).extend(new)
        return new

    def free(self, seq_id: int) -> None:
        """Drop ``seq_id``'s blocks, on the device and on the host; unknown ids are a no-op."""
        self.pool.free(reversed(self.tables.pop(seq_id, [])))
        if seq_id in self.swapped:
            self.swap_pool.free(reversed(self.swapped.pop(seq_id)))

    def fork(self, parent_id: int, child_id: int) -> None:
        """The child shares every block of the parent (ref counts up; copy-on-write is Day 17)."""
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
        self.pool.free(reversed(blocks))
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
