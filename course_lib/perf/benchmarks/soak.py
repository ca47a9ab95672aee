"""``python -m course_lib bench soak``: the engine on a CPU for a fixed time, many short requests,
random aborts and random bad requests; memory and blocks sampled as it goes.

    python -m course_lib bench soak --minutes 30 [--json PATH | --json-dir DIR]      # cpu_soak.json

Passes when the engine drains with every block free, the resident memory of the last samples is
within ``--rss-margin-mb`` of the samples after warm-up (flat, not growing), and no request ended
with an error. A tiny random model keeps each step cheap so that a half hour covers ~10^5 requests.
"""
from __future__ import annotations

import random
import time
from pathlib import Path

import torch

from ..harness import make_report, output_path, progress, write_report

HELP = "the engine for N minutes on a CPU: random requests, aborts and bad requests; memory must stay flat"

BAD = [dict(temperature=-1), dict(top_p=0), dict(top_k=2**63), dict(seed=1.5), dict(n=True),
       dict(max_tokens=0), dict(stop_token_ids=["x"]), dict(logprobs="yes"), dict(min_p=2)]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(minutes: float, seed: int = 0, log=print, show_progress: bool = True) -> dict:
    """The soak's figures (counts, samples, the drained state); see ``verdict`` for pass or fail."""
    from ...config import EngineConfig, ModelConfig, SamplingParams
    from ...engine.llm_engine import LLMEngine
    from ...models.llama import LlamaModel
    from ...models.loader import init_random_
    torch.set_grad_enabled(False)
    cfg = ModelConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                      num_kv_heads=2, head_dim=8, max_position_embeddings=256)
    model = LlamaModel(cfg)
    init_random_(model, seed)
    engine = LLMEngine(model.eval(), None, EngineConfig(attention_backend="torch", block_size=4,
                                                       num_kv_blocks=96, max_num_seqs=16,
                                                       max_num_batched_tokens=64), max_model_len=128)
    rng = random.Random(seed)
    counts = dict(added=0, rejected=0, aborted=0, finished=0, errors=0, steps=0)
    samples, live, start = [], set(), time.monotonic()
    end = start + minutes * 60
    next_sample, bar, shown = start, progress(round(minutes * 60), "soak", show_progress, unit="s"), 0
    while time.monotonic() < end:
        # at most 64 requests inside (closed loop): a backlog would grow memory for a good reason
        for _ in range(rng.randint(0, 3) if len(engine.requests) < 64 else 0):
            if rng.random() < 0.1:                                   # a bad request: must bounce
                try:
                    engine.add_request([1, 2, 3], SamplingParams(**rng.choice(BAD)))
                except (ValueError, TypeError):
                    counts["rejected"] += 1
                continue
            prompt = [rng.randrange(256) for _ in range(rng.randint(1, 40))]
            params = SamplingParams(temperature=rng.choice([0, 0.8]), max_tokens=rng.randint(1, 40),
                                    seed=rng.choice([None, rng.randrange(2**32)]), n=rng.choice([1, 1, 2]))
            live.add(engine.add_request(prompt, params, output_kind=rng.choice(["delta", "final_only"])))
            counts["added"] += 1
        if live and rng.random() < 0.05:
            rid = rng.choice(sorted(live))
            if engine.abort_request(rid) is not None:
                counts["aborted"] += 1
            live.discard(rid)
        for out in engine.step():
            if out.finished:
                live.discard(out.request_id)
                counts["finished"] += 1
                counts["errors"] += any(c.finish_reason == "error" for c in out.outputs)
        counts["steps"] += 1
        if time.monotonic() >= next_sample:
            samples.append(dict(t_s=round(time.monotonic() - start, 1), rss_mb=round(rss_mb(), 1),
                                requests_in_engine=len(engine.requests),
                                free_blocks=engine.kv_manager.num_free_blocks,
                                step_log_len=len(engine.step_log), **counts))
            log(f"{samples[-1]}")
            next_sample += max(5.0, minutes * 60 / 60)
            elapsed = int(time.monotonic() - start)
            bar.update(elapsed - shown)
            bar.set_postfix_str(f"{counts['finished']} requests finished, {counts['errors']} errors")
            shown = elapsed
    bar.close()
    while engine.has_unfinished_requests():
        for out in engine.step():
            counts["finished"] += out.finished
    kv = engine.kv_manager
    return dict(minutes=minutes, counts=counts, samples=samples,
                drained=dict(free_blocks=kv.num_free_blocks, num_blocks=kv.num_blocks,
                             requests=len(engine.requests), tables=len(kv.tables)))


def verdict(figures: dict, rss_margin_mb: float = 20.0) -> dict:
    """``figures`` plus rss_growth_after_warmup_mb and ok: drained with every block free, no error,
    resident memory of the last sixth of the samples within ``rss_margin_mb`` of the sample after
    warm-up (allocator pools fill first)."""
    s = figures["samples"]
    warm = s[min(len(s) - 1, max(1, len(s) // 6))]["rss_mb"]
    last = max(x["rss_mb"] for x in s[-max(1, len(s) // 6):])
    d = figures["drained"]
    ok = (d["free_blocks"] == d["num_blocks"] and d["requests"] == 0 and d["tables"] == 0
          and figures["counts"]["errors"] == 0 and last - warm <= rss_margin_mb)
    return dict(figures, rss_growth_after_warmup_mb=round(last - warm, 1), ok=ok)


def add_arguments(p) -> None:
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rss-margin-mb", type=float, default=20.0)


def run_cli(args) -> int:
    import json
    import math
    for flag, v in (("--minutes", args.minutes), ("--rss-margin-mb", args.rss_margin_mb)):
        if not (v > 0 and math.isfinite(v)):
            raise ValueError(f"{flag} must be a positive, finite number, got {v!r}")
    report = make_report("soak", torch.device("cpu"), verdict(run(args.minutes, args.seed), args.rss_margin_mb))
    path = output_path(args, report["device"], "soak")
    if path:
        write_report(report, path)
    print(json.dumps(dict(ok=report["ok"], counts=report["counts"], drained=report["drained"],
                          rss_growth_after_warmup_mb=report["rss_growth_after_warmup_mb"])))
    return 0 if report["ok"] else 1
