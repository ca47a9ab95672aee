"""An open-loop load generator for the in-process engine (Day 07), and the request-rate sweep.

Open loop: request i arrives at its scheduled time whether or not the engine keeps up. A closed-loop
client (N users, each sending the next request when the last one is answered) slows down exactly when
the server does, so it never builds the queue a real server sees: its latencies leave out the waiting
time the slow periods would have caused ("coordinated omission", Gil Tene). Here the client and the
engine share one thread, so the loop is:

    before every engine step: add every request whose arrival time has passed, with that time as its
                              arrival_time (a request that came in during a long step has already
                              waited: its queueing delay counts);
    engine idle:              sleep until the next arrival;
    after every step:         stamp each token the step returned with the time it came back.

Arrivals (vLLM's ``benchmark_serving`` conventions): the first request at 0, then independent gaps,
either exponential with mean 1/rate ("poisson") or gamma with shape ``burstiness`` and scale
1/(rate * burstiness) ("gamma": mean gap still 1/rate, coefficient of variation 1/sqrt(burstiness);
1 is Poisson, below 1 burstier, above 1 smoother). Gaps are drawn from one seeded numpy Generator, so
for a seed the arrival pattern is the same at every rate, only scaled by 1/rate.

The per-request times (arrival, first scheduled, every token, finish) go through the plain metric
functions of metrics.py; ``rate_sweep`` runs one load per rate on the same engine, drained and
checked clean between rates, and returns a JSON-able dict. ``find_knee`` reads the curve.

Costs: token times are taken when ``step()`` returns, so a token's time includes the host work of its
step (what a client in the same process would see); with async scheduling (CUDA) a token comes back
one step after it was computed, as it would reach a client.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from ..config import SamplingParams, is_int
from .metrics import serving_metrics
from .workloads import Workload

ARRIVALS = ("poisson", "gamma")
KNEE_METHODS = ("slo", "throughput")
# Default SLOs: the limits of MLPerf Inference's Llama-2-70B server scenario (TTFT 2 s, TPOT 200 ms at
# p99). 200 ms per token is 5 tokens/s, about reading speed: slower streams feel stalled, faster ones
# buy a reader nothing. Interactive uses (code completion, agents) want much less; pass your own.
SLO_TTFT_S = 2.0
SLO_TPOT_S = 0.2


def _positive(name: str, value, *, integer: bool = False):
    if integer:
        if not is_int(value) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        return int(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_arrival(arrival: str, burstiness: float) -> float:
    """Validate an arrival process and its burstiness; returns burstiness as a float."""
    if arrival not in ARRIVALS:
        raise ValueError(f"arrival must be one of {ARRIVALS}, got {arrival!r}")
    burstiness = _positive("burstiness", burstiness)
    if arrival == "poisson" and burstiness != 1.0:
        raise ValueError(f"burstiness must be 1.0 for arrival='poisson' (a Poisson process is gamma "
                         f"with shape 1); use arrival='gamma' for burstiness={burstiness!r}")
    return burstiness


def arrival_times(num_requests: int, rate: float, *, arrival: str = "poisson", burstiness: float = 1.0,
                  seed: int = 0) -> np.ndarray:
    """Arrival offsets in seconds from the start of a run: 0 first, then ``num_requests - 1`` gaps."""
    n = _positive("num_requests", num_requests, integer=True)
    rate = _positive("rate", rate)
    burstiness = check_arrival(arrival, burstiness)
    if not is_int(seed):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    rng = np.random.default_rng(seed)
    if arrival == "poisson":
        gaps = rng.exponential(1.0 / rate, size=n - 1)
    else:                                     # mean shape * scale = 1/rate; CV = 1/sqrt(shape)
        gaps = rng.gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=n - 1)
    return np.concatenate([[0.0], np.cumsum(gaps)])


@dataclass
class RequestRecord:
    """One request's life as the load generator saw it (time.perf_counter seconds)."""
    request_id: str
    prompt_len: int
    max_tokens: int
    arrival: float                          # its scheduled arrival (the time it was due, not added)
    first_scheduled: float | None = None    # from the engine: the step that first gave it tokens
    token_times: list[float] = field(default_factory=list)   # when each output token came back
    finish: float | None = None
    finish_reason: str | None = None
    engine_token_times: list[float] = field(default_factory=list)   # the engine's own stamps

    @property
    def finished(self) -> bool:
        return self.finish is not None

    @property
    def completed(self) -> bool:
        """Finished normally with at least one token (what the metrics count, like vLLM's 'success')."""
        return self.finish_reason in ("stop", "length") and bool(self.token_times)


