"""``python -m course_lib bench serving`` (the default): one workload through several systems.

Systems: ``hf-static``, ``hf-static-compile`` and ``hf-cb`` (transformers, see perf/peers.py),
``static`` and ``continuous`` (our engine, same code, two scheduling policies). Every system sees the
same requests; throughput counts only the requested output tokens (padding work in static batches
is not "useful"). With ``--request-rate R1,R2,...`` it is a rate sweep instead (Day 07): requests
arrive open-loop at each rate (perf/loadgen.py) and the report is the latency-throughput curve.

Every run first measures the device (copy bandwidth, matmul rate in the model's dtype) and reports
the workload's floor (floor.py): ``floor_fraction = floor_s / wall_time_s`` says how close each
system came to what the hardware allows.

On a CPU the run first prints what it will cost and refuses an hour-long one (cost.py).
"""
from __future__ import annotations

import argparse
import gc
import math
import time

import torch

from ...config import EngineConfig
from ..floor import workload_floor
from ..harness import device_info, make_report, output_path, progress, write_report
from ..loadgen import capture_graphs
from ..metrics import RequestTiming, summarize
from ..peers import PEERS, PeerResult, build_peer, run_peer
from ..report import format_table
from ..shapes import model_info
from ..workloads import WORKLOADS, Workload, make_workload
from .cost import CPU_SLOW_S, check_cost, cpu_estimate

HELP = "one workload through ours and HF's systems (the default); --request-rate: a rate sweep"
SYSTEMS = ("hf-static", "hf-static-compile", "hf-cb", "static", "continuous")
HF_SYSTEMS = PEERS
DEFAULT_SYSTEMS = "hf-static,static,continuous"

