"""Speculative decoding (Day 20): a small draft model proposes ``k`` tokens, the target model checks
all of them in one forward pass, and rejection sampling keeps exactly the target's distribution.

    draft:   x_1 .. x_k, each drawn from q_i = q(. | context, x_1 .. x_{i-1})      k cheap passes
    target:  one pass over [last token, x_1 .. x_k] gives p_1 .. p_{k+1}            one expensive pass
    for i = 1 .. k: keep x_i with probability min(1, p_i(x_i) / q_i(x_i)); at the first rejection
    emit a token drawn from norm(max(0, p_i - q_i)) and stop; if all k are kept, emit a bonus token
    drawn from p_{k+1}

A round emits 1 to k + 1 tokens for one target pass, and the emitted tokens are distributed exactly as
if the target had sampled them one by one (Leviathan et al. 2023; Chen et al. 2023). At temperature
0 both distributions are one-hot at their argmax: a draft token is kept while it is the target's
argmax, and the output is the target's greedy output, token for token.

Both models keep a contiguous KV cache (Day 3) holding every token of the context but the last;
rejected draft tokens are dropped by moving the cache's length back (their K/V are overwritten later).
One sequence, batch 1: the case where a decode step is a memory-bound read of the target's weights
and checking k + 1 tokens costs about as much as generating one.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from .generate import _sync, check_generate_args
from .kv.contiguous import ContiguousKVCache
from .models.llama import LlamaModel


def probs_from_logits(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """(..., V) float32 probabilities: softmax(logits / temperature), one-hot at the argmax for 0."""
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    return torch.softmax(logits.float() / temperature, dim=-1)


def rejection_sample(draft_tokens: list[int], draft_probs: torch.Tensor, target_probs: torch.Tensor,
                     generator: torch.Generator | None = None) -> list[int]:
    """The tokens one round emits: the accepted prefix of ``draft_tokens`` and one more token.

    ``draft_probs`` (k, V): q_i, the draft's distribution each draft token was drawn from;
    ``target_probs`` (k + 1, V): p_i at the same positions, and p_{k+1} after the last draft token."""
    k = len(draft_tokens)
    if draft_probs.shape[0] != k or target_probs.shape[0] != k + 1 or draft_probs.shape[1:] != target_probs.shape[1:]:
        raise ValueError(f"draft_probs must be (k, V) and target_probs (k + 1, V) for k = {k} draft tokens, "
                         f"got {tuple(draft_probs.shape)} and {tuple(target_probs.shape)}")
    p, q = target_probs.float().cpu(), draft_probs.float().cpu()
    out = []
    for i, x in enumerate(draft_tokens):
        u = torch.rand((), generator=generator).item()
        if u * q[i, x] < p[i, x]:                       # u < p/q without dividing by a zero q
            out.append(x)
            continue
        residual = (p[i] - q[i]).clamp(min=0)           # where the target wants more than the draft gave
        dist = residual if residual.sum() > 0 else p[i]
        out.append(int(torch.multinomial(dist, 1, generator=generator)))
        return out
    out.append(int(torch.multinomial(p[k], 1, generator=generator)))   # every draft kept: a bonus token
    return out


class NgramProposer:
    """Prompt lookup decoding (Day 21; vLLM's "ngram" method, ``prompt_lookup_max/min``): no draft
    model. The last n tokens of the context (n from ``prompt_lookup_max`` down to ``prompt_lookup_min``)
    are looked up earlier in the context, most recent match first, and the tokens that followed the
    match are proposed. Free to run, and right whenever the output repeats its input: code edits,
    quotes, summaries, extraction. As a draft it is deterministic: q is one-hot on each proposal."""

    def __init__(self, prompt_lookup_max: int = 3, prompt_lookup_min: int = 1):
        for name, v in (("prompt_lookup_max", prompt_lookup_max), ("prompt_lookup_min", prompt_lookup_min)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if prompt_lookup_min > prompt_lookup_max:
            raise ValueError(f"prompt_lookup_min ({prompt_lookup_min}) must be <= prompt_lookup_max "
                             f"({prompt_lookup_max})")
        self.max_n, self.min_n = prompt_lookup_max, prompt_lookup_min

    def propose(self, context: list[int], k: int) -> list[int]:
        """Up to ``k`` tokens that followed the latest earlier occurrence of the context's last n tokens."""
        for n in range(min(self.max_n, len(context) - 1), self.min_n - 1, -1):
            suffix = context[-n:]
            for start in range(len(context) - n - 1, -1, -1):        # the match may not be the suffix itself
                if context[start:start + n] == suffix:
                    return context[start + n:start + n + k]
        return []


@dataclass
class SpeculativeResult:
    prompt_token_ids: list[int]
    token_ids: list[int]
    num_rounds: int = 0                  # target passes after the prompt
    num_draft_tokens: int = 0            # tokens the draft proposed
    num_accepted: int = 0                # of those, kept
    round_sizes: list[int] = field(default_factory=list)    # tokens emitted per round
    step_times: list[float] = field(default_factory=list)   # seconds per round

    @property
    def acceptance_rate(self) -> float:
        """Kept draft tokens / proposed ones (vLLM's draft acceptance rate)."""
        return self.num_accepted / max(self.num_draft_tokens, 1)

    @property
    def tokens_per_round(self) -> float:
        return len(self.token_ids) / max(self.num_rounds, 1)


def _feed(model: LlamaModel, cache: ContiguousKVCache, tokens: list[int]) -> torch.Tensor:
    """Run ``tokens`` at the cache's next positions; returns their logits (T, V)."""
    device = model.device
    pos = torch.arange(cache.length, cache.length + len(tokens), device=device)[None]
    return model(torch.tensor([tokens], device=device), pos, cache)[0]


@torch.inference_mode()
def speculative_generate(target: LlamaModel, draft: "LlamaModel | NgramProposer", prompt_ids: list[int],
                         max_new_tokens: int, *,
                         num_speculative_tokens: int = 4, temperature: float = 0.0, seed: int | None = None,
                         stop_token_ids=()) -> SpeculativeResult:
    """Up to ``max_new_tokens`` after ``prompt_ids``, distributed as ``target`` would generate them, with
    ``draft`` (a smaller model, or an NgramProposer) proposing ``num_speculative_tokens`` (vLLM's name)
    per round (module docstring)."""
    k = num_speculative_tokens
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"num_speculative_tokens must be an integer >= 1, got {k!r}")
    lookup = isinstance(draft, NgramProposer)
    if not lookup and not isinstance(draft, LlamaModel):
        raise TypeError(f"draft must be a LlamaModel or an NgramProposer, got {type(draft).__name__}")
    if not lookup and draft.cfg.vocab_size != target.cfg.vocab_size:
        raise ValueError(f"draft and target must share a vocabulary, got {draft.cfg.vocab_size} and "
                         f"{target.cfg.vocab_size} tokens")
    check_generate_args(target, prompt_ids, max_new_tokens, temperature)
    max_len = len(prompt_ids) + max_new_tokens + k
    for name, m in (("target", target),) + ((("draft", draft),) if not lookup else ()):
        if max_len > m.cfg.max_position_embeddings:
            raise ValueError(f"prompt length + max_tokens + num_speculative_tokens ({max_len}) must be <= the "
                             f"{name}'s context length {m.cfg.max_position_embeddings}")
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    t_cache = ContiguousKVCache(target.cfg, 1, max_len, target.device, target.dtype)
    d_cache = None if lookup else ContiguousKVCache(draft.cfg, 1, max_len, draft.device, draft.dtype)
    context = list(prompt_ids)
    if len(context) > 1:                                  # both caches hold every token but the last
        _feed(target, t_cache, context[:-1])
        if not lookup:
            _feed(draft, d_cache, context[:-1])
    res = SpeculativeResult(list(prompt_ids), [])
    while len(res.token_ids) < max_new_tokens:
        t0 = time.perf_counter()
        n = len(context)
        k_round = min(k, max_new_tokens - len(res.token_ids) - 1)            # no drafts past the end
        drafts, q = [], []
        if k_round and lookup:                            # proposals are certain: q is one-hot on each
            drafts = draft.propose(context, k_round)
            q = list(torch.nn.functional.one_hot(torch.tensor(drafts, dtype=torch.long),
                                                 target.cfg.vocab_size).float())
        elif k_round:
            logits = _feed(draft, d_cache, context[d_cache.length:])[-1]    # catch up (1 or 2 tokens)
            for i in range(k_round):
                q_i = probs_from_logits(logits, temperature)
                x = int(torch.multinomial(q_i.cpu(), 1, generator=gen)) if temperature else int(q_i.argmax())
                drafts.append(x)
                q.append(q_i)
                if i + 1 < k_round:
                    logits = _feed(draft, d_cache, [x])[-1]
        p = probs_from_logits(_feed(target, t_cache, [context[-1]] + drafts), temperature)   # (k_round + 1, V)
        emitted = rejection_sample(drafts, torch.stack(q) if q else p[:0], p, gen)
        accepted = len(emitted) - 1
        t_cache.length = n + accepted                     # drop the rejected drafts' K/V
        if d_cache is not None:
            d_cache.length = min(d_cache.length, n + accepted)
        for tok in emitted:
            if len(res.token_ids) == max_new_tokens:
                break
            res.token_ids.append(tok)
            context.append(tok)
            if tok in stop_token_ids:
                break
        _sync(target.device)
        res.step_times.append(time.perf_counter() - t0)
        res.num_rounds += 1
        res.num_draft_tokens += len(drafts)
        res.num_accepted += accepted
        res.round_sizes.append(len(emitted))
        if res.token_ids and res.token_ids[-1] in stop_token_ids:
            break
    return res
