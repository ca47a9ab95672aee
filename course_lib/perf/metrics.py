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


# ---- Day 07: serving metrics from raw timestamps (vLLM benchmark_serving's definitions) -----------
#
#   arrival      first scheduled     t_0       t_1       t_2          t_{n-1} = finish
#      |---- queue -----|--- prefill ---|   itl   |   itl   |  ...  |
#      |<------------ TTFT ------------>|<------ (n-1) x TPOT ------>|
#      |<---------------------------- E2E -------------------------->|
#
# t_k is when output token k reached the client. TTFT = t0 - arrival; ITL = every gap t_{k+1} - t_k
# (pooled over all requests: a long request contributes many gaps); TPOT = (t_{n-1} - t0) / (n - 1),
# one mean per request, undefined for a 1-token request; E2E = t_{n-1} - arrival.

def request_metrics(arrival: float, token_times, first_scheduled: float | None = None) -> dict:
    """TTFT, TPOT, ITLs, E2E and queueing delay of one request from its raw times (seconds).

    ``token_times``: when each output token arrived (non-decreasing, at least one). TPOT is None for a
    1-token request (vLLM leaves it out of the TPOT summary); ``queue`` is None without
    ``first_scheduled``."""
    t = [float(x) for x in token_times]
    if not t:
        raise ValueError("token_times must hold at least one time (a request with no token has no TTFT)")
    n = len(t)
    return {"ttft": t[0] - arrival,
            "tpot": (t[-1] - t[0]) / (n - 1) if n > 1 else None,
            "itl": [b - a for a, b in zip(t, t[1:])],
            "e2e": t[-1] - arrival,
            "queue": None if first_scheduled is None else first_scheduled - arrival}


def latency_summary(values) -> dict:
    """mean, p50, p90, p99 of ``values`` (None entries skipped; all None when nothing is left).

    Percentiles are numpy's default ("linear", Hyndman & Fan type 7, what vLLM's benchmark reports):
    sort the n values x_0 <= ... <= x_{n-1}; for p in [0, 100] let h = (n - 1) p / 100; the p-th
    percentile is x_floor(h) + (h - floor(h)) (x_floor(h)+1 - x_floor(h)). So p50 of [1, 2, 3, 4] is 2.5
    and p99 of 20 values sits 81% of the way from the second largest to the largest."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"mean": None, "p50": None, "p90": None, "p99": None}
    return {"mean": float(np.mean(vals)), "p50": percentile(vals, 50), "p90": percentile(vals, 90),
            "p99": percentile(vals, 99)}


def goodput(ttfts, tpots, duration_s: float, slo_ttft_s: float, slo_tpot_s: float) -> float:
    """Requests per second that met *both* SLOs (vLLM's ``--goodput ttft:..,tpot:..``).

    A request is good when ttft <= slo_ttft_s and tpot <= slo_tpot_s (at the limit counts as met); a
    1-token request (tpot None) counts as tpot 0, as in vLLM. Divided by the run's duration, so it
    is a rate, comparable with the request throughput (goodput <= throughput always)."""
    if not duration_s > 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s!r}")
    return num_good(ttfts, tpots, slo_ttft_s, slo_tpot_s) / duration_s


def num_good(ttfts, tpots, slo_ttft_s: float, slo_tpot_s: float) -> int:
    """How many requests met both SLOs (see ``goodput``)."""
    return sum(1 for f, p in zip(ttfts, tpots, strict=True)
               if f <= slo_ttft_s and (0.0 if p is None else p) <= slo_tpot_s)


def serving_metrics(arrivals, token_times, duration_s: float, *, slo_ttft_s: float, slo_tpot_s: float,
                    first_scheduled=None) -> dict:
    """One load run's figures from its completed requests' raw times (what a rate-sweep point holds).

    ``arrivals[i]``, ``token_times[i]`` (and ``first_scheduled[i]``): request i. Throughputs divide by
    ``duration_s`` (the run: first arrival to last token). ITL is pooled over requests (every gap
    counts once), TPOT is one value per request of 2+ tokens."""
    if len(arrivals) != len(token_times):
        raise ValueError(f"arrivals and token_times must have one entry per request, got "
                         f"{len(arrivals)} and {len(token_times)}")
    sched = [None] * len(arrivals) if first_scheduled is None else list(first_scheduled)
    per = [request_metrics(a, t, s) for a, t, s in zip(arrivals, token_times, sched)]
    ttft, tpot = [m["ttft"] for m in per], [m["tpot"] for m in per]
    out_tokens = sum(len(t) for t in token_times)
    return {"completed": len(per), "output_tokens": out_tokens, "duration_s": duration_s,
            "request_throughput": len(per) / duration_s, "output_throughput": out_tokens / duration_s,
            "goodput": goodput(ttft, tpot, duration_s, slo_ttft_s, slo_tpot_s),
            "slo_attainment": num_good(ttft, tpot, slo_ttft_s, slo_tpot_s) / len(per) if per else None,
            "ttft": latency_summary(ttft), "tpot": latency_summary(tpot),
            "itl": latency_summary([g for m in per for g in m["itl"]]),
            "e2e": latency_summary(m["e2e"] for m in per), "queue": latency_summary(m["queue"] for m in per)}