@dataclass
class LoadRun:
    """The records of one run, and its clock: ``start`` is the first arrival, ``end`` the last token."""
    records: list[RequestRecord]
    start: float
    end: float

    @property
    def duration_s(self) -> float:
        return self.end - self.start

    def metrics(self, slo_ttft_s: float = SLO_TTFT_S, slo_tpot_s: float = SLO_TPOT_S) -> dict:
        done = [r for r in self.records if r.completed]
        out = serving_metrics([r.arrival for r in done], [r.token_times for r in done],
                              max(self.duration_s, 1e-9), slo_ttft_s=slo_ttft_s, slo_tpot_s=slo_tpot_s,
                              first_scheduled=[r.first_scheduled for r in done])
        out["failed"] = len(self.records) - len(done)
        return out


def _engine_of(llm):
    from ..engine.llm_engine import LLMEngine
    engine = getattr(llm, "engine", llm)
    if not isinstance(engine, LLMEngine):
        raise TypeError(f"llm must be a course_lib LLM or LLMEngine, got {type(llm).__name__}")
    return engine


def _check_workload(workload) -> Workload:
    if not isinstance(workload, Workload):
        raise TypeError(f"workload must be a course_lib.perf.workloads.Workload, got {type(workload).__name__}")
    if not workload.requests:
        raise ValueError("workload must hold at least one request")
    return workload


def _params(workload: Workload) -> list[SamplingParams]:
    # ignore_eos: every request generates exactly max_tokens, so every rate does the same work
    return [SamplingParams(temperature=0, max_tokens=r.max_tokens, ignore_eos=True) for r in workload.requests]


def check_idle(engine) -> None:
    """An engine a run can start on: no request anywhere, every KV block free."""
    kv = engine.kv_manager
    if engine.has_unfinished_requests() or engine.requests:
        raise RuntimeError(f"the engine still has {len(engine.requests)} request(s): a load run needs an "
                           f"idle engine (finish or abort them first)")
    if kv.num_free_blocks != kv.num_blocks:
        raise RuntimeError(f"KV blocks leaked: {kv.num_free_blocks} of {kv.num_blocks} free on an idle engine")


def _take(outs, records: dict, progress) -> list[str]:
    """Stamp the tokens of one step's delta outputs with the time they came back; close the records
    of the requests that finished (returns their ids)."""
    now, finished = time.perf_counter(), []
    for out in outs:
        rec = records[out.request_id]
        rec.token_times += [now] * len(out.outputs[0].token_ids)   # >1 only if a step yields several
        if out.finished:
            rec.finish, rec.finish_reason = now, out.outputs[0].finish_reason
            rec.first_scheduled = out.metrics.first_scheduled_time
            rec.engine_token_times = list(out.metrics.token_times)
            finished.append(out.request_id)
            if progress is not None:
                progress.update(1)
    return finished


