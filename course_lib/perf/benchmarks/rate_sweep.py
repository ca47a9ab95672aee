"""``python -m course_lib bench serving --request-rate R1,R2,...``: the latency-throughput curve (Day 07).

Our engine (one policy) serves the workload once per rate, requests arriving open-loop (Poisson, or
gamma with a burstiness), through perf/loadgen.py's ``rate_sweep``; the report ("rate_sweep") holds
the model, workload and engine it ran on, then what rate_sweep returns (one point per rate: throughput,
goodput, TTFT/TPOT/ITL/E2E percentiles).
"""
from __future__ import annotations

import torch

from ...config import EngineConfig
from ..harness import make_report, write_report
from ..shapes import model_info
from ..workloads import make_workload
from .cost import check_cost, cpu_estimate
from .serving import make_llm


def run_rate_sweep(request_rates, workload: str = "anyscale-cpu", system: str = "continuous",
                   model: str = "smollm2-135m", device=None, dtype=None, random_weights: bool = False,
                   max_num_seqs: int = 16, max_num_batched_tokens: int = 4096, kv_memory_gb=None,
                   max_cudagraph_capture_size: int = EngineConfig.max_cudagraph_capture_size, workload_overrides: dict | None = None, arrival: str = "poisson", burstiness: float = 1.0,
                   slo_ttft_s: float | None = None, slo_tpot_s: float | None = None, seed: int = 0,
                   json_path=None, log=print, show_progress: bool = True, allow_slow: bool = False) -> dict:
    """Open-loop arrivals at each rate through our engine (perf/loadgen.py's rate_sweep); the report's
    figures are what rate_sweep returns, after the model, workload and engine they were measured on."""
    from ...models.loader import load_model
    from ..device import pick_device_dtype
    from ..loadgen import rate_sweep          # lazily: loadgen is its own module (Day 07)
    if system not in ("static", "continuous"):
        raise ValueError(f"a rate sweep runs our engine: --systems must be 'static' or 'continuous', got {system!r}")
    dev, auto_dtype = pick_device_dtype(device)
    dt = getattr(torch, dtype) if isinstance(dtype, str) else (dtype or auto_dtype)
    ours = load_model(model, device=dev, dtype=dt, random_weights=random_weights)
    wl = make_workload(workload, ours.cfg.vocab_size, **(workload_overrides or {}))
    log(f"rate sweep, {system}: {len(wl.requests)} requests of {wl.name} at {', '.join(map(str, request_rates))} "
        f"req/s ({arrival} arrivals); model {model} on {ours.device}")
    if ours.device.type == "cpu":
        check_cost(cpu_estimate(ours, wl, [system], {}, max_num_seqs, request_rates), workload, allow_slow, log)
    llm = make_llm(ours, system, wl, max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                   kv_memory_gb=kv_memory_gb, max_cudagraph_capture_size=max_cudagraph_capture_size)
    slo = {k: v for k, v in (("slo_ttft_s", slo_ttft_s), ("slo_tpot_s", slo_tpot_s)) if v is not None}
    figures = rate_sweep(llm, wl, list(request_rates), arrival=arrival, burstiness=burstiness, seed=seed,
                         progress=show_progress, **slo)        # no SLO given: loadgen's defaults
    context = dict(model=model_info(ours.cfg, model, ours.dtype, random_weights),
                   workload=dict(name=wl.name, **wl.params), system=system,
                   engine=dict(max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                               max_cudagraph_capture_size=max_cudagraph_capture_size))
    report = make_report("rate_sweep", ours.device, {**context, **figures})
    if json_path:
        write_report(report, json_path)
        log(f"wrote {json_path}")
    return report
