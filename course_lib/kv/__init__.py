"""Where keys and values live: a contiguous per-sequence cache (Day 3), blocks and paging (Day 5),
blocks found again by their content (prefix caching, Day 15: kv_cache_manager.py)."""
from .contiguous import ContiguousKVCache

__all__ = ["ContiguousKVCache"]