def run_open_loop(llm, workload: Workload, offsets, *, progress=None) -> LoadRun:
    """Serve ``workload`` with request i arriving ``offsets[i]`` seconds after the start (open loop).

    ``progress``: anything with ``update(n)`` (a tqdm bar), told of each finished request. If anything
    raises (an interrupt included), the requests still in the engine are aborted, so it stays usable."""
    engine, workload = _engine_of(llm), _check_workload(workload)
    offsets = [float(x) for x in offsets]
    if len(offsets) != len(workload.requests) or any(b < a for a, b in zip(offsets, offsets[1:])) \
            or not all(math.isfinite(x) and x >= 0 for x in offsets):
        raise ValueError(f"offsets must be {len(workload.requests)} finite, non-decreasing times >= 0 "
                         f"(one per request), got {len(offsets)}")
    params = _params(workload)
    for r, sp in zip(workload.requests, params):      # a request that can never run fails here, not mid-run
        engine.validate(r.prompt_token_ids, sp)
    check_idle(engine)
    start = time.perf_counter()
    records = [RequestRecord(f"load-{i}", len(r.prompt_token_ids), r.max_tokens, start + off)
               for i, (r, off) in enumerate(zip(workload.requests, offsets))]
    by_id = {rec.request_id: rec for rec in records}
    nxt, n = 0, len(records)
    try:
        while nxt < n or engine.has_unfinished_requests():
            now = time.perf_counter()
            while nxt < n and records[nxt].arrival <= now:     # due: in, with the time it was due
                rec, req = records[nxt], workload.requests[nxt]
                engine.add_request(req.prompt_token_ids, params[nxt], request_id=rec.request_id,
                                   arrival_time=rec.arrival, output_kind="delta")
                nxt += 1
            if not engine.has_unfinished_requests():
                time.sleep(max(0.0, records[nxt].arrival - time.perf_counter()))   # idle: wait for the next
                continue
            _take(engine.step(), by_id, progress)
    finally:
        for rec in records[:nxt]:
            if not rec.finished:
                engine.abort_request(rec.request_id)
    end = max((rec.finish for rec in records), default=start)
    return LoadRun(records, start, end)


def run_closed_loop(llm, workload: Workload, concurrency: int, *, progress=None) -> LoadRun:
    """The closed-loop client, for contrast: ``concurrency`` users, each sending its next request the
    moment its last one finished. Arrival = the time it was sent, so a request never waits for a user
    who is slow to send: the queue the server would have built stays invisible."""
    engine, workload = _engine_of(llm), _check_workload(workload)
    concurrency = _positive("concurrency", concurrency, integer=True)
    params = _params(workload)
    for r, sp in zip(workload.requests, params):
        engine.validate(r.prompt_token_ids, sp)
    check_idle(engine)
    start = time.perf_counter()
    records, live, nxt = [], {}, 0
    try:
        while nxt < len(workload.requests) or live:
            while nxt < len(workload.requests) and len(live) < concurrency:
                req, now = workload.requests[nxt], time.perf_counter()
                rec = RequestRecord(f"load-{nxt}", len(req.prompt_token_ids), req.max_tokens, now)
                engine.add_request(req.prompt_token_ids, params[nxt], request_id=rec.request_id,
                                   arrival_time=now, output_kind="delta")
                records.append(rec)
                live[rec.request_id] = rec
                nxt += 1
            for rid in _take(engine.step(), live, progress):
                del live[rid]                      # that user sends its next request before the next step
    finally:
        for rid in list(live):
            engine.abort_request(rid)
    end = max((rec.finish for rec in records), default=start)
    return LoadRun(records, start, end)


def warm_up(llm, workload: Workload) -> None:
    """Some of the workload's requests before any clock starts, so first-call costs (allocator growth;
    on a GPU, kernel compilation and one CUDA graph per batch size) stay out of the first rate's
    TTFT. On CUDA, up to max_num_seqs requests with staggered lengths (2, 3, 4, ... tokens), so the
    decode batch passes through every size once, then every mixed-step graph is captured; on a CPU, whose first-call costs do not depend on
    the batch, two requests of 2 tokens (a notebook's seconds matter there)."""
    engine, workload = _engine_of(llm), _check_workload(workload)
    cuda = engine.model.device.type == "cuda"
    k = min(len(workload.requests), engine.cfg.max_num_seqs if cuda else 2)
    for i, r in enumerate(workload.requests[:k]):
        n = min(2 + i, r.max_tokens) if cuda else min(2, r.max_tokens)    # never past what validate() allowed
        engine.add_request(r.prompt_token_ids, SamplingParams(temperature=0, max_tokens=n, ignore_eos=True),
                           request_id=f"warmup-{i}")
    while engine.has_unfinished_requests():
        engine.step()
    capture_graphs(engine)


