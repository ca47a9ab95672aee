"""``python -m course_lib bench graphs``: decode step time with and without CUDA graphs (Day 14), next
to the weight-bytes floor.

    python -m course_lib bench graphs --model qwen3-0.6b [--json PATH | --json-dir DIR]
                                                          # gpu_<device>_graphs_qwen3-0.6b.json

What "step time" means here: the wall-clock time of ``LLMEngine.step()`` of the real engine
(continuous scheduler, paged KV cache, Triton attention, greedy sampling, random bf16 weights of a
registry shape) once B requests with CONTEXT-token prompts are prefilled, so that every timed step
decodes one token for each of the B sequences: the time between two tokens that a user of the
engine sees. It holds everything on the host (the scheduler's decision and block bookkeeping,
building inputs, the forward pass as one graph replay or ~1,500 eager launches, sampling, appending
tokens, checking stops) and the wait for the GPU. With async scheduling (the engine's default on
CUDA) ``step()`` launches step t and then reads back step t-1's tokens, so host and GPU overlap and
the median step is the steady-state token interval. ``launch_ms`` is the host time inside
``ModelRunner.launch`` alone (inputs, forward launches, sampling launch; no waiting for the GPU): the
CPU cost that graphs remove.

Modes (one engine each): ``graphs`` (CUDA graphs, the engine's default scheduling), ``graphs-sync``
(graphs, async scheduling off: what overlapping the host with the GPU saves), ``eager`` (no graphs).

Floors: ``weight_floor_ms`` = matmul weight bytes (shapes.weight_bytes) / measured copy bandwidth
(every weight read once per step); ``floor_ms`` adds the K/V that the step reads
(B * context * kv_bytes_per_token).
"""
from __future__ import annotations

import gc
import statistics
import time

import torch

from ..harness import guarded, make_report, output_path, write_report
from ..roofline import copy_bandwidth
from ..shapes import model_info

HELP = "the engine's decode step with CUDA graphs (async, sync) and eager, batch 1-256, vs its floor (CUDA)"

BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
QUICK_BATCHES = (1, 8, 64)
MODES = {"graphs": dict(cuda_graphs=True, async_scheduling=None),          # None: the engine's default
         "graphs-sync": dict(cuda_graphs=True, async_scheduling=False),
         "eager": dict(cuda_graphs=False, async_scheduling=None)}
CONTEXT = 512                 # prompt tokens per sequence by default
ACCEPT = dict(model="llama-3.2-1b", batch=1, mode="graphs", max_ratio_to_weight_floor=2.0)


def topic(context: int) -> str:
    """The file-naming topic: ``graphs``, or ``graphs-ctx<N>`` away from the default 512 tokens."""
    return "graphs" if context == CONTEXT else f"graphs-ctx{context}"


def floors_ms(weight_bytes, kv_bytes_per_token, batch, context, gb_per_s) -> dict:
    """Lower bounds of a decode step from bytes alone: weights only, and weights plus the K/V read."""
    per_ms = gb_per_s * 1e6                                   # bytes per millisecond
    kv = batch * context * kv_bytes_per_token
    return dict(weight_floor_ms=weight_bytes / per_ms, floor_ms=(weight_bytes + kv) / per_ms)


def _median(xs) -> float:
    return statistics.median(xs) * 1e3


def _p90(xs) -> float:
    return sorted(xs)[int(0.9 * (len(xs) - 1))] * 1e3


