"""Triton kernels, one family per file, each checked against a torch reference.

On a machine without CUDA, set TRITON_INTERPRET=1 before importing this package (tests/conftest.py
does) and the kernels run, slowly, on the CPU."""
from .paged_attention import num_kv_splits, paged_attention_triton, paged_decode_split_kv

__all__ = ["num_kv_splits", "paged_attention_triton", "paged_decode_split_kv"]
