"""``python -m course_lib bench``: one workload through several systems, one table, one JSON file.

Systems: ``hf-static`` and ``hf-cb`` (transformers, see peers.py), ``static`` and ``continuous``
(our engine, same code, two scheduling policies). Every system sees the same requests; throughput
counts only the requested output tokens (padding work in static batches is not "useful").
"""
from __future__ import annotations

import gc
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from .metrics import RequestTiming, summarize
from .workloads import Workload, make_workload

SYSTEMS = ("hf-static", "hf-cb", "static", "continuous")


def versions() -> dict:
    import transformers
    out = dict(python=platform.python_version(), torch=torch.__version__,
               transformers=transformers.__version__)
    try:
        import triton
        out["triton"] = triton.__version__
    except ImportError:
        out["triton"] = None
    try:
        out["course_lib_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
            cwd=Path(__file__).parent).stdout.strip() or None
    except OSError:
        out["course_lib_commit"] = None
    return out


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def run_engine(model, workload: Workload, scheduler: str, **engine_kw) -> tuple[list[RequestTiming], float, dict]:
    from ..config import SamplingParams
    from ..engine.llm import LLM
    llm = LLM(model, scheduler=scheduler, **engine_kw)
    warm = workload.requests[0]
    llm.generate([warm.prompt_token_ids], SamplingParams(temperature=0, max_tokens=2, ignore_eos=True))
    llm.engine.step_log.clear()
    params = [SamplingParams(temperature=0, max_tokens=r.max_tokens, ignore_eos=True)
              for r in workload.requests]
    t0 = time.perf_counter()
    outs = llm.generate([r.prompt_token_ids for r in workload.requests], params)
    wall = time.perf_counter() - t0
    timings = [RequestTiming(o.metrics.arrival_time, o.metrics.first_token_time, o.metrics.finish_time,
                             len(o.outputs[0].token_ids)) for o in outs]
    log = llm.engine.step_log
    extra = dict(steps=len(log), preemptions=sum(s.num_preempted for s in log),
                 num_kv_blocks=llm.engine.block_manager.num_blocks)
    return timings, wall, extra


def run_bench(workload: str = "anyscale-cpu", systems=("hf-static", "continuous"),
              model: str = "smollm2-135m", device: str | None = None, dtype: str | None = None,
              random_weights: bool = False, max_num_seqs: int = 16, max_num_batched_tokens: int = 4096,
              hf_batch_size: int | None = None, kv_memory_gb: float | None = None,
              json_path: str | None = None, workload_overrides: dict | None = None,
              log=print, loaded=None) -> dict:
    """Run ``systems`` on ``workload``; returns (and optionally writes) the results dict.

    ``loaded``: the already-loaded model named by ``model`` (the demo has one), to skip a reload."""
    from ..models.loader import load_model
    from ..models.registry import KNOWN_MODELS, resolve_model
    from .device import pick_device_dtype
    from .peers import build_hf_model, run_hf_cb, run_hf_static

    bad = [s for s in systems if s not in SYSTEMS]
    if bad:
        raise ValueError(f"systems must be chosen from {list(SYSTEMS)}, got {bad}")
    dev, auto_dtype = pick_device_dtype(device)
    dt = getattr(torch, dtype) if isinstance(dtype, str) else (dtype or auto_dtype)
    ours = loaded if loaded is not None else load_model(model, device=dev, dtype=dt,
                                                        random_weights=random_weights)
    dev, dt = ours.device, ours.dtype
    wl = make_workload(workload, ours.cfg.vocab_size, **(workload_overrides or {}))
    log(f"workload {wl.name}: {len(wl.requests)} requests, {wl.prompt_tokens} prompt tokens, "
        f"{wl.output_tokens} output tokens; model {model} ({'random' if random_weights else 'real'} "
        f"weights, {dt}) on {device_name(dev)}")
    results = {}
    report = dict(
        command="python -m course_lib " + " ".join(sys.argv[1:]) if sys.argv and "course_lib" in sys.argv[0] else None,
        timestamp=time.strftime("%Y-%m-%dT%H:%M:%S%z"), device=device_name(dev), versions=versions(),
        model=dict(name=model, random_weights=random_weights, dtype=str(dt).removeprefix("torch."),
                   params=ours.cfg.num_params, layers=ours.cfg.num_layers, hidden=ours.cfg.hidden_size,
                   heads=ours.cfg.num_heads, kv_heads=ours.cfg.num_kv_heads),
        workload=dict(name=wl.name, **wl.params, prompt_tokens=wl.prompt_tokens,
                      output_tokens=wl.output_tokens),
        engine=dict(max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                    hf_batch_size=hf_batch_size or max_num_seqs),
        results=results)
    hf = None
    for system in systems:
        t = time.perf_counter()
        try:
            if system.startswith("hf-"):
                if hf is None:
                    spec = (KNOWN_MODELS[model][0] if random_weights and model in KNOWN_MODELS
                            else resolve_model(model).folder)
                    hf = build_hf_model(spec, dev, dt)
                timings, wall = (run_hf_static(hf, wl, hf_batch_size or max_num_seqs)
                                 if system == "hf-static" else run_hf_cb(hf, wl))
                extra = {}
            else:
                timings, wall, extra = run_engine(
                    ours, wl, system, max_num_seqs=max_num_seqs,
                    max_num_batched_tokens=max_num_batched_tokens, kv_memory_gb=kv_memory_gb)
        except Exception as e:            # one failing peer must not lose the other measurements
            results[system] = dict(error=f"{type(e).__name__}: {e}")
            log(f"{system}: FAILED ({results[system]['error']})")
            continue
        finally:
            gc.collect()                  # drop the finished engine's KV pool before the next system
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        results[system] = {**summarize(timings, wall), **extra}
        log(f"{system}: {results[system]['output_tok_per_s']:.1f} output tok/s "
            f"({time.perf_counter() - t:.1f} s)")
        _add_ratios(results)
        if json_path:                     # after every system: a run cut short keeps what it measured
            _write(report, json_path)
    log(format_table(report))
    if json_path:
        log(f"wrote {json_path}")
    return report


