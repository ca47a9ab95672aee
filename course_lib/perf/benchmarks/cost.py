"""What a serving run will cost on a CPU, said before it starts (``bench serving``, the rate sweep).

A GPU-sized workload on a CPU takes an hour (``bench --workload anyscale --device cpu`` once ran 15
minutes with no output before it was stopped). So a CPU run prints its estimate first: the tokens each
system computes (padding included for the padded-batch peers) at the tokens/s of one measured forward
pass, times 2 for what a step costs beyond its matmuls (the recorded anyscale-cpu run: continuous
computed ~150 tokens/s where one forward pass does ~300). Past ``CPU_SLOW_S`` it refuses unless
``allow_slow`` (``--allow-slow``), naming the CPU profile instead: a refusal costs a retype, where a
warning scrolls by while the shared machine is tied up for an hour. GPU runs have time guards instead.
"""
from __future__ import annotations

import time

import torch

from ..workloads import WORKLOADS, Workload

CPU_SLOW_S = 600                  # refuse a CPU run estimated longer than this without allow_slow
_STEP_SLACK = 2.0                 # a real step costs ~2x its matmuls on a CPU


class TooSlow(ValueError):
    """A CPU run estimated past CPU_SLOW_S: exit code 2 with what to do instead."""


@torch.inference_mode()
def forward_tokens_per_s(model, tokens: int = 32) -> float:
    """Tokens/s of one forward pass of ``tokens`` tokens (best of 2 after one warm-up; ~0.1 s each for
    the embedded model): on a CPU a step costs about the same per token whatever its batch, so this
    prices every step (a little high: 32 tokens use the cores less well than a long prefill)."""
    ids = torch.arange(tokens, device=model.device)[None] % model.cfg.vocab_size
    positions = torch.arange(tokens, device=model.device)[None]
    times = []
    for _ in range(3):
        t = time.perf_counter()
        model(ids, positions, None)
        times.append(time.perf_counter() - t)
    return tokens / min(times[1:])


def computed_tokens(system: str, lengths: list[tuple[int, int]], batch_size: int) -> int:
    """Tokens a system computes: each prompt token once and each output token once, except that the
    padded static peers compute every row of a batch to its longest prompt and output."""
    if system in ("hf-static", "hf-static-compile"):
        batches = [lengths[i:i + batch_size] for i in range(0, len(lengths), batch_size)]
        return sum(len(b) * (max(p for p, _ in b) + max(o for _, o in b)) for b in batches)
    return sum(p + o for p, o in lengths)


def cpu_estimate(model, wl: Workload, systems, sample: dict, batch_size: int, rates=None) -> dict:
    """Seconds each system should take on this CPU (see the module docstring), and the rate used."""
    tok_s = forward_tokens_per_s(model)
    est = {}
    for s in systems:
        lengths = wl.lengths[:sample.get(s, len(wl.requests))]
        est[s] = computed_tokens(s, lengths, batch_size) / tok_s * _STEP_SLACK
    for r in rates or ():              # a sweep point lasts at least as long as its arrivals
        est[f"{r:g} req/s"] = max(len(wl.requests) / r, est.get("continuous", 0.0))
    return dict(seconds=est, total_s=sum(est.values()), forward_tok_per_s=tok_s)


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min"


def check_cost(est: dict, workload: str, allow_slow: bool, log=print) -> None:
    """Print the estimate; raise TooSlow past CPU_SLOW_S unless ``allow_slow``."""
    parts = ", ".join(f"{s} ~{_duration(t)}" for s, t in est["seconds"].items())
    log(f"estimated cost on this CPU: ~{_duration(est['total_s'])} ({parts}; at "
        f"{est['forward_tok_per_s']:.0f} tokens/s measured in one forward pass)")
    if est["total_s"] > CPU_SLOW_S and not allow_slow:
        cpu = f"{workload.removesuffix('-cpu')}-cpu"
        hint = (f"the CPU profile (--workload {cpu}), " if cpu in WORKLOADS and cpu != workload else "")
        raise TooSlow(f"this run would take about {_duration(est['total_s'])} on this CPU ({parts}); use "
                      f"{hint}fewer requests (--num-requests), fewer systems (--systems), or pass "
                      f"--allow-slow to run it anyway")
