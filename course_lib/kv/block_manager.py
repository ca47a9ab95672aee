"""The block manager: which physical KV blocks each sequence owns. Pure Python, no tensors.

    free list: [5, 6, 7, ...]          ref_counts: [1, 1, 0, 1, 1, 0, 0, 0, ...]
    seq A (9 tokens, block_size 4):  block_table [0, 1, 3]   -> slots 0-3, 4-7 and 12 hold its K/V
    seq B (3 tokens):                block_table [4]

A sequence claims a block only when its next token needs one, so at most block_size - 1 slots per
sequence are ever reserved-but-empty (the contiguous cache of Day 3 reserves max_len per sequence).
Reference counts are here so that later days can share blocks (prefix caching, forked sequences).
"""
from __future__ import annotations

from collections import deque


class NoFreeBlocksError(RuntimeError):
    pass


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int):
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"num_blocks and block_size must be >= 1, got {num_blocks}, {block_size}")
        self.num_blocks, self.block_size = num_blocks, block_size
        self.free_blocks: deque[int] = deque(range(num_blocks))
        self.ref_counts = [0] * num_blocks

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_blocks)

    def blocks_for(self, num_tokens: int) -> int:
        """Blocks that hold ``num_tokens`` positions: ceil(num_tokens / block_size)."""
        return -(-num_tokens // self.block_size)

    def missing_blocks(self, block_table: list[int], num_tokens: int) -> int:
        return max(0, self.blocks_for(num_tokens) - len(block_table))

    def can_grow(self, block_table: list[int], num_tokens: int) -> bool:
        return self.missing_blocks(block_table, num_tokens) <= self.num_free_blocks

    def grow(self, block_table: list[int], num_tokens: int) -> None:
        """Append blocks to ``block_table`` (in place) until it covers ``num_tokens`` positions."""
        need = self.missing_blocks(block_table, num_tokens)
        if need > self.num_free_blocks:
            raise NoFreeBlocksError(f"need {need} blocks, {self.num_free_blocks} free")
        for _ in range(need):
            block = self.free_blocks.popleft()
            assert self.ref_counts[block] == 0, f"block {block} on the free list is in use"
            self.ref_counts[block] = 1
            block_table.append(block)

    def free(self, block_table: list[int]) -> None:
        """Drop one reference to each block; a block whose count reaches 0 returns to the free list."""
        for block in reversed(block_table):   # reversed: the tail block is the first to be reused
            self.ref_counts[block] -= 1
            if self.ref_counts[block] == 0:
                self.free_blocks.append(block)
        block_table.clear()

    def slot(self, block_table: list[int], position: int) -> int:
        """Flat slot index of ``position`` in the paged storage."""
        return block_table[position // self.block_size] * self.block_size + position % self.block_size