def capture_graphs(engine) -> int:
    """Capture, with the engine idle, every mixed-step CUDA graph it may replay (none on a CPU):
    a capture inside a timed run stalls that step by tens of ms (engine/cuda_graphs.py)."""
    mixed = getattr(engine.runner, "mixed_graphs", None)
    return 0 if mixed is None else mixed.capture_all()


def _check_rates(rates) -> list[float]:
    if isinstance(rates, (str, bytes)) or not hasattr(rates, "__iter__"):
        raise ValueError(f"rates must be a list of request rates (requests/s, finite, > 0), got {rates!r}")
    rates = list(rates)
    if not rates:
        raise ValueError("rates must hold at least one request rate (requests/s)")
    bad = [r for r in rates if isinstance(r, bool) or not isinstance(r, (int, float))
           or not math.isfinite(r) or r <= 0]
    if bad:
        raise ValueError(f"rates must be finite numbers > 0 (requests/s), got {bad}")
    return [float(r) for r in rates]


def rate_sweep(llm, workload: Workload, rates, *, arrival: str = "poisson", burstiness: float = 1.0,
               slo_ttft_s: float = SLO_TTFT_S, slo_tpot_s: float = SLO_TPOT_S, seed: int = 0,
               progress: bool = True) -> dict:
    """One open-loop run of ``workload`` per request rate; returns the latency-throughput curve.

    Every rate serves the same requests with the same seeded arrival pattern (scaled by 1/rate) on the
    same engine: warmed up once, then checked idle with every KV block free before each rate (kernels
    and graphs stay warm; a fresh engine would re-allocate the KV pool, and on a GPU get less memory).

    Returns a JSON-able dict: ``arrival``, ``burstiness``, ``seed``, ``slo`` {ttft_s, tpot_s},
    ``percentiles`` (the method), ``workload`` (name, params, sizes), ``engine`` (its config and
    device), and ``points``, one per rate in the order given: ``rate`` (offered, requests/s),
    ``offered_rate`` (what this run's draws really offered: n requests over the span of their
    arrivals; a short run's draws stray far from the nominal rate, ~1/sqrt(n), so plot against this),
    ``num_requests``, ``completed``, ``failed``, ``output_tokens``, ``duration_s`` (first arrival to
    last token), ``request_throughput``, ``output_throughput`` (tokens/s), ``goodput`` (requests/s
    meeting both SLOs), ``slo_attainment`` (their fraction), and {mean, p50, p90, p99} in seconds of
    ``ttft``, ``tpot``, ``itl``, ``e2e``, ``queue``."""
    engine, workload = _engine_of(llm), _check_workload(workload)
    rates = _check_rates(rates)
    burstiness = check_arrival(arrival, burstiness)
    slo_ttft_s, slo_tpot_s = _positive("slo_ttft_s", slo_ttft_s), _positive("slo_tpot_s", slo_tpot_s)
    if not is_int(seed):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if not isinstance(progress, bool):
        raise ValueError(f"progress must be True or False, got {progress!r}")
    for r, sp in zip(workload.requests, _params(workload)):
        engine.validate(r.prompt_token_ids, sp)
    check_idle(engine)
    warm_up(engine, workload)
    n = len(workload.requests)
    points = []
    for rate in rates:
        offsets = arrival_times(n, rate, arrival=arrival, burstiness=burstiness, seed=seed)
        check_idle(engine)
        engine.reset_prefix_cache()          # no prefix cache hits carried from one rate to the next
        engine.step_log.clear()
        bar = _bar(n, rate) if progress else None
        try:
            run = run_open_loop(engine, workload, offsets, progress=bar)
        finally:
            if bar is not None:
                bar.close()
        m = run.metrics(slo_ttft_s, slo_tpot_s)
        span = float(offsets[-1] - offsets[0])
        points.append({"rate": rate, "offered_rate": n / span if span > 0 else None,
                       "num_requests": n, **m})
    check_idle(engine)
    return {"arrival": arrival, "burstiness": burstiness, "seed": seed,
            "slo": {"ttft_s": slo_ttft_s, "tpot_s": slo_tpot_s},
            "percentiles": "linear interpolation between closest ranks (numpy's default, as vLLM)",
            "workload": {"name": workload.name, **workload.params, "num_requests": n,
                         "prompt_tokens": workload.prompt_tokens, "output_tokens": workload.output_tokens},
            "engine": _engine_info(engine), "points": points}


