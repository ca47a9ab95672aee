"""The Day 07 load generator and serving metrics (course_lib/perf/loadgen.py, perf/metrics.py).

- Arrivals: Poisson gaps average 1/rate, gamma burstiness sets the coefficient of variation, a seed
  fixes the times and the pattern only scales with the rate.
- Metric functions on hand-built timestamps, with exact expected values (TTFT, TPOT without the first
  token, pooled ITL, percentiles as numpy's linear method, goodput with both SLOs, at-the-limit met).
- The sweep end to end on a tiny random model: every request finishes, TTFT <= E2E, one ITL per token
  after the first, no KV block leaked, the JSON shape; open loop really is open (arrivals keep their
  schedule while the engine is busy); bad inputs raise naming the field.
"""
import json
import math
import time

import numpy as np
import pytest

from course_lib.config import ModelConfig
from course_lib.engine.llm import LLM
from course_lib.models.llama import LlamaModel
from course_lib.models.loader import init_random_
from course_lib.perf import loadgen
from course_lib.perf.loadgen import arrival_times, find_knee, rate_sweep, run_closed_loop, run_open_loop
from course_lib.perf.metrics import goodput, latency_summary, request_metrics, serving_metrics
from course_lib.perf.workloads import BenchRequest, Workload, make_workload

VOCAB = 101


# ---- arrivals -----------------------------------------------------------------------------------

def test_poisson_mean_gap_is_one_over_rate():
    # 20,000 exponential gaps: the standard error of their mean is 1/(rate sqrt(n)) = 0.7% of it, so
    # 3% is over 4 standard errors (and the seed fixes the draw: this never flakes)
    t = arrival_times(20_001, 4.0, seed=0)
    gaps = np.diff(t)
    assert t[0] == 0.0 and (gaps >= 0).all()
    assert abs(gaps.mean() - 0.25) < 0.03 * 0.25
    assert abs(gaps.std() / gaps.mean() - 1.0) < 0.03          # exponential: CV 1


@pytest.mark.parametrize("burstiness", [0.25, 1.0, 4.0])
def test_gamma_burstiness_sets_the_coefficient_of_variation(burstiness):
    gaps = np.diff(arrival_times(20_001, 2.0, arrival="gamma", burstiness=burstiness, seed=1))
    assert abs(gaps.mean() - 0.5) < 0.05 * 0.5                 # the rate is unchanged
    cv = gaps.std() / gaps.mean()
    assert abs(cv - 1 / math.sqrt(burstiness)) < 0.05 / math.sqrt(burstiness), cv


def test_burstier_means_more_variable():
    cvs = [np.std(g) / np.mean(g) for g in
           (np.diff(arrival_times(5001, 1.0, arrival="gamma", burstiness=b, seed=2)) for b in (0.3, 1.0, 3.0))]
    assert cvs[0] > 1.4 > cvs[1] > 0.8 > cvs[2], cvs


def test_same_seed_same_times_and_the_pattern_scales_with_rate():
    a, b = arrival_times(50, 3.0, seed=7), arrival_times(50, 3.0, seed=7)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, arrival_times(50, 3.0, seed=8))
    np.testing.assert_allclose(arrival_times(50, 6.0, seed=7), a / 2, rtol=1e-12)
    g = arrival_times(50, 1.0, arrival="gamma", burstiness=0.5, seed=7)
    np.testing.assert_allclose(arrival_times(50, 4.0, arrival="gamma", burstiness=0.5, seed=7), g / 4, rtol=1e-12)
    assert len(arrival_times(1, 5.0)) == 1


# ---- metric functions on hand-built times -------------------------------------------------------

def test_request_metrics_by_hand():
    # arrives at 10, scheduled at 10.5, tokens at 11, 11.25, 11.75, 12
    m = request_metrics(10.0, [11.0, 11.25, 11.75, 12.0], first_scheduled=10.5)
    assert m["ttft"] == 1.0 and m["e2e"] == 2.0 and m["queue"] == 0.5
    assert m["itl"] == [0.25, 0.5, 0.25]
    assert m["tpot"] == pytest.approx(1.0 / 3)         # (12 - 11) / 3: the first token is not in it
    one = request_metrics(0.0, [0.5])
    assert one["tpot"] is None and one["itl"] == [] and one["ttft"] == one["e2e"] == 0.5 and one["queue"] is None
    with pytest.raises(ValueError, match="token_times"):
        request_metrics(0.0, [])


