"""``python -m course_lib bench``: one workload through several systems, one table, one JSON file.

Systems: ``hf-static`` and ``hf-cb`` (transformers, see peers.py), ``static`` and ``continuous``
(our engine, same code, two scheduling policies). Every system sees the same requests; throughput
counts only the requested output tokens (padding work in static batches is not "useful").

Every run first measures the device (copy bandwidth, matmul rate in the model's dtype) and reports
the workload's floor (floor.py): ``floor_fraction = floor_s / wall_time_s`` says how close each
system came to what the hardware allows.
"""
from __future__ import annotations

import argparse
import gc
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from .floor import workload_floor
from .metrics import RequestTiming, summarize
from .report import format_table
from .workloads import Workload, make_workload

SYSTEMS = ("hf-static", "hf-cb", "static", "continuous")
HF_SYSTEMS = ("hf-static", "hf-cb")


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


def warm_up(llm, prompt: list[int]) -> None:
    """Compile, before the clock starts, the kernel variants a run will need. Triton compiles one
    variant per pattern of its integer arguments (divisible by 16 or not, equal to 1 or not), and
    the prefill kernel's block-table row stride is the longest table of the step: a lone short prompt
    leaves the variant that a step of many sequences needs to be compiled inside the timed run (a
    ~1 s stall in the first prefill step on a fresh GPU machine). So: one prompt of 16 blocks alone,
    then two prompts at once, the longer 18 blocks, each decoding one token."""
    from ..config import SamplingParams
    engine = llm.engine
    bs, params = engine.cfg.block_size, SamplingParams(temperature=0, max_tokens=2, ignore_eos=True)
    fits = min(engine.max_model_len - 2, engine.cfg.max_num_batched_tokens // 2)   # small test engines
    long = (prompt * (18 * bs // len(prompt) + 1))[:min(18 * bs - 1, fits)]
    for batch in ([long[:16 * bs]], [long, long[:3 * bs]]):
        llm.generate(batch, params)


def run_engine(model, workload: Workload, scheduler: str, **engine_kw) -> tuple[list[RequestTiming], float, dict]:
    from ..config import SamplingParams
    from ..engine.llm import LLM
    llm = LLM(model, scheduler=scheduler, **engine_kw)
    warm_up(llm, workload.requests[0].prompt_token_ids)
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
                 num_kv_blocks=llm.engine.kv_manager.num_blocks)
    return timings, wall, extra


def run_bench(workload: str = "anyscale-cpu", systems=("hf-static", "continuous"),
              model: str = "smollm2-135m", device: str | None = None, dtype: str | None = None,
              random_weights: bool = False, max_num_seqs: int = 16, max_num_batched_tokens: int = 4096,
              hf_batch_size: int | None = None, kv_memory_gb: float | None = None,
              json_path: str | None = None, workload_overrides: dict | None = None,
              hf_num_requests: int | dict | None = None, hf_time_limit_s: float | None = None,
              deadline: float | dict | None = None, rates: dict | None = None, log=print,
              loaded=None) -> dict:
    """Run ``systems`` on ``workload``; returns (and optionally writes) the results dict.

    ``hf_num_requests``: run the HF systems on the first N requests (an int for both, or a dict per
    system; see peers.py). ``hf_time_limit_s`` (seconds from the system's start) and ``deadline``
    (a time.perf_counter() value, or a dict of them per HF system) guard the HF systems: past either
    one a system stops (peers.py says how) and the other systems' figures stand. ``rates``: a
    measure_rates() dict to reuse. ``loaded``: the already-loaded model named by ``model`` (the demo
    has one), to skip a reload."""
    from ..models.loader import load_model
    from .device import pick_device_dtype
    from .peers import build_peer, run_peer
    from .roofline import measure_rates

    bad = [s for s in systems if s not in SYSTEMS]
    if bad:
        raise ValueError(f"systems must be chosen from {list(SYSTEMS)}, got {bad}")
    sample = _per_hf_system(hf_num_requests)
    dev, auto_dtype = pick_device_dtype(device)
    dt = getattr(torch, dtype) if isinstance(dtype, str) else (dtype or auto_dtype)
    ours = loaded if loaded is not None else load_model(model, device=dev, dtype=dt,
                                                        random_weights=random_weights)
    dev, dt = ours.device, ours.dtype
    wl = make_workload(workload, ours.cfg.vocab_size, **(workload_overrides or {}))
    log(f"workload {wl.name}: {len(wl.requests)} requests, {wl.prompt_tokens} prompt tokens, "
        f"{wl.output_tokens} output tokens; model {model} ({'random' if random_weights else 'real'} "
        f"weights, {dt}) on {device_name(dev)}")
    rates = rates or measure_rates(dev, dt)
    floors = {}

    def floor_of(n: int):
        if n not in floors:
            floors[n] = workload_floor(ours.cfg, wl.lengths[:n], dt.itemsize, rates["copy_gb_per_s"] * 1e9,
                                       rates["matmul_tflops"] * 1e12, max_num_seqs)
        return floors[n]

    full = floor_of(len(wl.requests))
    log(f"roofline: copy {rates['copy_gb_per_s']:.0f} GB/s, matmul {rates['matmul_tflops']:.3g} TFLOP/s "
        f"({rates['matmul_dtype']}); floor {full.floor_s:.3g} s over {full.steps} steps "
        f"({full.weight_bytes / 1e9:.3g} GB of weights, {full.kv_bytes / 1e9:.3g} GB of KV, "
        f"{full.compute_bound_steps} compute-bound steps)")
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
                    hf_batch_size=hf_batch_size or max_num_seqs,
                    hf_num_requests={s: min(n, len(wl.requests)) for s, n in sample.items() if s in systems},
                    hf_time_limit_s=hf_time_limit_s),
        roofline=dict(**rates, max_num_seqs=max_num_seqs, **full.as_dict()),
        results=results)
    hf = None
    for system in systems:
        t = time.perf_counter()
        sub = wl.head(sample[system]) if system in sample else wl
        until = deadline.get(system) if isinstance(deadline, dict) else deadline
        guard = [d for d in (until, hf_time_limit_s and t + hf_time_limit_s) if d]
        try:
            if system in HF_SYSTEMS:
                if hf is None:
                    hf = build_peer(model, random_weights, dev, dt)
                timings, wall = run_peer(system, hf, sub, hf_batch_size or max_num_seqs,
                                         min(guard, default=None))
                extra = {}
            else:
                timings, wall, extra = run_engine(
                    ours, sub, system, max_num_seqs=max_num_seqs,
                    max_num_batched_tokens=max_num_batched_tokens, kv_memory_gb=kv_memory_gb)
        except Exception as e:            # one failing peer must not lose the other measurements
            results[system] = dict(error=f"{type(e).__name__}: {e}")
            log(f"{system}: FAILED ({results[system]['error']})")
        else:
            n = len(timings)              # a guarded hf-static keeps whole batches only
            floor = floor_of(n).floor_s
            results[system] = {**summarize(timings, wall), "num_requests": n,
                               **({"sample_of": len(wl.requests)} if n < len(wl.requests) else {}),
                               "floor_s": floor, "floor_fraction": floor / wall, **extra}
            log(f"{system}: {results[system]['output_tok_per_s']:.1f} output tok/s on {n} requests "
                f"({time.perf_counter() - t:.1f} s)")
            _add_ratios(results)
        finally:
            gc.collect()                  # drop the finished engine's KV pool before the next system
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        if json_path:                     # after every system: a run cut short keeps what it measured
            _write(report, json_path)
    log(format_table(report))
    if json_path:
        log(f"wrote {json_path}")
    return report


