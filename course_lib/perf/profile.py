"""``python -m course_lib profile``: where the time of one engine step goes (Day 08).

    python -m course_lib profile --model smollm2-135m --batch 4 --steps 5
    python -m course_lib profile --model llama-3.2-1b --random-weights --device cuda --batch 1,64 \
        --prompt-len 512 --steps 20 --cuda-graphs both --json data/results/gpu_h200_profile_llama-3.2-1b.json

``profile_engine`` builds an engine, fills a batch of B requests of P-token prompts and warms it up on a
first batch of the same shape (Triton compiles and CUDA graphs capture there, outside the trace). Then
one torch.profiler session (CPU activity, plus CUDA on a GPU) records, with the engine's phase ranges
switched on (course_lib/engine/profiling.py), each ``engine.step()`` inside a range of its own:

    prefill_step         one step that prefills all B prompts (run synchronously: it reads its own tokens)
    pipeline_fill_step   async scheduling only: the first decode step, which has no previous step to read
    decode_step x N      N steps that each decode one token for every sequence

The Chrome trace is written to a file (chrome://tracing or https://ui.perfetto.dev opens it) and read
back: every figure comes from its complete events (perf/trace.py says which), the same ones a learner
reads in the Day 08 notebook. The profiler adds microseconds per recorded operator, so N more steps run
after the session with the ranges off: ``step_ms_unprofiled`` (their median) is the real step time,
``profiler_overhead`` the profiled median over it.

Zero cost when off: without ``profiling.enable()`` the engine's ``phase()`` returns one shared no-op
context manager and never calls torch.profiler.record_function (tests/test_profile.py checks it).
"""
from __future__ import annotations

import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from ..engine import profiling
from .timers import sync
from .trace import (busy_us, load_trace, nest, phase_breakdown, phase_times, self_times, step_ranges,
                    summarize_steps)

# The trace readers are re-exported: a notebook reads a profile and its trace through this one module.
__all__ = ["profile_engine", "format_report", "write_json", "add_profile_parser", "cmd_profile", "busy_us",
           "load_trace", "nest", "phase_breakdown", "phase_times", "self_times", "step_ranges",
           "summarize_steps"]

STEP_RANGES = ("prefill_step", "decode_step")
FILL_RANGE = "pipeline_fill_step"
DTYPES = ("auto", "float32", "bfloat16", "float16")


# ---------------------------------------------------------------------------------------------------
# Running the engine under the profiler