def test_latency_summary_uses_linear_percentiles():
    s = latency_summary([4.0, 1.0, 3.0, 2.0])
    assert s == {"mean": 2.5, "p50": 2.5, "p90": pytest.approx(3.7), "p99": pytest.approx(3.97)}
    s = latency_summary(list(range(1, 101)))              # h = 99 * 0.99 = 98.01 -> 99 + 0.01
    assert s["p99"] == pytest.approx(99.01) and s["p50"] == 50.5 and s["p90"] == pytest.approx(90.1)
    assert latency_summary([None, 5.0]) == {"mean": 5.0, "p50": 5.0, "p90": 5.0, "p99": 5.0}
    assert latency_summary([]) == {"mean": None, "p50": None, "p90": None, "p99": None}


def test_goodput_needs_both_slos_and_counts_the_limit_as_met():
    ttft = [0.5, 0.5, 3.0, 1.0, 0.25]
    tpot = [0.1, 0.3, 0.1, None, 0.2]       # good: 0 (both), not 1 (tpot), not 2 (ttft), 3 (1 token), 4 (at the limits)
    assert goodput(ttft, tpot, 2.0, slo_ttft_s=1.0, slo_tpot_s=0.2) == 3 / 2.0
    assert goodput(ttft, tpot, 2.0, slo_ttft_s=10.0, slo_tpot_s=10.0) == 5 / 2.0
    assert goodput(ttft, tpot, 2.0, slo_ttft_s=0.1, slo_tpot_s=10.0) == 0.0
    with pytest.raises(ValueError, match="duration_s"):
        goodput(ttft, tpot, 0.0, 1.0, 1.0)


def test_serving_metrics_pools_itl_over_requests():
    # request A: 5 tokens at 1-ms gaps; B: 2 tokens 100 ms apart. Pooled: 5 gaps, 4 of 1 ms.
    arrivals = [0.0, 0.0]
    times = [[0.1, 0.101, 0.102, 0.103, 0.104], [0.2, 0.3]]
    m = serving_metrics(arrivals, times, 0.5, slo_ttft_s=0.15, slo_tpot_s=0.05)
    assert m["itl"]["p50"] == pytest.approx(0.001)                  # per-request means would give 0.0505
    assert m["itl"]["mean"] == pytest.approx((0.004 + 0.1) / 5)
    assert m["tpot"]["mean"] == pytest.approx((0.001 + 0.1) / 2)
    assert m["completed"] == 2 and m["output_tokens"] == 7
    assert m["request_throughput"] == 4.0 and m["output_throughput"] == 14.0
    assert m["goodput"] == 2.0 and m["slo_attainment"] == 0.5        # B misses both
    assert m["queue"]["p50"] is None
    with pytest.raises(ValueError, match="one entry per request"):
        serving_metrics([0.0], times, 1.0, slo_ttft_s=1, slo_tpot_s=1)


# ---- end to end on a tiny random model ----------------------------------------------------------

@pytest.fixture(scope="module")
def llm():
    cfg = ModelConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                      num_kv_heads=2, head_dim=8, max_position_embeddings=128)
    model = LlamaModel(cfg)
    init_random_(model, 0)
    return LLM(model.eval(), block_size=4, num_kv_blocks=64, max_num_seqs=4, attention_backend="torch",
               random_weights=True)


def workload(n=6, seed=0):
    return make_workload("nanovllm-cpu", VOCAB, num_requests=n, min_len=3, max_len=9, seed=seed)