def _per_hf_system(hf_num_requests: int | dict | None) -> dict:
    """{hf system: N} from one N for both, a dict, or None (every request)."""
    if hf_num_requests is None:
        return {}
    sample = (dict(hf_num_requests) if isinstance(hf_num_requests, dict)
              else dict.fromkeys(HF_SYSTEMS, hf_num_requests))
    bad = {s: n for s, n in sample.items()
           if s not in HF_SYSTEMS or not isinstance(n, int) or isinstance(n, bool) or n < 1}
    if bad:
        raise ValueError(f"hf_num_requests must map {list(HF_SYSTEMS)} to integers >= 1, got {bad}")
    return sample


def _add_ratios(results: dict) -> None:
    """ratio_to_hf_static and ratio_to_hf_cb: output tok/s over the peer's output tok/s."""
    for peer in HF_SYSTEMS:
        base = results.get(peer, {}).get("output_tok_per_s")
        for r in results.values():
            if base and "output_tok_per_s" in r:
                r[f"ratio_to_{peer.replace('-', '_')}"] = r["output_tok_per_s"] / base


def _write(report: dict, json_path: str) -> None:
    Path(json_path).parent.mkdir(parents=True, exist_ok=True)
    Path(json_path).write_text(json.dumps(report, indent=2) + "\n")


