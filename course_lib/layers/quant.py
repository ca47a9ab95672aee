"""Weight-only quantization (Day 18): the linear layers' weights in int8 or int4, activations as they are
(vLLM calls these W8A16 and W4A16).

Symmetric, round to nearest, one float scale per group of ``group_size`` weights along a row (the
input dimension K; the last group of a row may be shorter):

    scale = max |w| over the group / qmax          qmax = 127 (int8) or 7 (int4)
    q     = clamp(round(w / scale), -qmax - 1, qmax)
    w'    = q * scale                               |w - w'| <= scale / 2 for every weight

``group_size=None`` is one group per row ("per output channel"). Smaller groups follow the weights'
local range more closely (less error) at the cost of more scales: 4 bytes per group here, 0.03 bytes
per weight at group 128. int4 values are stored as q + 8 in [0, 15], two per byte along K (even k in
the low nibble), which kernels/quant_matmul.py unpacks in registers.

What ``LLM(..., quantization=...)`` applies (vLLM's argument name; the methods are course_lib's):

    "int8"    int8, one scale per output channel
    "int4"    int4, groups of 128 (GPTQ's and AWQ's usual group size)

to every linear layer of the decoder (q/k/v, o, gate/up, down); the embedding and the LM head stay
in the model's dtype, as vLLM's weight-only methods leave them. Quantizing is round to nearest
only: GPTQ and AWQ choose q with calibration data to lose less, and produce the same kind of tensors.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .linear import Linear

QMAX = {8: 127, 4: 7}
METHODS = {"int8": dict(bits=8, group_size=None), "int4": dict(bits=4, group_size=128)}


@dataclass
class QuantizedWeight:
    """An (N, K) weight as ``qweight`` ((N, K) int8, or (N, ceil(K/2)) uint8 holding int4 pairs) and
    ``scales`` ((N, ceil(K / group_size)) float32)."""
    qweight: torch.Tensor
    scales: torch.Tensor
    bits: int
    group_size: int
    shape: tuple[int, int]


def check_bits_group(bits, group_size) -> None:
    if bits not in QMAX:
        raise ValueError(f"bits must be one of {sorted(QMAX)}, got {bits!r}")
    if group_size is not None and (isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1):
        raise ValueError(f"group_size must be None (one group per row) or an integer >= 1, got {group_size!r}")


def group_scales(w: torch.Tensor, bits: int, group_size: int) -> torch.Tensor:
    """(N, groups) float32: max |w| of each group / qmax (1 for an all-zero group: q is 0 anyway)."""
    N, K = w.shape
    groups = -(-K // group_size)
    padded = F.pad(w.float(), (0, groups * group_size - K))
    amax = padded.abs().view(N, groups, group_size).amax(-1)
    return torch.where(amax > 0, amax / QMAX[bits], torch.ones_like(amax))


def quantize(w: torch.Tensor, bits: int = 8, group_size: int | None = None) -> QuantizedWeight:
    """Round-to-nearest symmetric quantization of an (N, K) float weight (module docstring)."""
    check_bits_group(bits, group_size)
    if w.dim() != 2 or not w.is_floating_point():
        raise ValueError(f"w must be a 2-D float matrix (N, K), got {w.dtype} shape {tuple(w.shape)}")
    N, K = w.shape
    g = K if group_size is None else group_size
    scales = group_scales(w, bits, g)
    qmax = QMAX[bits]
    q = torch.clamp(torch.round(w.float() / scales.repeat_interleave(g, dim=1)[:, :K]), -qmax - 1, qmax)
    q = q.to(torch.int8)
    if bits == 4:
        u = F.pad(q + 8, (0, K % 2)).to(torch.uint8)               # [0, 15], K padded to even
        q = u[:, 0::2] | (u[:, 1::2] << 4)                        # even k low nibble, odd k high
    return QuantizedWeight(q.contiguous(), scales.contiguous(), bits, g, (N, K))


def dequantize(qw: QuantizedWeight, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The (N, K) float matrix ``qw`` stands for."""
    from ..kernels.quant_matmul import dequantize_ref
    return dequantize_ref(qw.qweight, qw.scales, qw.bits, qw.group_size, qw.shape[1], dtype)