def _bar(total: int, rate: float):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=f"rate {rate:g} req/s", unit="req", mininterval=0.5)


def _engine_info(engine) -> dict:
    cfg, model = engine.cfg, engine.model
    return {"scheduler": cfg.scheduler, "max_num_seqs": cfg.max_num_seqs,
            "max_num_batched_tokens": cfg.max_num_batched_tokens, "block_size": cfg.block_size,
            "num_kv_blocks": engine.kv_manager.num_blocks, "device": str(model.device),
            "dtype": str(model.dtype).replace("torch.", ""), "async_scheduling": engine.async_scheduling}


def find_knee(result: dict, *, by: str = "slo", attainment: float = 0.9, tolerance: float = 0.9) -> dict:
    """Where the latency-throughput curve bends, read from a ``rate_sweep`` result.

    by="slo" (the default): the highest swept rate up to which every rate had at least ``attainment``
    of its requests meet both SLOs (goodput >= attainment x request throughput). This is DistServe's
    "goodput" capacity: the load you can deploy at while users get the latency you promised. A
    fraction of requests, not a p99: the p99 of a 20-request run is nearly its maximum, one outlier.
    by="throughput": the highest rate up to which the achieved request throughput stays within
    ``tolerance`` of the rate this run really offered (``offered_rate``; both count the same n
    requests, so their ratio is the arrival span over the run's duration): the saturation point, past
    which the queue grows for as long as the load lasts. It needs no SLO, but the tail of a short run
    (the last requests finish after the last arrival) pulls it down, so ask for a looser tolerance there.

    Returns {"by", "rate" (None if even the lowest rate misses), "index" (into points), "reason"}."""
    if by not in KNEE_METHODS:
        raise ValueError(f"by must be one of {KNEE_METHODS}, got {by!r}")
    for name, v in (("attainment", attainment), ("tolerance", tolerance)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
            raise ValueError(f"{name} must be a fraction in (0, 1], got {v!r}")
    order = sorted(range(len(result["points"])), key=lambda i: result["points"][i]["rate"])
    knee = None
    for i in order:
        p = result["points"][i]
        if by == "slo":
            ok = p["slo_attainment"] is not None and p["slo_attainment"] >= attainment
        else:
            ok = p["offered_rate"] is not None and p["request_throughput"] >= tolerance * p["offered_rate"]
        if not ok:
            break
        knee = i
    what = (f"{attainment:.0%} of requests within TTFT <= {result['slo']['ttft_s']:g} s and TPOT <= "
            f"{result['slo']['tpot_s']:g} s" if by == "slo"
            else f"achieved request throughput >= {tolerance:.0%} of the offered rate")
    rate = None if knee is None else result["points"][knee]["rate"]
    reason = (f"highest rate with {what} at it and every lower rate" if knee is not None
              else f"even the lowest rate misses: {what}")
    return {"by": by, "rate": rate, "index": knee, "reason": reason}


def sweeps_in(report) -> list[dict]:
    """Every ``rate_sweep`` result inside a loaded JSON report (the dict itself, or nested in an
    envelope such as ``python -m course_lib bench`` writes): dicts that hold "points" and "slo"."""
    found = []
    if isinstance(report, dict):
        if isinstance(report.get("points"), list) and isinstance(report.get("slo"), dict):
            return [report]
        for v in report.values():
            found += sweeps_in(v)
    elif isinstance(report, list):
        for v in report:
            found += sweeps_in(v)
    return found
