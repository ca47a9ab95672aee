"""What a step costs when prompt tokens ride along with decodes, and what that does to batching (GPU).

Three measurements, one report (``gpu_<device>_mixed.json``):

- ``mixed_steps``: 64 sequences decoding (context 512), alone and with a prompt chunk of 16/32/64
  tokens in the same step, with CUDA graphs on (decode graphs + the mixed-step graphs of
  engine/cuda_graphs.py) and off. Synchronous steps, so a step's wall time is its own (host + GPU).
- ``small_batching``: notebook 04's small workload (12 requests, 8-token prompts, 4 slots) at several
  output caps, static vs continuous, median of repeats: continuous should not lose to static.
- ``long_prompt``: one 32k-token prompt on the llama-3.2-1b shape, chunked by the token budget; TTFT.

    python -m course_lib bench mixed [--quick] [--json PATH | --json-dir DIR]
"""
from __future__ import annotations

import statistics
import time

import torch

from ..harness import make_report, output_path, write_report

HELP = "decodes with prompt chunks in the same step, small-batch policies, a 32k prompt chunked (CUDA)"


def _median_ms(xs) -> float:
    return statistics.median(xs) * 1e3


def mixed_steps(model, decodes=64, context=512, chunks=(16, 32, 64), steps=20, cuda_graphs=True) -> list[dict]:
    """Median step time of ``decodes`` decoding sequences plus a ``chunk``-token prompt (0 = none)."""
    from ...config import EngineConfig, SamplingParams
    from ...engine.llm_engine import LLMEngine
    max_len = context + 4 * steps * (len(chunks) + 1) + 64
    cfg = EngineConfig(max_num_seqs=decodes + 8, num_kv_blocks=(decodes + 8) * -(-max_len // 16) + 8,
                       cuda_graphs=cuda_graphs, async_scheduling=False)
    engine = LLMEngine(model, None, cfg, max_model_len=max_len)
    g = torch.Generator().manual_seed(0)
    vocab = model.cfg.vocab_size
    rand = lambda n: torch.randint(0, vocab, (n,), generator=g).tolist()       # noqa: E731
    keep = SamplingParams(temperature=0, max_tokens=max_len - context, ignore_eos=True)
    ids = [engine.add_request(rand(context), keep, output_kind="final_only") for _ in range(decodes)]
    while any(s.num_computed_tokens < s.num_prompt_tokens for s in engine.scheduler.running) \
            or engine.scheduler.waiting:
        engine.step()
    rows = []
    for chunk in (0, *chunks):
        times = []
        for k in range(steps + 3):                        # 3 untimed: the first may capture a graph
            extra = None
            if chunk:
                extra = engine.add_request(rand(chunk), SamplingParams(temperature=0, max_tokens=1),
                                           output_kind="final_only")
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            engine.step()
            times.append(time.perf_counter() - t0)
            rec = engine.step_log[-1]
            assert rec.num_tokens == decodes + chunk, f"step was not {decodes} decodes + {chunk}: {rec}"
            if extra is not None:
                engine.abort_request(extra)
        rows.append(dict(decodes=decodes, prompt_tokens=chunk, cuda_graphs=cuda_graphs,
                         step_ms=_median_ms(times[3:]), step_ms_min=min(times[3:]) * 1e3,
                         step_ms_max=max(times[3:]) * 1e3))
    for r in ids:
        engine.abort_request(r)
    pure = rows[0]["step_ms"]
    for r in rows:
        r["ratio_to_pure_decode"] = r["step_ms"] / pure
    return rows


def small_batching(model, caps=(8, 16, 32, 48), repeats=5, num_requests=12, prompt_len=8, mean_output=12,
                   max_num_seqs=4) -> list[dict]:
    """Notebook 04's small workload on this device: output tok/s per policy and cap (median of repeats)."""
    from ...config import SamplingParams
    from ...engine.llm import LLM
    from ..workloads import make_workload
    rows = []
    for cap in caps:
        wl = make_workload("anyscale-cpu", model.cfg.vocab_size, num_requests=num_requests,
                           prompt_len=prompt_len, mean_output=mean_output, cap=cap)
        params = [SamplingParams(temperature=0, max_tokens=r.max_tokens, ignore_eos=True) for r in wl.requests]
        prompts = [r.prompt_token_ids for r in wl.requests]
        for policy in ("static", "continuous"):
            llm = LLM(model, scheduler=policy, max_num_seqs=max_num_seqs, block_size=16, num_kv_blocks=64)
            llm.generate(prompts, params, use_tqdm=False)                 # warm-up: graphs captured
            walls = []
            for _ in range(repeats):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                llm.generate(prompts, params, use_tqdm=False)
                walls.append(time.perf_counter() - t0)
            tokens = sum(p.max_tokens for p in params)
            rows.append(dict(cap=cap, policy=policy, output_tokens=tokens, steps=len(llm.engine.step_log),
                             tok_per_s=tokens / statistics.median(walls),
                             tok_per_s_min=tokens / max(walls), tok_per_s_max=tokens / min(walls)))
    return rows


def long_prompt(model, prompt_len=32768, budget=4096) -> dict:
    """One long prompt, chunked: TTFT and the steps it took."""
    from ...config import SamplingParams
    from ...engine.llm import LLM
    llm = LLM(model, max_num_seqs=8, max_num_batched_tokens=budget, max_model_len=prompt_len + 64,
              kv_memory_gb=8)
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, model.cfg.vocab_size, (prompt_len,), generator=g).tolist()
    params = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)
    llm.generate([prompt[:budget + 16]], params, use_tqdm=False)           # warm-up: kernels compile
    llm.engine.step_log.clear()
    torch.cuda.synchronize()
    [out] = llm.generate([prompt], params, use_tqdm=False)
    m = out.metrics
    return dict(prompt_tokens=prompt_len, max_num_batched_tokens=budget, ttft_s=m.ttft,
                prefill_steps=sum(r.is_prefill for r in llm.engine.step_log),
                tpot_ms=m.tpot * 1e3, output_tokens=len(out.outputs[0].token_ids))


