"""The roofline model of a decoder forward pass, device peak numbers, and quick micro-benchmarks.

A step that does F FLOPs and moves B bytes between memory and the chip cannot finish faster than

    t >= max(F / peak_flops, B / bandwidth)                       (the roofline)

Its arithmetic intensity I = F / B (FLOP per byte) says which term wins. Below the ridge point
I* = peak_flops / bandwidth the step is memory-bound (time set by bytes), above it compute-bound.

A Llama-family decoder runs T new tokens per sequence over ``context`` cached ones, batch B, weights and
activations of w bytes each (q = H*D, kv = KVH*D, L layers, hidden d, MLP width f, vocab V):

    P_mm  = L*(d*(q + 2*kv) + q*d + 3*d*f) + V*d          parameters used in matmuls (LM head included)
    F     = 2*P_mm*B*T                                     one multiply + one add per weight per token
          + 4*L*H*D*B*(T*context + T*(T+1)/2)              QK^T and PV over the keys each query sees
    bytes = P_mm*w                                         every weight read once per step, whatever T
          + kv_bytes_per_token*B*(context + 2*T)           read cached + new K/V, write the new ones
          + B*T*w*(L*(4*d + 2*q + 2*kv + 3*f) + V)         matmul inputs and outputs, then the logits

With B*T = 1 (decode) F/bytes ~ 2*P_mm / (P_mm*w) = 2/w FLOP/byte: far below any GPU's ridge point
(~300 for an H100 in bf16), so decode is memory-bound. Prefill's intensity grows ~T: compute-bound.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import torch

from ..config import ModelConfig
from .shapes import matmul_params  # noqa: F401 - notebooks import it from here
from .timers import time_calls

_DTYPE_KEYS = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


@dataclass(frozen=True)
class DeviceSpec:
    """Peak dense FLOP/s per dtype ("bf16", "fp16", "fp32"), memory bandwidth in bytes/s, memory in bytes."""
    name: str
    flops: dict = field(default_factory=dict)
    bandwidth: float = 0.0
    memory_bytes: float = 0.0

    def peak(self, dtype) -> float:
        key = _DTYPE_KEYS.get(dtype, dtype)
        if key not in self.flops:
            raise ValueError(f"dtype must be one of {sorted(self.flops)} on {self.name}, got {dtype!r}")
        return self.flops[key]


# Datasheet numbers: dense tensor-core rates (no 2:4 sparsity), fp32 without TF32. GB = 1e9 bytes.
DEVICE_SPECS: dict[str, DeviceSpec] = {
    "H100 SXM": DeviceSpec("H100 SXM", {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12}, 3.35e12, 80e9),
    "H200": DeviceSpec("H200", {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12}, 4.8e12, 141e9),
    "A100": DeviceSpec("A100 SXM 80GB", {"bf16": 312e12, "fp16": 312e12, "fp32": 19.5e12}, 2.039e12, 80e9),
    "L4": DeviceSpec("L4", {"bf16": 121e12, "fp16": 121e12, "fp32": 30.3e12}, 300e9, 24e9),
    "T4": DeviceSpec("T4", {"fp16": 65e12, "fp32": 8.1e12}, 320e9, 16e9),   # no bf16 tensor cores
    # A placeholder of the right order of magnitude for a few laptop/server cores; measure for real numbers.
    "CPU": DeviceSpec("CPU (default guess)", {"bf16": 50e9, "fp16": 50e9, "fp32": 50e9}, 10e9, 16e9),
}
# torch.cuda.get_device_name() -> table key; H200 before H100, and \b so "L40S" is not taken for "L4".
_NAME_PATTERNS = [(r"H200", "H200"), (r"H100", "H100 SXM"), (r"A100", "A100"), (r"\bL4\b", "L4"),
                  (r"\bT4\b", "T4")]


def detect_device(device=None, measure: bool = False) -> DeviceSpec:
    """The spec of ``device`` (default: cuda if available). Unknown GPUs and, with ``measure``, the CPU
    get measured numbers instead (about two seconds)."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda":
        gpu = torch.cuda.get_device_name(dev)
        for pattern, key in _NAME_PATTERNS:
            if re.search(pattern, gpu):
                return DEVICE_SPECS[key]
        name = f"{gpu} (measured)"
    elif not measure:
        return DEVICE_SPECS["CPU"]
    else:
        name = "CPU (measured)"
    dtype = torch.float32 if dev.type == "cpu" else torch.bfloat16
    return DeviceSpec(name, {_DTYPE_KEYS[dtype]: measure_matmul_flops(dev, dtype)}, measure_bandwidth(dev))