def _add_ratios(results: dict) -> None:
    base = results.get("hf-static", {}).get("output_tok_per_s")
    for r in results.values():
        if base and "output_tok_per_s" in r:
            r["ratio_to_hf_static"] = r["output_tok_per_s"] / base


def _write(report: dict, json_path: str) -> None:
    Path(json_path).parent.mkdir(parents=True, exist_ok=True)
    Path(json_path).write_text(json.dumps(report, indent=2) + "\n")


def format_table(report: dict) -> str:
    import pandas as pd
    rows = {}
    for system, r in report["results"].items():
        if "error" in r:
            rows[system] = {"error": r["error"][:60]}
            continue
        rows[system] = {"out tok/s": r["output_tok_per_s"], "req/s": r["requests_per_s"],
                        "x hf-static": r.get("ratio_to_hf_static"),
                        "TTFT p50 s": r["ttft_p50_s"], "TTFT p99 s": r["ttft_p99_s"],
                        "TPOT p50 ms": None if r["tpot_p50_s"] is None else 1e3 * r["tpot_p50_s"],
                        "TPOT p99 ms": None if r["tpot_p99_s"] is None else 1e3 * r["tpot_p99_s"],
                        "E2E p50 s": r["e2e_p50_s"], "E2E p99 s": r["e2e_p99_s"]}
    return pd.DataFrame(rows).T.to_string(float_format=lambda x: f"{x:.3g}")


def add_bench_parser(sub) -> None:
    """The ``bench`` sub-command's flags (registered by course_lib/__main__.py)."""
    from .workloads import WORKLOADS
    b = sub.add_parser("bench", help="one workload through several systems; table + JSON")
    b.add_argument("--workload", default="anyscale-cpu", help=f"one of {sorted(WORKLOADS)}")
    b.add_argument("--systems", default="hf-static,static,continuous",
                   help=f"comma-separated, from {list(SYSTEMS)}")
    b.add_argument("--model", default="smollm2-135m", help="registry name, folder or hub id")
    b.add_argument("--random-weights", action="store_true",
                   help="build the model's shape with random weights (speed work; nothing downloaded)")
    b.add_argument("--max-num-seqs", type=int, default=16, help="batch slots (GPU runs: 256)")
    b.add_argument("--max-num-batched-tokens", type=int, default=4096)
    b.add_argument("--hf-batch-size", type=int, default=None, help="default: --max-num-seqs")
    b.add_argument("--kv-memory-gb", type=float, default=None)
    b.add_argument("--num-requests", type=int, default=None, help="override the workload's count")
    b.add_argument("--cap", type=int, default=None, help="anyscale workloads: output-length cap")
    b.add_argument("--json", default=None, help="write the results here")
    b.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    overrides = {k: v for k, v in (("num_requests", args.num_requests), ("cap", args.cap)) if v is not None}
    run_bench(args.workload, [s.strip() for s in args.systems.split(",") if s.strip()],
              model=args.model, device=args.device, dtype=args.dtype,
              random_weights=args.random_weights, max_num_seqs=args.max_num_seqs,
              max_num_batched_tokens=args.max_num_batched_tokens, hf_batch_size=args.hf_batch_size,
              kv_memory_gb=args.kv_memory_gb, json_path=args.json, workload_overrides=overrides)
    return 0


def demo_batching(model, tok, args) -> None:
    """`make demo`, part 2: static vs continuous batching (and HF) on a small Anyscale-style workload."""
    print("Batching on a small Anyscale-style workload (16 requests, 16-token prompts, output "
          "lengths ~ exponential with mean 32 capped at 64, 8 batch slots):")
    run_bench("anyscale-cpu", ["hf-static", "static", "continuous"], model="smollm2-135m",
              max_num_seqs=8, workload_overrides=dict(num_requests=16, cap=64), loaded=model)
