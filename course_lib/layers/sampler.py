"""Pick the next token for every sequence of a batch, each with its own SamplingParams.

Sampling uses the "exponential race": argmax(p_i / E_i) with E_i ~ Exp(1) picks token i with
probability p_i, and a seeded request draws its E from its own generator, so its samples do not
depend on which other requests share the batch.
"""
from __future__ import annotations

import torch

from ..config import SamplingParams


def apply_filters(logits: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
    """Temperature, then top-k, top-p and min-p masks; returns probabilities (B, V) in float32."""
    device = logits.device
    temps = torch.tensor([p.temperature or 1.0 for p in params], device=device)
    logits = logits.float() / temps[:, None]
    if any(p.top_k != -1 or p.top_p < 1.0 for p in params):
        V = logits.shape[-1]
        top_k = torch.tensor([p.top_k if p.top_k != -1 else V for p in params], device=device)
        top_p = torch.tensor([p.top_p for p in params], device=device)
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        rank = torch.arange(V, device=device)[None, :]
        # top-k first; top-p then measures mass on what top-k kept (the order vLLM and HF use):
        # drop a token once the better ones already cover top_p of the mass.
        sorted_logits = sorted_logits.masked_fill(rank >= top_k[:, None], float("-inf"))
        sorted_probs = sorted_logits.softmax(dim=-1)
        drop = (sorted_probs.cumsum(-1) - sorted_probs) > top_p[:, None]
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(dim=-1)
    if any(p.min_p > 0 for p in params):
        min_p = torch.tensor([p.min_p for p in params], device=device)
        probs = probs.masked_fill(probs < min_p[:, None] * probs.max(-1, keepdim=True).values, 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def sample(logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator | None],
           argmax=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Returns (token ids (B,), their log-probabilities under the unmodified model distribution (B,)),
    the second None when no request asked for logprobs (a log-softmax over B x vocab is not free).

    ``argmax``: the greedy pick, (B, V) -> (B,); default torch's (the engine passes the Triton one
    of course_lib/kernels/argmax.py on a GPU, same result, faster at small batch)."""
    tokens = logits.argmax(dim=-1) if argmax is None else argmax(logits)
    sampled = [i for i, p in enumerate(params) if not p.greedy]
    if sampled:
        idx = torch.tensor(sampled, device=logits.device)
        probs = apply_filters(logits[idx], [params[i] for i in sampled])
        race = torch.empty_like(probs).exponential_()
        for row, i in enumerate(sampled):
            if generators[i] is not None:
                race[row].exponential_(generator=generators[i])
        tokens[idx] = (probs / race).argmax(dim=-1)
    if not any(p.logprobs for p in params):
        return tokens, None
    return tokens, logits.float().log_softmax(dim=-1).gather(-1, tokens[:, None])[:, 0]
