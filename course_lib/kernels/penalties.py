"""The batched Sampler's min_tokens masks and penalties in one Triton pass (Day 06, issue 12), next
to its torch reference (``penalize_rows`` in course_lib/layers/sampler.py).

``penalize`` reads a row's logits, token counts and prompt mask once and writes the float32
penalised logits once, with min_tokens' stop-id masking in the same pass: torch needs about ten
(B, V) operators and a gather copy of the counts. Every table is indexed through ``rows``, as in
kernels/sampling.py, so nothing is gathered into (B, ...) copies first.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..layers.sampler import penalize_rows as penalize_ref   # noqa: F401  (the kernel's reference)
from .checks import check_logits, check_runnable

PENALTY_BLOCK = 2048   # logits per program of the penalties kernel


@triton.jit
def _penalize_kernel(x_ptr, stride_x, out_ptr, rows_ptr, V, counts_ptr, mask_ptr, stride_v,
                     rep_ptr, freq_ptr, pres_ptr, stride_f, num_gen_ptr, min_tokens_ptr, stride_mt,
                     stop_ptr, stride_stop, S,
                     HAS_PENALTY: tl.constexpr, HAS_STOPS: tl.constexpr, BLOCK: tl.constexpr):
    # grid: (B, cdiv(V, BLOCK)); reads x, counts, mask once; writes float32 once
    b, chunk = tl.program_id(0).to(tl.int64), tl.program_id(1)
    r = tl.load(rows_ptr + b)
    cols = chunk * BLOCK + tl.arange(0, BLOCK)
    ok = cols < V
    x = tl.load(x_ptr + b * stride_x + cols, mask=ok, other=0.0).to(tl.float32)
    if HAS_STOPS:                 # min_tokens: the row's stop ids to -inf while it is too short
        active = tl.load(num_gen_ptr + r) < tl.load(min_tokens_ptr + r * stride_mt)
        for s in range(S):
            x = tl.where(active & (cols == tl.load(stop_ptr + r * stride_stop + s)), float("-inf"), x)
    if HAS_PENALTY:
        counts = tl.load(counts_ptr + r * stride_v + cols, mask=ok, other=0)
        seen = (counts > 0) | (tl.load(mask_ptr + r * stride_v + cols, mask=ok, other=0) != 0)
        rep = tl.load(rep_ptr + r * stride_f)
        x = tl.where(seen, tl.where(x > 0, x / rep, x * rep), x)
        x = x - tl.load(freq_ptr + r * stride_f) * counts.to(tl.float32) \
            - tl.load(pres_ptr + r * stride_f) * (counts > 0).to(tl.float32)
    tl.store(out_ptr + b * V + cols, x, mask=ok)


def penalize(logits: torch.Tensor, rows: torch.Tensor, counts=None, prompt_mask=None, repetition=None,
             frequency=None, presence=None, num_generated=None, min_tokens=None, stop_ids=None) -> torch.Tensor:
    """min_tokens masks and penalties of ``logits`` (B, V) in one pass: (B, V) float32.

    Tables of N entries indexed by ``rows`` (B,): ``counts`` (N, V) int32 and ``prompt_mask`` (N, V)
    bool with ``repetition``/``frequency``/``presence`` (N,) float32 columns of one table (counts None:
    no penalties); ``num_generated`` (N,), ``min_tokens`` (N,) int64 and ``stop_ids`` (N, S) int64
    (stop_ids None: no min_tokens). The formulas are ``layers.sampler.penalize_rows``'s."""
    logits = check_logits(logits)
    check_runnable("logits", logits, dict(rows=rows, counts=counts, prompt_mask=prompt_mask, stop_ids=stop_ids))
    B, V = logits.shape
    out = torch.empty(B, V, dtype=torch.float32, device=logits.device)
    if B == 0:
        return out
    has_pen, has_stops = counts is not None, stop_ids is not None
    if has_pen and not (counts.stride(1) == 1 and prompt_mask.stride() == counts.stride()
                        and repetition.stride(0) == frequency.stride(0) == presence.stride(0)):
        raise ValueError("counts and prompt_mask must be (N, V) with the same strides, and repetition, "
                         "frequency, presence columns of one table")
    dummy = logits                                            # an unused pointer for a missing table
    _penalize_kernel[(B, triton.cdiv(V, PENALTY_BLOCK))](
        logits, logits.stride(0), out, rows, V,
        counts if has_pen else dummy, prompt_mask.view(torch.uint8) if has_pen else dummy,
        counts.stride(0) if has_pen else 0, repetition if has_pen else dummy,
        frequency if has_pen else dummy, presence if has_pen else dummy,
        repetition.stride(0) if has_pen else 0,
        num_generated if has_stops else dummy, min_tokens if has_stops else dummy,
        min_tokens.stride(0) if has_stops else 0, stop_ids if has_stops else dummy,
        stop_ids.stride(0) if has_stops else 0, stop_ids.shape[1] if has_stops else 0,
        HAS_PENALTY=has_pen, HAS_STOPS=has_stops, BLOCK=PENALTY_BLOCK, num_warps=8)
    return out