def run(json_path=None, quick=False, log=print) -> dict:
    if not torch.cuda.is_available():
        raise ValueError("bench mixed needs a CUDA GPU")
    from ...models.loader import load_model
    dev = torch.device("cuda")
    report = make_report("mixed", dev, dict(quick=quick))

    def save():
        if json_path:
            write_report(report, json_path)
    llama = load_model("llama-3.2-1b", device=dev, dtype=torch.bfloat16, random_weights=True)
    report["mixed_steps"] = dict(model="llama-3.2-1b (random, bf16)", rows=[
        *mixed_steps(llama, steps=5 if quick else 20), *mixed_steps(llama, steps=5 if quick else 20,
                                                                  cuda_graphs=False)])
    for r in report["mixed_steps"]["rows"]:
        log(f"graphs={r['cuda_graphs']!s:5} 64 decodes + {r['prompt_tokens']:>2} prompt tokens: "
            f"{r['step_ms']:.3f} ms ({r['ratio_to_pure_decode']:.2f}x pure decode)")
    save()
    report["long_prompt"] = dict(model="llama-3.2-1b (random, bf16)",
                                 **long_prompt(llama, prompt_len=8192 if quick else 32768))
    log(f"long prompt: {report['long_prompt']}")
    save()
    del llama
    torch.cuda.empty_cache()
    smol = load_model("smollm2-135m", device=dev, dtype=torch.bfloat16, random_weights=True)
    report["small_batching"] = dict(model="smollm2-135m (random, bf16)",
                                    rows=small_batching(smol, repeats=2 if quick else 5))
    for r in report["small_batching"]["rows"]:
        log(f"cap {r['cap']:>2} {r['policy']:>10}: {r['tok_per_s']:.0f} tok/s ({r['steps']} steps)")
    save()
    return report


def add_arguments(p) -> None:
    p.add_argument("--quick", action="store_true", help="fewer steps and repeats (for a smoke run)")


def run_cli(args) -> int:
    from ..harness import device_info
    if not torch.cuda.is_available():
        raise ValueError("bench mixed needs a CUDA GPU")
    path = output_path(args, device_info("cuda"), "mixed")
    run(path, args.quick)
    print(f"wrote {path}")
    return 0
