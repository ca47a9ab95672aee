"""Benchmark workloads: lists of (prompt token ids, output length) with a fixed seed.

- ``anyscale``: Anyscale's continuous-batching study: fixed 512-token prompts, output lengths drawn
  from an exponential distribution with mean 128, capped (the cap is what the study varies).
- ``nanovllm``: nano-vllm's benchmark: 256 requests, prompt and output lengths uniform in [100, 1024].
- ``multi-turn``: chat conversations replayed from a log (SGLang's multi-turn benchmark shape): every
  turn's prompt is the shared system prompt, the earlier turns with their recorded answers, and the new
  user message; all turns of all conversations arrive at once, shuffled (Days 15-16: prefix caching
  and cache-aware scheduling).
Each has a small ``-cpu`` profile that keeps the same shape of distribution at laptop scale (the
recorded run uses 32 batch slots for every system: four times more requests than slots, so static
batches form and drain repeatedly; on a CPU a step costs about as much per token at 16 or 32 rows, so
padding is what static batching wastes, and 16 slots, ~1.5x, leave it less to waste than 32, ~2.2x).
Outputs ignore EOS so every system generates exactly the requested lengths.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class BenchRequest:
    prompt_token_ids: list[int]
    max_tokens: int


@dataclass
class Workload:
    name: str
    requests: list[BenchRequest]
    params: dict = field(default_factory=dict)

    @property
    def output_tokens(self) -> int:
        return sum(r.max_tokens for r in self.requests)

    @property
    def prompt_tokens(self) -> int:
        return sum(len(r.prompt_token_ids) for r in self.requests)

    @property
    def lengths(self) -> list[tuple[int, int]]:
        """(prompt length, output length) of every request, in order."""
        return [(len(r.prompt_token_ids), r.max_tokens) for r in self.requests]

    def head(self, n: int) -> "Workload":
        """The first ``n`` requests: every request is an independent draw, so a fair sample."""
        reqs = self.requests[:n]
        return Workload(self.name, reqs, {**self.params, "num_requests": len(reqs)})


def _ids(rng: random.Random, n: int, vocab: int) -> list[int]:
    return [rng.randrange(min(vocab, 10000)) for _ in range(n)]


def anyscale(num_requests: int = 256, prompt_len: int = 512, mean_output: int = 128,
             cap: int = 512, vocab_size: int = 32000, seed: int = 0, name: str = "anyscale") -> Workload:
    rng = random.Random(seed)
    outs = [min(cap, max(1, round(rng.expovariate(1 / mean_output)))) for _ in range(num_requests)]
    reqs = [BenchRequest(_ids(rng, prompt_len, vocab_size), n) for n in outs]
    return Workload(name, reqs, dict(num_requests=num_requests, prompt_len=prompt_len,
                                     mean_output=mean_output, cap=cap, seed=seed))


def nanovllm(num_requests: int = 256, min_len: int = 100, max_len: int = 1024, vocab_size: int = 32000,
             seed: int = 0, name: str = "nanovllm") -> Workload:
    rng = random.Random(seed)
    reqs = [BenchRequest(_ids(rng, rng.randint(min_len, max_len), vocab_size),
                         rng.randint(min_len, max_len)) for _ in range(num_requests)]
    return Workload(name, reqs, dict(num_requests=num_requests, min_len=min_len, max_len=max_len,
                                     seed=seed))


def multi_turn(num_conversations: int = 64, num_turns: int = 4, system_len: int = 256, user_len: int = 64,
               answer_len: int = 128, vocab_size: int = 32000, seed: int = 0, name: str = "multi-turn") -> Workload:
    """Turn t (from 0) of a conversation: system + (user_0 + answer_0) + ... + user_t, generating
    ``answer_len`` tokens; the recorded answers are what the next turn's prompt holds (a replay, not
    the model's answers), so every turn can be sent at once. ``params["turns"]`` lists each request's
    (conversation, turn), in the shuffled order of ``requests``."""
    rng = random.Random(seed)
    system = _ids(rng, system_len, vocab_size)
    reqs, turns = [], []
    for c in range(num_conversations):
        history = list(system)
        for t in range(num_turns):
            history += _ids(rng, user_len, vocab_size)
            reqs.append(BenchRequest(list(history), answer_len))
            turns.append((c, t))
            history += _ids(rng, answer_len, vocab_size)
    order = list(range(len(reqs)))
    rng.shuffle(order)
    return Workload(name, [reqs[i] for i in order],
                    dict(num_conversations=num_conversations, num_turns=num_turns, system_len=system_len,
                         user_len=user_len, answer_len=answer_len, seed=seed, turns=[turns[i] for i in order]))


WORKLOADS = {
    "anyscale": lambda vocab, **kw: anyscale(vocab_size=vocab, **kw),
    "anyscale-cpu": lambda vocab, **kw: anyscale(**{**dict(num_requests=128, prompt_len=16, mean_output=32,
                                                           cap=128, name="anyscale-cpu"), **kw},
                                                 vocab_size=vocab),
    "nanovllm": lambda vocab, **kw: nanovllm(vocab_size=vocab, **kw),
    "nanovllm-cpu": lambda vocab, **kw: nanovllm(**{**dict(num_requests=16, min_len=16, max_len=96),
                                                    **kw}, vocab_size=vocab, name="nanovllm-cpu"),
    "multi-turn": lambda vocab, **kw: multi_turn(vocab_size=vocab, **kw),
    "multi-turn-cpu": lambda vocab, **kw: multi_turn(**{**dict(num_conversations=8, num_turns=3, system_len=48,
                                                               user_len=16, answer_len=16), **kw},
                                                     vocab_size=vocab, name="multi-turn-cpu"),
}


def make_workload(name: str, vocab_size: int, /, **overrides) -> Workload:
    if name not in WORKLOADS:
        raise ValueError(f"workload must be one of {sorted(WORKLOADS)}, got {name!r}")
    return WORKLOADS[name](vocab_size, **overrides)