def warm_up(llm, prompt: list[int]) -> None:
    """Compile, before the clock starts, the kernel variants a run will need. Triton compiles one
    variant per pattern of its integer arguments (divisible by 16 or not, equal to 1 or not), and
    the prefill kernel's block-table row stride is the longest table of the step: a lone short prompt
    leaves the variant that a step of many sequences needs to be compiled inside the timed run (a
    ~0.6-1 s stall in the first prefill step on a fresh GPU machine). So: one prompt of n blocks
    alone (n a multiple of 16), then two prompts at once, the longer n + 2 blocks, each decoding one
    token.

    The steps must run eagerly, as a long prefill does: a step of at most ``mixed_graphs.max_tokens``
    tokens replays a captured mixed graph, whose block table is a static buffer as wide as
    max_model_len allows (its stride says nothing about a real step's), so on a GPU the prompts are
    longer than that (48 and 50 blocks of 16 tokens), on a CPU 16 and 18 blocks."""
    from ...config import SamplingParams
    engine = llm.engine
    bs, params = engine.cfg.block_size, SamplingParams(temperature=0, max_tokens=2, ignore_eos=True)
    mixed = engine.runner.mixed_graphs
    graph_tokens = mixed.max_tokens if mixed is not None else 0    # steps up to this many: a graph
    blocks = 16 * (graph_tokens // (16 * bs) + 1)                  # a multiple of 16, past the graphs
    fits = min(engine.max_model_len - 2, engine.cfg.max_num_batched_tokens // 2)   # small test engines
    long = (prompt * ((blocks + 2) * bs // len(prompt) + 1))[:min((blocks + 2) * bs - 1, fits)]
    for batch in ([long[:blocks * bs]], [long, long[:3 * bs]]):
        llm.generate(batch, params, use_tqdm=False)
    capture_graphs(engine)              # every mixed-step graph, so no capture lands in the timed run


def make_llm(model, scheduler: str, workload: Workload, **engine_kw):
    """Our engine on ``model``, warmed up on the workload's first prompt, step log cleared."""
    from ...engine.llm import LLM
    llm = LLM(model, scheduler=scheduler, **engine_kw)
    warm_up(llm, workload.requests[0].prompt_token_ids)
    llm.engine.step_log.clear()
    return llm


def run_engine(model, workload: Workload, scheduler: str, bar=None, **engine_kw) -> PeerResult:
    """Every request queued at once, stepped to the end (LLM.generate's loop, with ``bar`` updated)."""
    from ...config import SamplingParams
    from ...engine.llm import run_to_completion
    llm = make_llm(model, scheduler, workload, **engine_kw)
    engine, ids = llm.engine, []
    t0 = time.perf_counter()
    done = run_to_completion(engine, ids, bar, add=lambda: ids.extend(
        engine.add_request(r.prompt_token_ids, SamplingParams(temperature=0, max_tokens=r.max_tokens,
                                                              ignore_eos=True), output_kind="final_only")
        for r in workload.requests))
    wall = time.perf_counter() - t0
    outs = [done[i] for i in ids]
    timings = [RequestTiming(o.metrics.arrival_time, o.metrics.first_token_time, o.metrics.finish_time,
                             len(o.outputs[0].token_ids)) for o in outs]
    log = engine.step_log
    extra = dict(steps=len(log), preemptions=sum(s.num_preempted for s in log),
                 num_kv_blocks=engine.kv_manager.num_blocks)
    return PeerResult(timings, wall, list(range(len(timings))), extra)


# ---- the benchmark ------------------------------------------------------------------------------
def run_bench(workload: str = "anyscale-cpu", systems=("hf-static", "continuous"),
              model: str = "smollm2-135m", device: str | None = None, dtype: str | None = None,
              random_weights: bool = False, max_num_seqs: int = 16, max_num_batched_tokens: int = 4096,
              hf_batch_size: int | None = None, kv_memory_gb: float | None = None,
              max_cudagraph_capture_size: int = EngineConfig.max_cudagraph_capture_size, json_path: str | None = None, workload_overrides: dict | None = None,
              hf_num_requests: int | dict | None = None, hf_time_limit_s: float | dict | None = None,
              deadline: float | dict | None = None, rates: dict | None = None, log=print,
              loaded=None, show_progress: bool = True, allow_slow: bool = False, command: str | None = "auto"
              ) -> dict:
    """Run ``systems`` on ``workload``; returns (and optionally writes) the report.

    ``hf_num_requests``: run the HF systems on the first N requests (an int for all, or a dict per
    system; see peers.py). ``hf_time_limit_s`` (seconds from the system's start; a number, or a dict
    per HF system) and ``deadline`` (a time.perf_counter() value, or a dict per HF system) guard the
    HF systems: past either one a system stops (peers.py says how: hf-cb reports what finished, marked
    partial) and the other systems' figures stand. ``rates``: a measure_rates() dict to reuse.
    ``loaded``: the already-loaded model named by ``model`` (the demo has one), to skip a reload."""
    from ...models.loader import load_model
    from ..device import pick_device_dtype
    from ..roofline import measure_rates

    check_systems(systems)
    sample = per_hf_system(hf_num_requests)
    dev, auto_dtype = pick_device_dtype(device)
    dt = getattr(torch, dtype) if isinstance(dtype, str) else (dtype or auto_dtype)
    ours = loaded if loaded is not None else load_model(model, device=dev, dtype=dt,
                                                        random_weights=random_weights)
    dev, dt = ours.device, ours.dtype
    wl = make_workload(workload, ours.cfg.vocab_size, **(workload_overrides or {}))
    batch = hf_batch_size or max_num_seqs
    log(f"workload {wl.name}: {len(wl.requests)} requests, {wl.prompt_tokens} prompt tokens, "
        f"{wl.output_tokens} output tokens; model {model} ({'random' if random_weights else 'real'} "
        f"weights, {dt}) on {device_info(dev)['name']}; systems {', '.join(systems)}")
    if dev.type == "cpu":                 # say what it will cost, refuse an hour-long run (cost.py)
        check_cost(cpu_estimate(ours, wl, systems, sample, batch), workload, allow_slow, log)
    rates = rates or measure_rates(dev, dt)
    floors = {}

    def floor_of(served: tuple[int, ...]):
        if served not in floors:
            floors[served] = workload_floor(ours.cfg, [wl.lengths[i] for i in served], dt.itemsize,
                                            rates["copy_gb_per_s"] * 1e9, rates["matmul_tflops"] * 1e12,
                                            max_num_seqs)
        return floors[served]

    full = floor_of(tuple(range(len(wl.requests))))
    log(f"roofline: copy {rates['copy_gb_per_s']:.0f} GB/s, matmul {rates['matmul_tflops']:.3g} TFLOP/s "
        f"({rates['matmul_dtype']}); floor {full.floor_s:.3g} s over {full.steps} steps "
        f"({full.weight_bytes / 1e9:.3g} GB of weights, {full.kv_bytes / 1e9:.3g} GB of KV, "
        f"{full.compute_bound_steps} compute-bound steps)")
    results = {}
    report = make_report("serving", dev, dict(
        model=model_info(ours.cfg, model, dt, random_weights),
        workload=dict(name=wl.name, **wl.params, prompt_tokens=wl.prompt_tokens,
                      output_tokens=wl.output_tokens),
        engine=dict(max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                    max_cudagraph_capture_size=max_cudagraph_capture_size, hf_batch_size=batch,
                    hf_num_requests={s: min(n, len(wl.requests)) for s, n in sample.items() if s in systems},
                    hf_time_limit_s=hf_time_limit_s),
        roofline=dict(**rates, max_num_seqs=max_num_seqs, **full.as_dict()),
        results=results), command=command)
    hf = None
    for k, system in enumerate(systems, 1):
        t = time.perf_counter()
        sub = wl.head(sample[system]) if system in sample else wl
        bar = progress(len(sub.requests), f"{system} [{k}/{len(systems)}]", show_progress)
        try:
            if system in HF_SYSTEMS:
                if hf is None:
                    hf = build_peer(model, random_weights, dev, dt)
                res = run_peer(system, hf, sub, batch, _guard(system, t, deadline, hf_time_limit_s), bar)
            else:
                res = run_engine(ours, sub, system, bar, max_num_seqs=max_num_seqs,
                                 max_num_batched_tokens=max_num_batched_tokens, kv_memory_gb=kv_memory_gb,
                                 max_cudagraph_capture_size=max_cudagraph_capture_size)
        except Exception as e:            # one failing peer must not lose the other measurements
            results[system] = dict(error=f"{type(e).__name__}: {e}")
            log(f"{system}: FAILED ({results[system]['error']})")
        else:
            results[system] = system_row(res, len(wl.requests), floor_of(tuple(res.served)).floor_s)
            log(f"{system}: {results[system]['output_tok_per_s']:.1f} output tok/s on {len(res.timings)} "
                f"requests ({time.perf_counter() - t:.1f} s)" + (" PARTIAL" if "partial" in res.figures else ""))
            add_ratios(results)
        finally:
            bar.close()
            gc.collect()                  # drop the finished engine's KV pool before the next system
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        if json_path:                     # after every system: a run cut short keeps what it measured
            write_report(report, json_path)
    log(format_table(report))
    if json_path:
        log(f"wrote {json_path}")
    return report


def system_row(res: PeerResult, workload_size: int, floor_s: float) -> dict:
    """One system's figures: the summary, how many requests (of how many), the floor, its extras."""
    n = len(res.timings)
    row = {**summarize(res.timings, res.wall_s), "num_requests": n,
           **({"sample_of": workload_size} if n < workload_size else {}),
           "floor_s": floor_s, "floor_fraction": floor_s / res.wall_s, **res.figures}
    extra = res.figures.get("partial", {}).get("unfinished_tokens", 0)
    if extra:        # a partial run's throughput: every token it generated within its guard
        row["output_tokens"] += extra
        row["output_tok_per_s"] = row["output_tokens"] / res.wall_s
    return row


def _guard(system: str, start: float, deadline, limit) -> float | None:
    """The earliest of the system's deadline and its time limit from ``start`` (None: unguarded)."""
    until = deadline.get(system) if isinstance(deadline, dict) else deadline
    secs = limit.get(system) if isinstance(limit, dict) else limit
    return min([d for d in (until, secs and start + secs) if d], default=None)


def check_systems(systems) -> None:
    bad = [s for s in systems if s not in SYSTEMS]
    if bad or not systems:
        raise ValueError(f"systems must be chosen from {list(SYSTEMS)}, got {bad or list(systems)}")


def per_hf_system(hf_num_requests: int | dict | None) -> dict:
    """{hf system: N} from one N for every HF system, a dict, or None (every request)."""
    if hf_num_requests is None:
        return {}
    sample = (dict(hf_num_requests) if isinstance(hf_num_requests, dict)
              else dict.fromkeys(HF_SYSTEMS, hf_num_requests))
    bad = {s: n for s, n in sample.items()
           if s not in HF_SYSTEMS or not isinstance(n, int) or isinstance(n, bool) or n < 1}
    if bad:
        raise ValueError(f"hf_num_requests must map {list(HF_SYSTEMS)} to integers >= 1, got {bad}")
    return sample


def add_ratios(results: dict) -> None:
    """ratio_to_<peer>: output tok/s over the peer's output tok/s (hf-static, hf-static-compile, hf-cb)."""
    for peer in HF_SYSTEMS:
        base = results.get(peer, {}).get("output_tok_per_s")
        for r in results.values():
            if base and "output_tok_per_s" in r:
                r[f"ratio_to_{peer.replace('-', '_')}"] = r["output_tok_per_s"] / base


# ---- the command line ----------------------------------------------------------------------------
def parse_hf_num_requests(text: str) -> int | dict:
    """``128`` (every HF system) or ``hf-static=128,hf-cb=64``."""
    try:
        if "=" not in text:
            return int(text)
        return {k.strip(): int(v) for k, v in (part.split("=") for part in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be N or hf-static=N,hf-cb=M, got {text!r}") from None


def parse_rates(text: str) -> list[float]:
    """``1,2,4.5``: request rates in requests/s, each positive and finite."""
    try:
        rates = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated requests/s such as 1,2,4, got {text!r}") from None
    if not rates or not all(r > 0 and math.isfinite(r) for r in rates):
        raise argparse.ArgumentTypeError(f"must be positive, finite requests/s such as 1,2,4, got {text!r}")
    return rates


def add_engine_arguments(p) -> None:
    """The model and engine flags serving and the rate sweep share."""
    p.add_argument("--workload", default="anyscale-cpu", help=f"one of {sorted(WORKLOADS)}")
    p.add_argument("--model", default="smollm2-135m", help="registry name, folder or hub id")
    p.add_argument("--random-weights", action="store_true",
                   help="build the model's shape with random weights (speed work; nothing downloaded)")
    p.add_argument("--max-num-seqs", type=int, default=16, help="batch slots (GPU runs: 256)")
    p.add_argument("--max-num-batched-tokens", type=int, default=4096)
    p.add_argument("--max-cudagraph-capture-size", type=int, default=EngineConfig.max_cudagraph_capture_size,
                   help="largest mixed step (tokens) replayed from a CUDA graph; larger ones run eagerly")
    p.add_argument("--kv-memory-gb", type=float, default=None)
    p.add_argument("--num-requests", type=int, default=None, help="override the workload's count")
    p.add_argument("--cap", type=int, default=None, help="anyscale workloads: output-length cap")


def add_arguments(p) -> None:
    add_engine_arguments(p)
    p.add_argument("--systems", default=None,
                   help=f"comma-separated, from {list(SYSTEMS)} (default {DEFAULT_SYSTEMS}; a rate sweep: "
                        "continuous)")
    p.add_argument("--hf-batch-size", type=int, default=None, help="default: --max-num-seqs")
    p.add_argument("--hf-num-requests", type=parse_hf_num_requests, default=None, metavar="N|SYS=N,...",
                   help="run the HF systems on the first N requests only (they are slow; requests are "
                        "iid, so whole static batches estimate the full run): N, or hf-static=N,hf-cb=M")
    p.add_argument("--hf-time-limit-s", type=float, default=None,
                   help="time guard per HF system: the static ones keep the whole batches done by then, "
                        "hf-cb reports the requests that finished, marked partial")
    p.add_argument("--allow-slow", action="store_true",
                   help=f"run even when a CPU run is estimated past {CPU_SLOW_S // 60} minutes")
    r = p.add_argument_group("rate sweep (Day 07)")
    r.add_argument("--request-rate", type=parse_rates, default=None, metavar="R1,R2,...",
                   help="sweep these request rates (req/s, open-loop arrivals) instead of a closed batch")
    r.add_argument("--arrival", default="poisson", help="arrival process (perf/loadgen.py): poisson, gamma, ...")
    r.add_argument("--burstiness", type=float, default=1.0, help="gamma shape: 1 is Poisson, < 1 burstier")
    r.add_argument("--slo-ttft-ms", type=float, default=None, help="goodput: time-to-first-token SLO")
    r.add_argument("--slo-tpot-ms", type=float, default=None, help="goodput: time-per-output-token SLO")
    p.add_argument("--json", default=None, help="write the report here")
    p.add_argument("--json-dir", default=None,
                   help="write the report here, named <device>_<workload>_<model>.json (--suite: default "
                        "data/results)")
    p.add_argument("--suite", choices=("cpu", "gpu"), default=None,
                   help="the old spelling of `bench suite NAME` (the recorded reports use it)")
    p.add_argument("--time-budget-s", type=float, default=None, help="--suite: see `bench suite --help`")


def check_args(args) -> None:
    """Every flag, before anything loads: a bad value once reached the engine and showed up as a
    failed system in the table, with exit code 0. ValueError names the flag."""
    from ...models import resolve_model
    from ..device import pick_device_dtype

    def positive(flag, value, what="an integer >= 1", real=False):
        if value is not None and not (value > 0 and (not real or math.isfinite(value))):
            raise ValueError(f"{flag} must be {what}, got {value!r}")

    for flag in ("--max-num-seqs", "--num-requests", "--max-num-batched-tokens", "--hf-batch-size", "--cap"):
        positive(flag, getattr(args, flag[2:].replace("-", "_")))
    for flag, what in (("--kv-memory-gb", "GiB"), ("--hf-time-limit-s", "seconds"),
                       ("--time-budget-s", "seconds"), ("--burstiness", "shape"),
                       ("--slo-ttft-ms", "milliseconds"), ("--slo-tpot-ms", "milliseconds")):
        positive(flag, getattr(args, flag[2:].replace("-", "_")), f"a positive, finite number of {what}", real=True)
    if not args.max_cudagraph_capture_size >= 16:
        raise ValueError(f"--max-cudagraph-capture-size must be an integer >= 16, got {args.max_cudagraph_capture_size}")
    if args.cap is not None and not args.workload.startswith("anyscale"):
        raise ValueError(f"--cap applies to the anyscale workloads only, got --workload {args.workload}")
    try:
        per_hf_system(args.hf_num_requests)
    except ValueError as e:
        raise ValueError(f"--hf-num-requests: {e}") from None
    if args.suite:
        return
    if args.workload not in WORKLOADS:
        raise ValueError(f"--workload must be one of {sorted(WORKLOADS)}, got {args.workload!r}")
    text = args.systems or ("continuous" if args.request_rate else DEFAULT_SYSTEMS)
    systems = [s.strip() for s in text.split(",") if s.strip()]
    if not systems or any(s not in SYSTEMS for s in systems):
        raise ValueError(f"--systems: systems must be chosen from {list(SYSTEMS)} (comma-separated, at "
                         f"least one), got {text!r}")
    if args.request_rate and (len(systems) != 1 or systems[0] not in ("static", "continuous")):
        raise ValueError(f"--systems: a rate sweep (--request-rate) runs one of our engine's policies, "
                         f"'static' or 'continuous', got {text!r}")
    args.systems = ",".join(systems)
    pick_device_dtype(args.device)
    try:
        resolve_model(args.model, need_weights=not args.random_weights)
    except OSError as e:                  # an unreadable folder: a bad --model too
        raise ValueError(str(e)) from None


def run_cli(args) -> int:
    check_args(args)
    if args.suite:
        from .suite import run_suite
        run_suite(args.suite, args.json_dir or "data/results", args.time_budget_s, args.hf_num_requests)
        return 0
    overrides = {k: v for k, v in (("num_requests", args.num_requests), ("cap", args.cap)) if v is not None}
    topic = args.workload
    if args.cap is not None and not args.request_rate:
        # the Anyscale study varies the cap: each cap's run is its own file, named by its workload
        topic = overrides["name"] = f"{args.workload}-cap{args.cap}"
    common = dict(model=args.model, device=args.device, dtype=args.dtype, random_weights=args.random_weights,
                  max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
                  kv_memory_gb=args.kv_memory_gb, workload_overrides=overrides, allow_slow=args.allow_slow,
                  max_cudagraph_capture_size=args.max_cudagraph_capture_size)
    if args.request_rate:
        ms = lambda v: None if v is None else v / 1e3    # noqa: E731
        dev = _device_for_name(args.device)
        path = output_path(args, dev, f"rates-{args.workload}", args.model, default_dir=None)
        from .rate_sweep import run_rate_sweep
        run_rate_sweep(args.request_rate, args.workload, args.systems, json_path=path, arrival=args.arrival,
                       burstiness=args.burstiness, slo_ttft_s=ms(args.slo_ttft_ms), slo_tpot_s=ms(args.slo_tpot_ms),
                       **common)
        return 0
    path = output_path(args, _device_for_name(args.device), topic, args.model, default_dir=None)
    run_bench(args.workload, args.systems.split(","), hf_batch_size=args.hf_batch_size, json_path=path,
              hf_num_requests=args.hf_num_requests, hf_time_limit_s=args.hf_time_limit_s, **common)
    return 0


def _device_for_name(device) -> dict:
    """The device_info of ``--device`` (for the file name, before anything loads)."""
    from ..device import pick_device_dtype
    return device_info(pick_device_dtype(device)[0])


def demo_batching(model, tok, args) -> None:
    """`make demo`, part 2: static vs continuous batching (and HF) on a small Anyscale-style workload."""
    print("Batching on a small Anyscale-style workload (16 requests, 16-token prompts, output "
          "lengths ~ exponential with mean 32 capped at 64, 8 batch slots):")
    run_bench("anyscale-cpu", ["hf-static", "static", "continuous"], model="smollm2-135m",
              max_num_seqs=8, workload_overrides=dict(num_requests=16, cap=64), loaded=model)

