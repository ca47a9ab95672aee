"""Triton kernels, one family per file, each checked against a torch reference in the same file.

    paged_attention.py   varlen paged attention + split-KV decode (Day 5)
    rmsnorm.py           fused residual add + RMSNorm (Day 9)
    swiglu.py            fused silu(gate) * up (Day 9)
    rope_kv.py           fused RoPE + paged KV-cache write (Day 9)
    gemv.py              matrix-vector product for decode at batch 1 (Day 14)
    argmax.py            greedy sampling's argmax over the vocabulary, two passes (Day 14)
    sampling.py          the batched Sampler's draw: the noise, the full and the candidates' draw (Day 06)
    topk.py              the Sampler's top-k candidates without a sort (Day 06)
    penalties.py         the Sampler's min_tokens masks and penalties in one pass (Day 06)
    checks.py            the device/dtype checks every wrapper shares

gemv, argmax, sampling, topk and penalties are imported from their modules (``from
course_lib.kernels.gemv import gemv``): a package-level function of the same name would hide the module.

On a machine without CUDA, set TRITON_INTERPRET=1 before importing this package (tests/conftest.py
does) and the kernels run, slowly, on the CPU."""
from .paged_attention import num_kv_splits, paged_attention_triton, paged_decode_split_kv
from .rmsnorm import add_rmsnorm, add_rmsnorm_ref
from .rope_kv import rope_write_kv, rope_write_kv_ref
from .swiglu import silu_mul, silu_mul_ref

__all__ = ["add_rmsnorm", "add_rmsnorm_ref", "num_kv_splits", "paged_attention_triton", "paged_decode_split_kv",
           "rope_write_kv", "rope_write_kv_ref", "silu_mul", "silu_mul_ref"]