def time_batch(engine, batch: int, context: int, steps: int, warmup: int, seed: int = 0) -> dict:
    """Prefill ``batch`` random prompts of ``context`` tokens, then time ``steps`` pure decode steps.

    The requests are aborted (and a step still in flight drained) afterwards, so the engine can take
    the next batch size."""
    from ...config import SamplingParams
    # None may finish while timed: the first admitted decode through all the prefill steps, too
    # (batch 128 x 512 tokens is 16 steps at a 4096-token budget; recorded runs missed this).
    prefill_steps = -(-batch * context // engine.cfg.max_num_batched_tokens) + 1
    params = SamplingParams(temperature=0, max_tokens=warmup + steps + prefill_steps + 4, ignore_eos=True)
    g = torch.Generator().manual_seed(seed + batch)
    vocab = engine.model.cfg.vocab_size
    ids = [engine.add_request(torch.randint(0, vocab, (context,), generator=g).tolist(), params,
                              output_kind="final_only") for _ in range(batch)]
    runner, launches, steps_s = engine.runner, [], []

    def timed(*args, inner=runner.launch):
        t0 = time.perf_counter()
        out = inner(*args)
        launches.append(time.perf_counter() - t0)
        return out
    try:
        sched = engine.scheduler                          # prefill (mixed with earlier admissions' decodes)
        while sched.waiting or any(s.num_computed_tokens < s.num_prompt_tokens for s in sched.running):
            engine.step()
        for _ in range(warmup):
            engine.step()
        runner.launch = timed
        for _ in range(steps):
            t0 = time.perf_counter()
            engine.step()
            steps_s.append(time.perf_counter() - t0)
            rec = engine.step_log[-1]
            if rec.is_prefill or len(rec.seq_ids) != batch:
                raise RuntimeError(f"step was not a pure decode of {batch} sequences: {rec}")
    finally:
        runner.__dict__.pop("launch", None)                   # the class's method again
        engine.abort_and_drain(ids)
    graphs = runner.graphs
    return dict(step_ms=_median(steps_s), step_ms_p90=_p90(steps_s), launch_ms=_median(launches),
                tokens_per_s=batch / statistics.median(steps_s), context=context + warmup + steps // 2,
                graph_bucket=graphs.bucket(batch) if graphs is not None else None)


def measure(model, batches, context: int, steps: int, warmup: int, mode: str = "graphs",
            log=print) -> list[dict]:
    """One engine in ``mode`` (see MODES) sized for max(batches); one row per batch size, errors recorded."""
    from ...config import EngineConfig
    from ...engine.llm_engine import LLMEngine
    budget = max(16384, context)
    prefill_steps = -(-max(batches) * context // budget) + 1     # as time_batch counts them
    max_len = context + warmup + steps + prefill_steps + 8
    # every sequence's blocks, plus the admission watermark (EngineConfig.watermark, a share of all
    # blocks kept free while others run): without it the last 8k-token prompt of 32 never got in
    blocks = max(batches) * -(-max_len // 16) + 8
    cfg = EngineConfig(max_num_seqs=max(batches), max_num_batched_tokens=budget,
                       num_kv_blocks=int(blocks / (1 - EngineConfig.watermark)) + 1, **MODES[mode])
    engine = LLMEngine(model, None, cfg, max_model_len=max_len)
    flags = dict(mode=mode, cuda_graphs=engine.runner.graphs is not None,
                 async_scheduling=engine.async_scheduling)
    rows = []
    for b in batches:
        row = guarded(dict(batch=b, **flags), lambda: time_batch(engine, b, context, steps, warmup))
        rows.append(row)
        log(f"{mode:>11} batch {b:>3}: " + (row.get("error") or f"{row['step_ms']:.3f} ms/step, "
                                             f"{row['launch_ms']:.3f} ms launching"))
    del engine
    gc.collect()                                          # free this engine's KV pool and graph pools
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return rows


def figures(model: dict, copy: dict, kv_bytes_per_token: int, rows: list[dict], context: int, steps: int,
            warmup: int, quick: bool) -> dict:
    """The report's figures: one row per (mode, batch) with floors and ratios, the acceptance check."""
    points = []
    for r in rows:
        r = dict(r, **floors_ms(model["weight_bytes"], kv_bytes_per_token, r["batch"],
                                r.get("context", context), copy["gb_per_s"]))
        if "step_ms" in r:
            r["ratio_to_weight_floor"] = r["step_ms"] / r["weight_floor_ms"]
            r["floor_fraction"] = r["floor_ms"] / r["step_ms"]    # weights + K/V: long-context decode
        points.append(r)
    return dict(model=model, context=context, steps=steps, warmup=warmup, quick=quick, copy=copy,
                kv_bytes_per_token=kv_bytes_per_token, points=points,
                acceptance=acceptance(model["name"], points))


def acceptance(model_name: str, points) -> dict:
    """The Day 14 target: llama-3.2-1b at batch 1 with graphs within 2x of its weight-bytes floor."""
    hit = [p for p in points if p["batch"] == ACCEPT["batch"] and p.get("mode") == ACCEPT["mode"]
           and "ratio_to_weight_floor" in p]
    ratio = hit[0]["ratio_to_weight_floor"] if hit else None
    applies = model_name == ACCEPT["model"]
    return dict(ACCEPT, applies=applies, ratio_to_weight_floor=ratio,
                ok=(ratio is not None and ratio <= ACCEPT["max_ratio_to_weight_floor"]) if applies else None)


def summary_table(reports: dict):
    """A pandas DataFrame indexed by (model, batch) from {model name: report}: step ms per mode, the
    weight floor, the ratios that matter (eager / graphs, graphs / floor, sync / async) and the host's
    launch ms per mode. Modes that were not run are left out."""
    import pandas as pd
    pts = pd.DataFrame([dict(p, model=m) for m, r in reports.items() for p in r["points"] if "step_ms" in p])
    step = pts.pivot_table(index=["model", "batch"], columns="mode", values="step_ms")
    launch = pts.pivot_table(index=["model", "batch"], columns="mode", values="launch_ms")
    out = step.add_suffix(" (ms)")
    out["weight floor (ms)"] = pts.groupby(["model", "batch"])["weight_floor_ms"].first()
    ratios = {"eager / graphs": ("eager", "graphs"), "graphs-sync / graphs": ("graphs-sync", "graphs")}
    for name, (a, b) in ratios.items():
        if a in step and b in step:
            out[name] = step[a] / step[b]
    if "graphs" in step:
        out["graphs / floor"] = step["graphs"] / out["weight floor (ms)"]
    out = out.join(launch.add_prefix("host launch, ").add_suffix(" (ms)"))
    out.columns.name = None
    return out


def run(model_name="qwen3-0.6b", batches=BATCHES, context=CONTEXT, steps=20, warmup=3, dtype=torch.bfloat16,
        json_path=None, quick=False, fused=True, gemv=True, modes=tuple(MODES), log=print) -> dict:
    """Every mode in ``modes`` on one random-weight model. ``fused``: the Triton kernels of Days 9 and
    14 (``LlamaModel.use_fused_kernels(fused, gemv)``; on, as the engine runs by default on a GPU).
    Writes ``json_path`` after each mode."""
    if not torch.cuda.is_available():
        raise ValueError("bench graphs needs a CUDA GPU: graphs and launch overhead are GPU matters")
    from ...models.loader import load_model
    dev = torch.device("cuda")
    copy = copy_bandwidth()
    model = load_model(model_name, device=dev, dtype=dtype, random_weights=True)
    model.use_fused_kernels(fused, gemv)
    info = model_info(model.cfg, model_name, dtype, True, fused_kernels=fused, gemv=model.lm_head.gemv)
    kvb = model.cfg.kv_bytes_per_token(torch.empty((), dtype=dtype).element_size())
    log(f"{torch.cuda.get_device_name()}: copy {copy['gb_per_s']:.0f} GB/s; {model_name} "
        f"{info['weight_bytes'] / 1e9:.2f} GB of weights: floor {info['weight_bytes'] / copy['gb_per_s'] / 1e6:.3f} "
        f"ms per step")
    rows, report = [], None
    for mode in modes:
        try:
            rows += measure(model, batches, context, steps, warmup, mode, log)
        except Exception as e:                            # noqa: BLE001 - e.g. the engine did not build
            err = f"{type(e).__name__}: {str(e)[:300]}"
            rows += [dict(batch=b, mode=mode, error=err) for b in batches]
            log(f"{mode}: FAILED ({err})")
        report = make_report("graphs", dev, figures(info, copy, kvb, rows, context, steps, warmup, quick))
        if json_path:
            write_report(report, json_path)
    return report


def add_arguments(p) -> None:
    p.add_argument("--model", default="qwen3-0.6b", help="a registry name (random weights of its shape)")
    p.add_argument("--batches", help="comma-separated batch sizes (default 1,2,4,...,256)")
    p.add_argument("--context", type=int, default=CONTEXT, help="prompt tokens per sequence")
    p.add_argument("--steps", type=int, default=20, help="timed decode steps per batch size")
    p.add_argument("--quick", action="store_true", help=f"batches {QUICK_BATCHES}, 5 steps (for tests)")
    p.add_argument("--unfused", action="store_true",
                   help="plain torch ops and cuBLAS instead of the fused Triton kernels (Days 9, 14)")
    p.add_argument("--no-gemv", action="store_true",
                   help="cuBLAS instead of the Triton GEMV kernel at batch 1 (Day 14)")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, from {list(MODES)}")


def run_cli(args) -> int:
    from ...models.registry import KNOWN_MODELS
    from ..harness import device_info
    if args.model not in KNOWN_MODELS:
        raise ValueError(f"--model must be one of {sorted(KNOWN_MODELS)}, got {args.model!r}")
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    if not modes or not set(modes) <= set(MODES):
        raise ValueError(f"--modes must be chosen from {list(MODES)}, got {args.modes!r}")
    try:
        batches = (tuple(int(b) for b in args.batches.split(",")) if args.batches
                   else QUICK_BATCHES if args.quick else BATCHES)
    except ValueError:
        raise ValueError(f"--batches must be comma-separated integers, got {args.batches!r}") from None
    if not torch.cuda.is_available():
        raise ValueError("bench graphs needs a CUDA GPU: graphs and launch overhead are GPU matters")
    path = output_path(args, device_info("cuda"), topic(args.context), args.model)
    report = run(args.model, batches, args.context, 5 if args.quick else args.steps, json_path=path,
                 quick=args.quick, fused=not args.unfused, gemv=not args.no_gemv, modes=modes)
    for p in report["points"]:
        if "step_ms" in p:
            print(f"{p['mode']:>11} batch {p['batch']:>3} at {p['context']} tokens: {p['step_ms']:.3f} ms/step, "
                  f"floor (weights + K/V) {p['floor_ms']:.3f} ms: {100 * p['floor_fraction']:.0f}% of it")
    acc = report["acceptance"]
    if acc["applies"] and any(p["batch"] == ACCEPT["batch"] for p in report["points"]):
        print(f"acceptance: batch 1 with graphs at {acc['ratio_to_weight_floor']} x the weight floor "
              f"(target <= {acc['max_ratio_to_weight_floor']}): {'ok' if acc['ok'] else 'MISSED'}")
    print(f"wrote {path}")
    return 0
