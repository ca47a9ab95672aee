"""``python -m course_lib bench --suite NAME``: a fixed set of bench runs in one process.

One JSON per model, named ``<cpu | gpu_<device slug>>_<workload>_<model>.json`` (data/results/ holds
the recorded ones; ``python -m course_lib report`` turns them into the README's table).

The gpu suite runs the nanovllm workload (256 requests) on the qwen3-0.6b and llama-3.2-1b shapes with
random bf16 weights: ``continuous`` on every request, the HF peers on the first requests only (peers.py
says why that estimates the full run). hf-static gets 128 requests, one padded batch of
128, as in the recorded 256-request run (two batches, 228 s on an H200 for qwen3-0.6b); hf-cb gets 32,
what its share of the 440 s budget allows: on an H200 it ran ~280-380 tok/s; with 64 requests
qwen3-0.6b's hf-cb did not fit (after qwen3's hf-static took 135 s), and with 48 neither model's
fitted on a run where the HF peers went ~10% slower (41 and 28 of 48 requests done). llama-3.2-1b runs first: its
peers are quicker, which leaves qwen3-0.6b the larger share. Each model gets an equal share of the budget left when it starts;
its hf-cb stops at the end of that share, its hf-static (the baseline of every ratio) only at the end
of the budget, so one slow peer cannot push the suite past 8 minutes (440 s plus start-up).
"""
from __future__ import annotations

import gc
import re
import time
from pathlib import Path

import torch

from .bench import run_bench

SUITES = {
    "gpu": dict(device="cuda", workload="nanovllm", models=("llama-3.2-1b", "qwen3-0.6b"),
                systems=("continuous", "hf-static", "hf-cb"), random_weights=True, max_num_seqs=256,
                max_num_batched_tokens=16384, hf_batch_size=128,
                hf_num_requests={"hf-static": 128, "hf-cb": 32}, budget_s=440),
    "cpu": dict(device="cpu", workload="anyscale-cpu", models=("smollm2-135m",),
                systems=("hf-static", "static", "continuous"), max_num_seqs=32),
}


def device_slug(gpu_name: str) -> str:
    """A short file-name tag from torch.cuda.get_device_name(): "NVIDIA H100 80GB HBM3" -> "h100"."""
    name = gpu_name.replace("NVIDIA", "")
    m = re.search(r"\b([A-Z]+\d+[A-Za-z]*)\b", name)
    return m.group(1).lower() if m else re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def run_suite(name: str, json_dir: str = "data/results", budget_s: float | None = None,
              hf_num_requests: int | dict | None = None, log=print) -> list[dict]:
    """Run suite ``name``; returns its reports (each also written to ``json_dir``). ``budget_s`` and
    ``hf_num_requests`` replace the suite's own."""
    if name not in SUITES:
        raise ValueError(f"suite must be one of {sorted(SUITES)}, got {name!r}")
    suite = dict(SUITES[name])
    models, device, default_budget = suite.pop("models"), suite.pop("device"), suite.pop("budget_s", None)
    budget_s = budget_s or default_budget
    if hf_num_requests is not None:
        suite["hf_num_requests"] = hf_num_requests
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"suite {name!r} needs a CUDA device; this machine has none")
    start = time.perf_counter()
    deadline = start + budget_s if budget_s else None
    prefix = "cpu" if device == "cpu" else f"gpu_{device_slug(torch.cuda.get_device_name(device))}"
    reports, rates = [], None
    for i, model in enumerate(models):
        now = time.perf_counter()
        share_end = now + (deadline - now) / (len(models) - i) if deadline else None
        path = Path(json_dir) / f"{prefix}_{suite['workload']}_{model}.json"
        guards = {"hf-static": deadline, "hf-cb": share_end} if deadline else None
        report = run_bench(model=model, device=device, json_path=str(path), deadline=guards,
                           rates=rates, log=log, **suite)
        rates = {k: report["roofline"][k] for k in ("copy_gb_per_s", "matmul_tflops", "matmul_dtype",
                                                    "measure_s")}   # measured once per process
        reports.append(report)
        gc.collect()                      # this model's weights, before the next one loads
    log(f"suite {name}: {len(models)} model(s) in {time.perf_counter() - start:.0f} s")
    return reports