def test_sweep_end_to_end(llm):
    wl = workload()
    kv = llm.engine.kv_manager
    res = rate_sweep(llm, wl, [50.0, 400.0], slo_ttft_s=0.5, slo_tpot_s=0.5, progress=False)
    json.dumps(res)                                                     # plain JSON
    assert kv.num_free_blocks == kv.num_blocks and not llm.engine.requests   # no leak
    assert res["arrival"] == "poisson" and res["burstiness"] == 1.0 and res["slo"] == {"ttft_s": 0.5, "tpot_s": 0.5}
    assert res["workload"]["name"] == "nanovllm-cpu" and res["workload"]["num_requests"] == 6
    assert res["workload"]["output_tokens"] == wl.output_tokens
    assert [p["rate"] for p in res["points"]] == [50.0, 400.0]
    for p in res["points"]:
        assert p["completed"] == 6 and p["failed"] == 0 and p["output_tokens"] == wl.output_tokens
        assert p["request_throughput"] == pytest.approx(6 / p["duration_s"])
        span = arrival_times(6, p["rate"], seed=0)[-1]
        assert p["offered_rate"] == pytest.approx(6 / span)             # what the draws really offered
        assert p["request_throughput"] <= p["offered_rate"]             # the run lasts at least the span
        assert 0 <= p["goodput"] <= p["request_throughput"]
        for k in ("ttft", "tpot", "itl", "e2e", "queue"):
            s = p[k]
            assert set(s) == {"mean", "p50", "p90", "p99"} and 0 <= s["p50"] <= s["p90"] <= s["p99"], (k, s)
        assert p["ttft"]["p99"] <= p["e2e"]["p99"] and p["queue"]["p50"] <= p["ttft"]["p50"]
    assert find_knee(res)["by"] == "slo"
    assert loadgen.sweeps_in({"name": "bench", "runs": [{"x": 1}, {"sweep": res}]}) == [res]


def test_warm_up_captures_the_mixed_graphs_after_its_requests(llm, monkeypatch):
    """A GPU engine's mixed-step graphs are all captured in the warm-up, with the engine idle: a
    capture inside the first rate's run made its queueing delay 33 ms against 5 ms at 3x the rate
    (notebook 07 on an H200)."""
    calls = []
    fake = type("Graphs", (), {"bucket": lambda self, num_seqs, num_tokens: None,      # steps run eagerly
                               "capture_all": lambda self: calls.append(llm.engine.has_unfinished_requests())})
    monkeypatch.setattr(llm.engine.runner, "mixed_graphs", fake())
    loadgen.warm_up(llm, workload())
    assert calls == [False]                            # once, after the warm-up requests drained


def test_open_loop_records_every_token(llm):
    wl = workload(n=8, seed=3)
    offsets = arrival_times(8, 200.0, seed=0)
    run = run_open_loop(llm, wl, offsets)
    kv = llm.engine.kv_manager
    assert kv.num_free_blocks == kv.num_blocks
    for rec, req, off in zip(run.records, wl.requests, offsets):
        assert rec.finish_reason == "length" and len(rec.token_times) == req.max_tokens
        assert rec.arrival == pytest.approx(run.start + off)            # its schedule, not when it was added
        m = request_metrics(rec.arrival, rec.token_times, rec.first_scheduled)
        assert len(m["itl"]) == req.max_tokens - 1
        assert 0 <= m["queue"] <= m["ttft"] <= m["e2e"]
        assert rec.finish == rec.token_times[-1]
        # the client sees a token after the engine stamped it, and in the same order
        assert all(c >= e for c, e in zip(rec.token_times, rec.engine_token_times))
        assert len(rec.engine_token_times) == req.max_tokens
    assert run.end == max(r.finish for r in run.records) and run.duration_s > 0


def test_open_loop_does_not_wait_for_the_engine(llm, monkeypatch):
    """Make every step slow (20 ms): arrivals 1 ms apart must still get their scheduled times, so the
    later ones queue. A closed loop with concurrency 1 instead sends each request only when the last
    is done: no queueing at all, the coordinated omission of a closed-loop client."""
    wl = Workload("w", [BenchRequest([1, 2, 3], 3) for _ in range(6)])
    engine = llm.engine
    real_step = engine.step

    def slow_step():
        time.sleep(0.02)
        return real_step()

    monkeypatch.setattr(engine, "step", slow_step)
    run = run_open_loop(llm, wl, [0.001 * i for i in range(6)])
    m = run.metrics(slo_ttft_s=1.0, slo_tpot_s=1.0)
    # max_num_seqs 4: the last two wait for a slot, 3 slow steps (> 60 ms) behind their arrival
    assert m["queue"]["p99"] > 0.06, m["queue"]
    closed = run_closed_loop(llm, wl, 1)
    waits = [rec.first_scheduled - rec.arrival for rec in closed.records]
    assert max(waits) < 0.6 * m["queue"]["p99"], waits                 # scheduled in the next step
    kv = engine.kv_manager
    assert kv.num_free_blocks == kv.num_blocks