def decoder_flops(cfg: ModelConfig, num_tokens: int, context: int = 0, batch: int = 1) -> int:
    """F = 2*P_mm*B*T + 4*L*H*D*B*(T*context + T*(T+1)/2) (causal attention counted without the masked half)."""
    T = num_tokens
    keys_seen = T * context + T * (T + 1) // 2        # query i sees context + i + 1 keys
    attn = 4 * cfg.num_layers * cfg.num_heads * cfg.head_dim * batch * keys_seen
    return 2 * matmul_params(cfg) * batch * T + attn


def decoder_bytes(cfg: ModelConfig, num_tokens: int, context: int = 0, batch: int = 1,
                  dtype_bytes: int = 2) -> int:
    """bytes = P_mm*w + kv_bytes_per_token*B*(context + 2*T) + B*T*w*(L*(4d + 2q + 2kv + 3f) + V).

    Assumes nothing stays in on-chip cache between ops (no fusion): an upper estimate of traffic."""
    d, f, L, w = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers, dtype_bytes
    q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    weights = matmul_params(cfg) * w
    kv_cache = cfg.kv_bytes_per_token(w) * batch * (context + 2 * num_tokens)
    acts = batch * num_tokens * w * (L * (4 * d + 2 * q + 2 * kv + 3 * f) + cfg.vocab_size)
    return weights + kv_cache + acts


def arithmetic_intensity(cfg: ModelConfig, num_tokens: int, context: int = 0, batch: int = 1,
                         dtype_bytes: int = 2) -> float:
    """I = F / bytes in FLOP per byte for one forward pass."""
    return decoder_flops(cfg, num_tokens, context, batch) / decoder_bytes(
        cfg, num_tokens, context, batch, dtype_bytes)


def roofline_time(flops: float, nbytes: float, peak_flops: float, bandwidth: float) -> float:
    """Lower bound on seconds: max(flops / peak_flops, nbytes / bandwidth)."""
    return max(flops / peak_flops, nbytes / bandwidth)


def ridge_point(peak_flops: float, bandwidth: float) -> float:
    """I* = peak_flops / bandwidth: the intensity where the two roofs meet (FLOP/byte)."""
    return peak_flops / bandwidth


def attainable_flops(intensity: float, peak_flops: float, bandwidth: float) -> float:
    """The roof itself: min(peak_flops, intensity * bandwidth) FLOP/s."""
    return min(peak_flops, intensity * bandwidth)


def measure_bandwidth(device="cpu", nbytes: int | None = None, repeats: int = 5) -> float:
    """Memory bandwidth in bytes/s from copying a buffer much larger than any cache (reads n, writes n).

    Reports the fastest repeat: noise only ever adds time, so the best run is closest to the hardware."""
    dev = torch.device(device)
    nbytes = nbytes or (2**30 if dev.type == "cuda" else 128 * 2**20)   # CPU: 4x a 32 MiB L3
    src = torch.ones(nbytes // 4, device=dev)
    dst = torch.empty_like(src)
    times = time_calls(lambda: dst.copy_(src), repeats=repeats, warmup=1, device=dev)
    return 2 * src.nbytes / min(times)


def measure_matmul_flops(device="cpu", dtype=None, n: int | None = None, repeats: int = 5) -> float:
    """Dense matmul rate in FLOP/s: an (n, n) @ (n, n) product is 2*n^3 FLOPs. Fastest repeat."""
    dev = torch.device(device)
    dtype = dtype or (torch.float32 if dev.type == "cpu" else torch.bfloat16)
    n = n or (8192 if dev.type == "cuda" else 1536)
    gen = torch.Generator(device=dev).manual_seed(0)
    a = torch.randn(n, n, device=dev, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=dev, dtype=dtype, generator=gen)
    times = time_calls(lambda: a @ b, repeats=repeats, warmup=1, device=dev)
    return 2 * n**3 / min(times)


def copy_bandwidth(device="cuda", nbytes: int = 1 << 30) -> dict:
    """The yardstick of the kernel sweeps: measure_bandwidth (the one the bench's floor uses), nbytes
    read plus nbytes written. A read-mostly kernel can beat it a little (no read/write turnarounds),
    so a fraction just above 100% is not an error."""
    bytes_per_s = measure_bandwidth(device, nbytes)
    return dict(bytes=nbytes, ms=2 * nbytes / bytes_per_s * 1e3, gb_per_s=bytes_per_s / 1e9)


def measure_rates(device: torch.device, dtype: torch.dtype) -> dict:
    """Copy bandwidth and dense matmul rate of ``device`` in ``dtype`` (roofline.py's micro-benchmarks:
    a 1 GiB copy and 8192^3 matmuls on a GPU, well under a second; about two seconds on a CPU)."""
    t = time.perf_counter()
    bandwidth, rate = measure_bandwidth(device), measure_matmul_flops(device, dtype)
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()    # give the buffers back: the engine sizes its KV pool from free memory
    return dict(copy_gb_per_s=bandwidth / 1e9, matmul_tflops=rate / 1e12,
                matmul_dtype=str(dtype).removeprefix("torch."), measure_s=time.perf_counter() - t)
