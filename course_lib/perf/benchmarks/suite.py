"""``python -m course_lib bench suite gpu|cpu``: a fixed set of serving runs in one process.

One serving report per model, named by the harness's rule (``<device>_<workload>_<model>.json``);
data/results/ holds the recorded ones, ``python -m course_lib report`` turns them into the README's
table, and data/results/README.md keeps the history of the recorded runs.

``gpu``: the nanovllm workload (256 requests) on the llama-3.2-1b and qwen3-0.6b shapes, random bf16
weights; ``continuous`` on every request, the HF peers on the first requests only (peers.py says why
that estimates the full run). Time is bounded by one budget: the padded-batch peers (hf-static, the
baseline of every ratio, and hf-static-compile) stop at its end, keeping whole batches; hf-cb gets a
fixed time limit of its own (25 s) and reports its throughput until then (every streamed token, the
unfinished requests' included), marked partial, so no peer leaves its row empty and the suite ends
within the budget plus one hf-cb limit plus start-up. Issue 13 asks for the whole suite in 9 minutes
on a fresh machine: the eager hf-static batches (~85 s and ~134 s) and hf-static-compile's cold
compiles are most of it (data/results/README.md has the accounting).
"""
from __future__ import annotations

import gc
import math
import time

import torch

from ..harness import device_info, report_path
from .serving import SYSTEMS, run_bench

HELP = "a fixed set of serving runs: 'gpu' (nanovllm on two real shapes, every peer) or 'cpu' (recorded)"
SUITES = {
    "gpu": dict(device="cuda", workload="nanovllm", models=("llama-3.2-1b", "qwen3-0.6b"),
                systems=("continuous", "hf-static", "hf-static-compile", "hf-cb"), random_weights=True,
                max_num_seqs=256, max_num_batched_tokens=16384, hf_batch_size=128,
                hf_num_requests={"hf-static": 128, "hf-static-compile": 128, "hf-cb": 32},
                hf_time_limit_s={"hf-cb": 25.0}, budget_s=470),
    "cpu": dict(device="cpu", workload="anyscale-cpu", models=("smollm2-135m",),
                systems=("hf-static", "static", "continuous"), max_num_seqs=32),
}


def run_suite(name: str, json_dir: str = "data/results", budget_s: float | None = None,
              hf_num_requests: int | dict | None = None, log=print, models=None, systems=None,
              show_progress: bool = True) -> list[dict]:
    """Run suite ``name``; returns its reports (each also written to ``json_dir``). ``budget_s``,
    ``hf_num_requests``, ``models`` and ``systems`` replace the suite's own."""
    if name not in SUITES:
        raise ValueError(f"suite must be one of {sorted(SUITES)}, got {name!r}")
    suite = dict(SUITES[name])
    device, default_budget, default_models = suite.pop("device"), suite.pop("budget_s", None), suite.pop("models")
    models = tuple(models or default_models)
    if systems:
        bad = [s for s in systems if s not in SYSTEMS]
        if bad:
            raise ValueError(f"systems must be chosen from {list(SYSTEMS)}, got {bad}")
        suite["systems"] = tuple(systems)
    budget_s = budget_s or default_budget
    if hf_num_requests is not None:
        suite["hf_num_requests"] = hf_num_requests
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"suite {name!r} needs a CUDA device; this machine has none")
    start = time.perf_counter()
    deadline = start + budget_s if budget_s else None
    guards = {"hf-static": deadline, "hf-static-compile": deadline} if deadline else None
    dev = device_info(device)
    reports, rates = [], None
    for model in models:
        path = report_path(json_dir, dev, suite["workload"], model)
        report = run_bench(model=model, device=device, json_path=str(path), deadline=guards, rates=rates,
                           log=log, show_progress=show_progress, **suite)
        rates = {k: report["roofline"][k] for k in ("copy_gb_per_s", "matmul_tflops", "matmul_dtype",
                                                    "measure_s")}   # measured once per process
        reports.append(report)
        gc.collect()                      # this model's weights, before the next one loads
    log(f"suite {name}: {len(models)} model(s) in {time.perf_counter() - start:.0f} s")
    return reports


def add_arguments(p) -> None:
    from .serving import parse_hf_num_requests
    p.add_argument("name", choices=sorted(SUITES), help="gpu: " + SUITES["gpu"]["workload"] + " on "
                   + ", ".join(SUITES["gpu"]["models"]) + "; cpu: the recorded anyscale-cpu run")
    p.add_argument("--json-dir", default="data/results", help="where the reports go (default data/results)")
    p.add_argument("--time-budget-s", type=float, default=None,
                   help=f"seconds for the padded-batch peers (gpu default {SUITES['gpu']['budget_s']}); "
                        f"hf-cb has its own limit ({SUITES['gpu']['hf_time_limit_s']['hf-cb']:.0f} s per model)")
    p.add_argument("--hf-num-requests", type=parse_hf_num_requests, default=None, metavar="N|SYS=N,...",
                   help="the HF peers' samples (gpu default: " + ", ".join(
                       f"{k}={v}" for k, v in SUITES["gpu"]["hf_num_requests"].items()) + ")")
    p.add_argument("--models", default=None, help="comma-separated registry names instead of the suite's")
    p.add_argument("--systems", default=None, help=f"comma-separated, from {list(SYSTEMS)}, instead of the suite's")


def run_cli(args) -> int:
    from .serving import per_hf_system
    b = args.time_budget_s
    if b is not None and not (b > 0 and math.isfinite(b)):
        raise ValueError(f"--time-budget-s must be a positive, finite number of seconds, got {b!r}")
    try:
        per_hf_system(args.hf_num_requests)
    except ValueError as e:
        raise ValueError(f"--hf-num-requests: {e}") from None
    split = lambda text: [x.strip() for x in text.split(",") if x.strip()] if text else None   # noqa: E731
    run_suite(args.name, args.json_dir, b, args.hf_num_requests, models=split(args.models),
              systems=split(args.systems))
    return 0