def test_an_interrupted_run_leaves_the_engine_clean(llm, monkeypatch):
    engine = llm.engine
    real_step, calls = engine.step, []

    def failing_step():
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_step()

    monkeypatch.setattr(engine, "step", failing_step)
    with pytest.raises(KeyboardInterrupt):
        run_open_loop(llm, workload(), [0.0] * 6)
    monkeypatch.undo()
    kv = engine.kv_manager
    assert not engine.has_unfinished_requests() and kv.num_free_blocks == kv.num_blocks
    assert rate_sweep(llm, workload(n=2), [100.0], progress=False)["points"][0]["completed"] == 2


def test_find_knee():
    def point(rate, attain, thr, offered=None):
        return {"rate": rate, "slo_attainment": attain, "request_throughput": thr, "offered_rate": offered or rate}
    res = {"slo": {"ttft_s": 1.0, "tpot_s": 0.1},
           "points": [point(4, 0.5, 3.0), point(1, 1.0, 1.0), point(2, 0.95, 1.9), point(3, 0.95, 2.0)]}
    assert find_knee(res)["rate"] == 3 and find_knee(res)["index"] == 3
    assert find_knee(res, attainment=1.0)["rate"] == 1
    assert find_knee(res, by="throughput")["rate"] == 2                    # 2.0 < 0.9 x 3
    assert find_knee(res, by="throughput", tolerance=0.6)["rate"] == 4
    res["points"][1]["slo_attainment"] = 0.2                               # the lowest rate misses
    k = find_knee(res)
    assert k["rate"] is None and k["index"] is None and "lowest" in k["reason"]


# ---- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, field", [
    (dict(rates=[]), "rates"), (dict(rates=[1.0, 0.0]), "rates"), (dict(rates=[float("inf")]), "rates"),
    (dict(rates=[-2]), "rates"), (dict(rates="1,2"), "rates"), (dict(rates=[True]), "rates"),
    (dict(arrival="uniform"), "arrival"), (dict(arrival="gamma", burstiness=0), "burstiness"),
    (dict(arrival="gamma", burstiness=float("nan")), "burstiness"),
    (dict(burstiness=0.5), "burstiness"),                     # poisson is burstiness 1
    (dict(slo_ttft_s=0), "slo_ttft_s"), (dict(slo_tpot_s=-1), "slo_tpot_s"),
    (dict(seed=1.5), "seed"), (dict(progress="yes"), "progress"),
])
def test_bad_sweep_arguments_raise_naming_the_field(llm, kwargs, field):
    args = dict(rates=[10.0], progress=False) | kwargs
    with pytest.raises(ValueError, match=field):
        rate_sweep(llm, workload(n=2), args.pop("rates"), **args)
    assert not llm.engine.requests


def test_bad_inputs_elsewhere(llm):
    with pytest.raises(TypeError, match="llm"):
        rate_sweep("smollm2", workload(n=2), [1.0])
    with pytest.raises(TypeError, match="workload"):
        rate_sweep(llm, [[1, 2, 3]], [1.0])
    with pytest.raises(ValueError, match="workload"):
        rate_sweep(llm, Workload("empty", []), [1.0])
    with pytest.raises(ValueError, match="max_model_len"):                # never fits: fails before running
        rate_sweep(llm, Workload("long", [BenchRequest([1] * 100, 100)]), [1.0], progress=False)
    with pytest.raises(ValueError, match="offsets"):
        run_open_loop(llm, workload(n=2), [0.5, 0.1])
    with pytest.raises(ValueError, match="rate"):
        arrival_times(5, 0.0)
    with pytest.raises(ValueError, match="num_requests"):
        arrival_times(0, 1.0)
    with pytest.raises(ValueError, match="concurrency"):
        run_closed_loop(llm, workload(n=2), 0)
    with pytest.raises(ValueError, match="by"):
        find_knee({"points": [], "slo": {}}, by="p99")
    assert loadgen.ARRIVALS == ("poisson", "gamma")
