"""Latency and throughput summaries of one benchmark run (all times in seconds)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class RequestTiming:
    """One request as measured by any system: arrival, first token, finish, and tokens produced."""
    arrival: float
    first_token: float | None
    finish: float
    output_tokens: int


def percentile(values, q: float) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.percentile(vals, q)) if vals else None


def summarize(timings: list[RequestTiming], wall_time: float) -> dict:
    """Output tokens/s over the whole run, requests/s, and p50/p99 of TTFT, TPOT and end-to-end."""
    e2e = [t.finish - t.arrival for t in timings]
    ttft = [None if t.first_token is None else t.first_token - t.arrival for t in timings]
    tpot = [None if t.first_token is None or t.output_tokens < 2
            else (t.finish - t.first_token) / (t.output_tokens - 1) for t in timings]
    out_tokens = sum(t.output_tokens for t in timings)
    summary = dict(wall_time_s=wall_time, output_tokens=out_tokens,
                   output_tok_per_s=out_tokens / wall_time, requests_per_s=len(timings) / wall_time)
    for name, vals in (("ttft", ttft), ("tpot", tpot), ("e2e", e2e)):
        summary[f"{name}_p50_s"] = percentile(vals, 50)
        summary[f"{name}_p99_s"] = percentile(vals, 99)
    return summary
