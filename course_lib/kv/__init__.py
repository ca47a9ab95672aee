"""Where keys and values live: a contiguous per-sequence cache (Day 3), blocks and paging (Day 5)."""
from .contiguous import ContiguousKVCache

__all__ = ["ContiguousKVCache"]