def _check_count(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _add_batch(engine, batch: int, prompt_len: int, max_tokens: int, gen: torch.Generator, kind: str):
    from ..config import SamplingParams
    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
    vocab = engine.model.cfg.vocab_size
    return [engine.add_request(torch.randint(0, vocab, (prompt_len,), generator=gen).tolist(), params,
                               output_kind=kind) for _ in range(batch)]


def _prefilled(engine, batch: int) -> bool:
    s = engine.scheduler
    return (not s.waiting and len(s.running) == batch
            and all(q.num_computed_tokens >= q.num_prompt_tokens for q in s.running))


def _decode(engine, batch: int, name: str | None = None) -> None:
    if name is None:
        engine.step()
    else:
        with torch.profiler.record_function(name):
            engine.step()
    if len(engine.scheduler.running) != batch:
        raise RuntimeError(f"a decode step must keep all {batch} sequences running, "
                           f"{len(engine.scheduler.running)} are")


def build_engine(model, batch: int, prompt_len: int, steps: int, warmup_steps: int, *, device=None,
                 dtype=None, random_weights=False, seed=0, **engine_args):
    """An LLMEngine sized for one batch: B slots, a token budget that prefills B prompts in one step, and
    KV blocks for B sequences of the run's length (the warm-up batch is freed before the measured one)."""
    from ..engine.llm import LLM
    max_len = prompt_len + warmup_steps + 2 * steps + 8
    kw = dict(max_num_seqs=batch, max_num_batched_tokens=max(batch * prompt_len, 256),
              num_kv_blocks=batch * -(-max_len // 16) + 16, max_model_len=max_len)
    kw.update(engine_args)
    llm = LLM(model, device=device, dtype=dtype or "auto", random_weights=random_weights, seed=seed, **kw)
    return llm.engine


def profile_engine(model="smollm2-135m", batch: int = 1, prompt_len: int = 32, steps: int = 5, *,
                   device=None, dtype=None, random_weights: bool = False, trace_path=None,
                   warmup_steps: int = 2, top: int = 10, seed: int = 0, output_kind: str = "delta",
                   **engine_args) -> dict:
    """Profile one prefill step and ``steps`` decode steps of a batch of ``batch`` requests.

    ``model``: a registry name, folder or hub id (``random_weights`` builds its shape with random
    weights), or a loaded LlamaModel (``device``/``dtype`` are then the model's). ``trace_path``: where
    the Chrome trace goes (default: a file in the temp folder). ``output_kind``: the requests' output
    kind ("delta", a streaming server's, detokenizes every step when there is a tokenizer).
    Other keyword arguments go to the engine (``cuda_graphs=False``, ``async_scheduling=False``, ...).
    Returns a JSON-able dict (module docstring); ``format_report`` prints it."""
    for name, value, low in (("batch", batch, 1), ("prompt_len", prompt_len, 1), ("steps", steps, 1),
                             ("warmup_steps", warmup_steps, 0), ("top", top, 1)):
        _check_count(name, value, low)
    engine = build_engine(model, batch, prompt_len, steps, warmup_steps, device=device, dtype=dtype,
                          random_weights=random_weights, seed=seed, **engine_args)
    dev, gen = engine.model.device, torch.Generator().manual_seed(seed)
    ids = _add_batch(engine, batch, prompt_len, warmup_steps + 2, gen, output_kind)   # warm-up batch
    try:
        while not _prefilled(engine, batch):
            engine.step()
        for _ in range(warmup_steps):
            _decode(engine, batch)
    finally:
        engine.abort_and_drain(ids)
    if trace_path is None:
        mode = "_graphs" if engine.runner.graphs is not None else ""
        trace_path = Path(tempfile.gettempdir()) / f"course_lib_profile_b{batch}{mode}.trace.json"
    ids = _add_batch(engine, batch, prompt_len, 2 * steps + 4, gen, output_kind)
    was_on, was_async = profiling.enabled(), engine.async_scheduling
    acts = [torch.profiler.ProfilerActivity.CPU]
    if dev.type == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    try:
        profiling.enable(True)
        with torch.profiler.profile(activities=acts) as prof:
            torch.zeros(1, device=dev)       # the session's first event pays its set-up, outside any step
            engine.async_scheduling = False  # the prefill step reads back its own tokens
            with torch.profiler.record_function("prefill_step"):
                engine.step()
            engine.async_scheduling = was_async
            if not _prefilled(engine, batch):
                raise RuntimeError(f"one step did not prefill all {batch} prompts of {prompt_len} tokens")
            if was_async:
                _decode(engine, batch, FILL_RANGE)
            for _ in range(steps):
                _decode(engine, batch, "decode_step")
            sync(dev)
        profiling.enable(False)
        unprofiled = []
        for _ in range(steps):
            t0 = time.perf_counter()
            _decode(engine, batch)
            unprofiled.append(time.perf_counter() - t0)
    finally:
        profiling.enable(was_on)
        engine.async_scheduling = was_async
        engine.abort_and_drain(ids)
    Path(trace_path).parent.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(str(trace_path))
    events = load_trace(trace_path)
    decode = summarize_steps(events, "decode_step", batch, top=top)
    return dict(
        model=_model_info(model, engine, random_weights), device=_device_name(dev), device_type=dev.type,
        batch=batch, prompt_len=prompt_len, steps=steps, warmup_steps=warmup_steps,
        async_scheduling=was_async, cuda_graphs=engine.runner.graphs is not None,
        attention=engine.runner.decode_fn.__name__, trace=str(trace_path),
        step_ms_unprofiled=statistics.median(unprofiled) * 1e3,
        profiler_overhead=decode["step_ms_median"] / (statistics.median(unprofiled) * 1e3),
        decode=decode, prefill=summarize_steps(events, "prefill_step", batch * prompt_len, top=top))


def _model_info(model, engine, random_weights: bool) -> dict:
    cfg = engine.model.cfg
    name = model if isinstance(model, str) else getattr(engine.model, "source", None) or "a loaded model"
    return dict(name=str(name), dtype=str(engine.model.dtype).removeprefix("torch."), layers=cfg.num_layers,
                params=cfg.num_params, random_weights=bool(random_weights or engine.tokenizer is None))


def _device_name(dev: torch.device) -> str:
    from .harness import device_info
    return device_info(dev)["name"]


# ---------------------------------------------------------------------------------------------------
# The table

def format_report(r: dict) -> str:
    """The breakdown ``profile`` prints: phases, ops, CPU vs GPU, top operators, for decode and prefill."""
    m = r["model"]
    lines = [f"{m['name']}{' (random weights)' if m['random_weights'] else ''}, {m['dtype']}, on {r['device']}: "
             f"batch {r['batch']}, {r['prompt_len']}-token prompts, {r['steps']} decode steps "
             f"(async scheduling {'on' if r['async_scheduling'] else 'off'}, CUDA graphs "
             f"{'on' if r['cuda_graphs'] else 'off'}, attention {r['attention']})",
             f"trace: {r['trace']} (open in https://ui.perfetto.dev or chrome://tracing)"]
    for kind in ("decode", "prefill"):
        lines += ["", *_section(kind, r[kind], r)]
    return "\n".join(lines)


def _section(kind: str, s: dict, r: dict) -> list[str]:
    head = (f"{kind} step: {s['step_ms']:.2f} ms per step (mean of {s['steps']}, profiled"
            + (f"; {r['step_ms_unprofiled']:.2f} ms median without the profiler" if kind == "decode" else "")
            + f"), {s['tokens_per_step']} tokens per step, {s['ms_per_token']:.3f} ms per token")
    out = [head, f"  {'phase':<16}{'ms/step':>10}{'share':>8}{'in ops ms':>11}"]
    for p, v in s["phases"].items():
        out.append(f"  {p:<16}{v['ms']:>10.3f}{v['share']:>8.1%}{v['ops_ms']:>11.3f}")
    out.append(f"  {'(other)':<16}{s['other_ms']:>10.3f}{s['other_share']:>8.1%}")
    out.append(f"  operator calls per step: {s['ops_per_step']:,.0f} ({s['top_level_ops_per_step']:,.0f} "
               f"dispatched from Python); host time outside any operator: {s['outside_ops_ms']:.3f} ms "
               f"({s['outside_ops_share']:.1%})")
    if s["device_ms"] is None:
        out.append("  CPU vs GPU: on a CPU the device is the host: every millisecond above is host time "
                   "(run with --device cuda to split host from GPU)")
    else:
        out.append(f"  GPU busy {s['device_ms']:.3f} ms per step of {s['step_ms']:.3f} ms wall: idle "
                   f"{s['gpu_idle_share']:.1%} (host overhead + launch latency); {s['launches_per_step']:,.0f} "
                   f"launches and {s['kernels_per_step']:,.0f} kernels per step")
    out.append("  top operators by self time (ms per step): " + ", ".join(
        f"{o['name']} {o['self_ms']:.3f} ({o['share']:.0%}, {o['calls_per_step']:.0f} calls)"
        for o in s["top_ops"][:6]))
    if s["top_kernels"]:
        out.append("  top kernels (GPU ms per step): " + ", ".join(
            f"{k['name'][:40]} {k['ms']:.3f} ({k['calls_per_step']:.0f})" for k in s["top_kernels"][:5]))
    return out


# ---------------------------------------------------------------------------------------------------
# The command line

def parse_batches(text: str) -> list[int]:
    """``4`` or ``1,8,64`` -> [4] or [1, 8, 64]; anything else raises ValueError naming --batch."""
    try:
        out = [int(x) for x in str(text).split(",")]
    except ValueError:
        out = []
    if not out or any(b < 1 for b in out):
        raise ValueError(f"--batch must be a positive integer or a comma-separated list of them, got {text!r}")
    return out


def add_profile_parser(sub) -> None:
    """The ``profile`` sub-command's flags (registered by course_lib/__main__.py)."""
    p = sub.add_parser("profile", help="profile engine steps: Chrome trace + time per phase, CPU vs GPU, top ops")
    p.add_argument("--model", default="smollm2-135m", help="registry name, folder or hub id")
    p.add_argument("--batch", default="1", help="requests decoding together; 1,64 profiles each batch in turn")
    p.add_argument("--prompt-len", type=int, default=32, help="tokens per prompt")
    p.add_argument("--steps", type=int, default=5,
                   help="decode steps profiled (and timed again without the profiler)")
    p.add_argument("--warmup-steps", type=int, default=2, help="decode steps of the untraced warm-up batch")
    p.add_argument("--top", type=int, default=10, help="operators and kernels listed")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if present)")
    p.add_argument("--dtype", choices=DTYPES, default=None,
                   help="default: float32 on CPU; on CUDA bfloat16 (compute capability >= 8) else float16")
    p.add_argument("--random-weights", action="store_true",
                   help="build the model's shape with random weights (speed work; nothing downloaded)")
    p.add_argument("--cuda-graphs", choices=("on", "off", "both"), default="on",
                   help="CUDA graphs for decode steps; off decodes eagerly (Day 14's before); both profiles "
                        "each batch both ways (a CPU has no graphs: one run)")
    p.add_argument("--trace", default=None,
                   help="Chrome trace file (default: in the temp folder); with several batches _b<B> is added")
    p.add_argument("--json", default=None, help="write the reports here (one JSON file, every batch)")
    p.set_defaults(func=cmd_profile)


def _trace_for(path: str | None, batch: int, several: bool, mode: str = "") -> str | None:
    """``--trace`` for one run: PATH itself, or PATH with _b<batch> (and _<mode>) before its suffix."""
    if path is None or not (several or mode):
        return path
    p = Path(path)
    tail = (f"_b{batch}" if several else "") + (f"_{mode}" if mode else "")
    return str(p.with_name(f"{p.stem}{tail}{p.suffix or '.json'}"))


def check_profile_args(args) -> list[int]:
    """The flags, checked before anything loads; ValueError names the flag."""
    from ..models.registry import resolve_model
    from .device import pick_device_dtype
    batches = parse_batches(args.batch)
    for flag, value, low in (("--prompt-len", args.prompt_len, 1), ("--steps", args.steps, 1),
                             ("--warmup-steps", args.warmup_steps, 0), ("--top", args.top, 1)):
        if value < low:
            raise ValueError(f"{flag} must be an integer >= {low}, got {value}")
    for flag, check in (("--device", lambda: pick_device_dtype(args.device)),
                        ("--model", lambda: resolve_model(args.model, need_weights=not args.random_weights))):
        try:
            check()
        except (ValueError, OSError) as e:
            raise ValueError(f"{flag}: {e}") from None
    return batches


def cmd_profile(args) -> int:
    try:
        batches = check_profile_args(args)
    except (ValueError, OSError) as e:         # a bad flag value: one line and exit code 2
        print(f"error: {e}", file=sys.stderr)
        return 2
    from ..models.loader import load_model
    from .device import pick_device_dtype
    dev, auto = pick_device_dtype(args.device)
    dtype = auto if args.dtype in (None, "auto") else getattr(torch, args.dtype)
    model = load_model(args.model, device=dev, dtype=dtype, random_weights=args.random_weights)
    modes = {"on": [True], "off": [False], "both": [True, False]}[args.cuda_graphs]
    graphs = modes if dev.type == "cuda" else [False]              # a CPU has no graphs: one run
    runs = []
    for g in graphs:
        for b in batches:
            mode = "" if len(graphs) == 1 else "graphs" if g else "eager"
            r = profile_engine(model, b, args.prompt_len, args.steps, warmup_steps=args.warmup_steps,
                               top=args.top, random_weights=args.random_weights, cuda_graphs=g,
                               trace_path=_trace_for(args.trace, b, len(batches) > 1, mode))
            r["model"]["name"] = args.model
            runs.append(r)
            print(format_report(r) + "\n", flush=True)
            gc.collect()                       # free this run's KV pool and graph pools before the next
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    if args.json:
        write_json(runs, args.json, command_line(args))
        print(f"wrote {args.json}")
    return 0


def command_line(args) -> str:
    """The command that reproduces a run, every flag spelled out (stored in the JSON file)."""
    flags = [f"--model {args.model}", f"--batch {args.batch}", f"--prompt-len {args.prompt_len}",
             f"--steps {args.steps}", f"--warmup-steps {args.warmup_steps}"]
    flags += [f"--{k} {v}" for k, v in (("device", args.device), ("dtype", args.dtype)) if v]
    flags += ["--random-weights"] if args.random_weights else []
    flags += [f"--cuda-graphs {args.cuda_graphs}"] if args.cuda_graphs != "on" else []
    return "python -m course_lib profile " + " ".join(flags) + (f" --json {args.json}" if args.json else "")


def write_json(runs: list[dict], path, command: str | None = None) -> dict:
    """One report for a run of the command (the harness's envelope: what ran, where, with which
    versions), then the model and each run's profile."""
    from .harness import make_report, write_report
    dev = torch.device("cuda" if runs[0]["device_type"] == "cuda" else "cpu")
    report = make_report("profile", dev, dict(model=runs[0]["model"], runs=runs), command=command)
    write_report(report, path)
    return report
