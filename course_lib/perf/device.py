"""Pick the device and the dtype a notebook should run in."""
from __future__ import annotations

import torch


def pick_device_dtype(device: str | torch.device | None = None) -> tuple[torch.device, torch.dtype]:
    """Return ``(device, dtype)``: the fastest dtype that is exact enough on that device.

    - CUDA with compute capability >= 8.0 (A100, L4, H100, H200): bfloat16, fp32's range in 2 bytes.
    - Older CUDA (T4 is 7.5): float16; bf16 is emulated there and slow.
    - CPU: float32; most CPUs have no fast 16-bit matmul (bf16 can be ~50x slower than fp32).

    ``device`` is "cpu", "cuda", "cuda:N", or None / "auto" for CUDA when available, else the CPU.
    """
    if device is None or str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {str(device)!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device must be 'cpu' or 'auto' on a machine without CUDA, got {str(device)!r}")
        major, _ = torch.cuda.get_device_capability(dev)
        return dev, torch.bfloat16 if major >= 8 else torch.float16
    if dev.type != "cpu":
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {str(device)!r}")
    return dev, torch.float32
