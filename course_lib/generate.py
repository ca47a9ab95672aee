"""The autoregressive loop, twice: without a cache (Day 1: every step re-reads the whole sequence)
and with the contiguous KV cache (Day 3: every step feeds one new token)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from .config import check_prompt_ids
from .kv.contiguous import ContiguousKVCache
from .models.llama import LlamaModel


@dataclass
class GenerationResult:
    prompt_token_ids: list[int]
    token_ids: list[int]
    step_times: list[float] = field(default_factory=list)   # seconds per generated token

    @property
    def tokens_per_s(self) -> float:
        return len(self.token_ids) / max(sum(self.step_times), 1e-12)


def check_generate_args(model: LlamaModel, prompt_ids, max_new_tokens: int, temperature: float) -> None:
    """Reject bad input with the field name and what is allowed."""
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_tokens must be an integer >= 1, got {max_new_tokens!r}")
    if temperature is None or temperature != temperature or temperature < 0:
        raise ValueError(f"temperature must be a number >= 0 (0 means greedy), got {temperature!r}")
    check_prompt_ids(prompt_ids, model.cfg.vocab_size)
    ctx = model.cfg.max_position_embeddings
    if len(prompt_ids) + max_new_tokens > ctx:
        raise ValueError(f"prompt length ({len(prompt_ids)}) + max_tokens ({max_new_tokens}) must be "
                         f"<= the model's context length {ctx}")


def pick_next(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> int:
    """Greedy at temperature 0, else a sample from softmax(logits / temperature)."""
    if temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@torch.inference_mode()
def generate(model: LlamaModel, prompt_ids: list[int], max_new_tokens: int, *, use_cache: bool = True,
             temperature: float = 0.0, seed: int | None = None, stop_token_ids=()) -> GenerationResult:
    """Generate up to ``max_new_tokens`` after ``prompt_ids`` for one sequence.

    ``use_cache=False`` is the Day 1 loop: each step runs the model over prompt + everything generated
    so far, so step t costs O(prompt + t). ``use_cache=True`` keeps K and V of past positions and runs
    only the newest token through the model.
    """
    check_generate_args(model, prompt_ids, max_new_tokens, temperature)
    device = model.device
    gen = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    ids = torch.tensor([prompt_ids], device=device)                           # (1, T)
    cache = (ContiguousKVCache(model.cfg, 1, len(prompt_ids) + max_new_tokens, device, model.dtype)
             if use_cache else None)
    out, times = [], []
    step_input, pos = ids, torch.arange(ids.shape[1], device=device)[None]
    for _ in range(max_new_tokens):
        t0 = time.perf_counter()
        logits = model(step_input, pos, cache)[0, -1]                         # (vocab,)
        token = pick_next(logits, temperature, gen)
        _sync(device)
        times.append(time.perf_counter() - t0)
        out.append(token)
        if token in stop_token_ids:
            break
        new = torch.tensor([[token]], device=device)
        if use_cache:   # only the new token goes in; its position is the current length
            step_input, pos = new, torch.tensor([[cache.length]], device=device)
        else:           # the whole sequence goes in again
            step_input = torch.cat([step_input, new], dim=1)
            pos = torch.arange(step_input.shape[1], device=device)[None]
    return GenerationResult(list(prompt_ids), out, times)
