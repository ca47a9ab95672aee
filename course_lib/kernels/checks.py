"""Input checks every Triton wrapper here shares: one device for all tensors, and a device the kernel
can run on (CUDA, or the CPU under TRITON_INTERPRET=1 without bfloat16)."""
from __future__ import annotations

import os

import torch

# One-byte K/V caches the attention kernels read and write (EngineConfig.kv_cache_dtype, Day 19).
FP8_CACHE = (torch.float8_e4m3fn, torch.float8_e5m2)

# Why bfloat16 fails under the CPU interpreter, by kernel kind.
BF16_CAST = "the Triton interpreter casts float32 to bfloat16 by truncation, not round-to-nearest"
BF16_DOT = "the Triton interpreter's tl.dot multiplies raw bfloat16 bits (garbage)"   # triton#11584


def check_runnable(name: str, x: torch.Tensor, others: dict, bf16_why: str = BF16_CAST) -> None:
    """Raise ValueError naming the tensor at fault unless a Triton kernel can run on ``x`` here.

    ``others``: the kernel's other tensors by name (None entries are skipped), all on x's device."""
    for other, t in others.items():
        if t is not None and t.device != x.device:
            raise ValueError(f"{other} is on {t.device}, {name} on {x.device}: all must share one device")
    if x.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(f"{name} is on {x.device}: Triton kernels need CUDA, or TRITON_INTERPRET=1 set "
                         f"before course_lib.kernels is imported")
    if x.device.type != "cuda" and x.dtype == torch.bfloat16:
        raise ValueError(f"{name} is bfloat16 on the CPU: {bf16_why}; use float16 or float32 there")


def check_logits(logits: torch.Tensor) -> torch.Tensor:
    """Raise ValueError unless ``logits`` is (B, V), V > 0, float16/bfloat16/float32; return it with
    unit column stride (the kernels step along a row by 1)."""
    if logits.dim() != 2 or logits.shape[1] == 0:
        raise ValueError(f"logits must be (B, V) with V > 0, got shape {tuple(logits.shape)}")
    if logits.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"logits dtype must be float16, bfloat16 or float32, got {logits.dtype}")
    return logits if logits.stride(1) == 1 else logits.contiguous()