def parse_hf_num_requests(text: str) -> int | dict:
    """``128`` (both HF systems) or ``hf-static=128,hf-cb=64``."""
    try:
        if "=" not in text:
            return int(text)
        return {k.strip(): int(v) for k, v in (part.split("=") for part in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be N or hf-static=N,hf-cb=M, got {text!r}") from None


def add_bench_parser(sub) -> None:
    """The ``bench`` sub-command's flags (registered by course_lib/__main__.py)."""
    from .suite import SUITES
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
    b.add_argument("--hf-num-requests", type=parse_hf_num_requests, default=None, metavar="N|SYS=N,...",
                   help="run the HF systems on the first N requests only (they are slow; requests are "
                        "iid, so whole static batches estimate the full run): N, or hf-static=N,hf-cb=M")
    b.add_argument("--hf-time-limit-s", type=float, default=None,
                   help="time guard per HF system: hf-static keeps the whole batches done by then, "
                        "hf-cb is recorded as failed")
    b.add_argument("--kv-memory-gb", type=float, default=None)
    b.add_argument("--num-requests", type=int, default=None, help="override the workload's count")
    b.add_argument("--cap", type=int, default=None, help="anyscale workloads: output-length cap")
    b.add_argument("--json", default=None, help="write the results here")
    b.add_argument("--suite", choices=sorted(SUITES), default=None,
                   help="run a fixed set instead of one workload (only --hf-num-requests and "
                        "--time-budget-s apply): 'gpu' = nanovllm (256 requests) on the qwen3-0.6b and "
                        "llama-3.2-1b shapes, random bf16 weights, continuous vs hf-static vs hf-cb, "
                        f"256 slots, HF on the first {SUITES['gpu']['hf_num_requests']} requests, "
                        "under 8 min on an H100/H200; "
                        "'cpu' = the recorded anyscale-cpu run. One JSON per model in --json-dir")
    b.add_argument("--json-dir", default="data/results", help="where --suite writes its JSON files")
    b.add_argument("--time-budget-s", type=float, default=None,
                   help="--suite: total seconds (gpu default 440); each model gets an equal share of "
                        "what is left, its hf-cb stops at the end of that share, hf-static at the end "
                        "of the budget")
    b.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    try:
        if args.suite:
            from .suite import run_suite
            run_suite(args.suite, args.json_dir, args.time_budget_s, args.hf_num_requests)
            return 0
        overrides = {k: v for k, v in (("num_requests", args.num_requests), ("cap", args.cap))
                     if v is not None}
        run_bench(args.workload, [s.strip() for s in args.systems.split(",") if s.strip()],
                  model=args.model, device=args.device, dtype=args.dtype,
                  random_weights=args.random_weights, max_num_seqs=args.max_num_seqs,
                  max_num_batched_tokens=args.max_num_batched_tokens, hf_batch_size=args.hf_batch_size,
                  kv_memory_gb=args.kv_memory_gb, json_path=args.json, workload_overrides=overrides,
                  hf_num_requests=args.hf_num_requests, hf_time_limit_s=args.hf_time_limit_s)
    except ValueError as e:               # a bad flag value: one line and exit code 2, like the parser
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def demo_batching(model, tok, args) -> None:
    """`make demo`, part 2: static vs continuous batching (and HF) on a small Anyscale-style workload."""
    print("Batching on a small Anyscale-style workload (16 requests, 16-token prompts, output "
          "lengths ~ exponential with mean 32 capped at 64, 8 batch slots):")
    run_bench("anyscale-cpu", ["hf-static", "static", "continuous"], model="smollm2-135m",
              max_num_seqs=8, workload_overrides=dict(num_requests=16, cap=64), loaded=model)