class QuantLinear(nn.Module):
    """A linear layer whose weight is a QuantizedWeight: ``y = x W'^T + b``. On CUDA (or under
    TRITON_INTERPRET=1 with ``kernels`` on) the product runs through kernels/quant_matmul.py, which
    dequantizes in registers; elsewhere torch dequantizes the matrix each call, then multiplies (right,
    and slower than the float layer: the saving needs the fused kernel)."""

    def __init__(self, qw: QuantizedWeight, bias: torch.Tensor | None = None):
        super().__init__()
        self.bits, self.group_size = qw.bits, qw.group_size
        self.out_features, self.in_features = qw.shape
        self.register_buffer("qweight", qw.qweight)
        self.register_buffer("scales", qw.scales)
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)
        self.kernels = qw.qweight.device.type == "cuda"

    @classmethod
    def from_linear(cls, linear: nn.Linear, bits: int, group_size: int | None) -> "QuantLinear":
        return cls(quantize(linear.weight.detach(), bits, group_size), linear.bias)

    @property
    def weight_bytes(self) -> int:
        return self.qweight.numel() * self.qweight.element_size() + self.scales.numel() * self.scales.element_size()

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        from ..kernels.quant_matmul import dequantize_ref
        return dequantize_ref(self.qweight, self.scales, self.bits, self.group_size, self.in_features, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernels:
            from ..kernels.quant_matmul import wq_linear
            return wq_linear(x, self.qweight, self.scales, self.bits, self.group_size, self.in_features, self.bias)
        return F.linear(x, self.dequantized(x.dtype), self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
                f"group_size={self.group_size}")


def check_method(quantization) -> dict:
    if quantization not in METHODS:
        raise ValueError(f"quantization must be None or one of {sorted(METHODS)}, got {quantization!r}")
    return METHODS[quantization]


def quantize_model(model: nn.Module, quantization: str | None = None, *, bits: int | None = None,
                   group_size: int | None = None) -> nn.Module:
    """A copy of ``model`` whose decoder linear layers are QuantLinear: by ``quantization`` (a METHODS
    name), or by ``bits`` and ``group_size`` (None: one group per row). The copy shares every other
    tensor (embedding, norms, LM head) with ``model``, which is unchanged."""
    if (quantization is None) == (bits is None):
        raise ValueError("give quantization (one of " f"{sorted(METHODS)}) or bits (with group_size), not both")
    if quantization is not None:
        spec = check_method(quantization)
    else:
        check_bits_group(bits, group_size)
        spec = dict(bits=bits, group_size=group_size)
    targets = [m for name, m in model.named_modules() if isinstance(m, Linear) and name.startswith("layers.")]
    memo = {id(t): t for t in model.parameters()}              # share, do not copy, every tensor
    memo.update({id(t): t for t in model.buffers()})
    out = copy.deepcopy(model, memo)
    copies = {name: m for name, m in out.named_modules()}
    for name, m in model.named_modules():
        if any(m is t for t in targets):
            parent, _, attr = name.rpartition(".")
            setattr(copies[parent], attr, QuantLinear.from_linear(m, **spec))
    out.quantization = quantization or f"int{bits}" + (f"-g{group_size}" if group_size else "")
    return out


def linear_weight_bytes(model: nn.Module) -> int:
    """Bytes of every decoder linear layer's weights (quantized or not): what a batch-1 decode step
    reads besides the LM head, the norms and the KV cache."""
    total = 0
    for name, m in model.named_modules():
        if name.startswith("layers.") and isinstance(m, QuantLinear):
            total += m.weight_bytes
        elif name.startswith("layers.") and isinstance(m, nn.Linear):
            total += m.weight.numel() * m.weight.element_size()
    return total
