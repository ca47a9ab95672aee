"""The bench plumbing on a tiny workload: every system serves every request, counts only requested
tokens, and the JSON carries the context a number needs (device, versions, model, workload)."""
import json

import pytest

from course_lib.perf.bench import run_bench
from course_lib.perf.metrics import RequestTiming, summarize
from course_lib.perf.workloads import anyscale, make_workload, nanovllm


def test_workloads_are_seeded_and_shaped():
    a, b = anyscale(num_requests=50, cap=64, seed=3), anyscale(num_requests=50, cap=64, seed=3)
    assert [r.max_tokens for r in a.requests] == [r.max_tokens for r in b.requests]
    assert all(len(r.prompt_token_ids) == 512 and 1 <= r.max_tokens <= 64 for r in a.requests)
    n = nanovllm(num_requests=40)
    assert all(100 <= len(r.prompt_token_ids) <= 1024 and 100 <= r.max_tokens <= 1024 for r in n.requests)
    with pytest.raises(ValueError, match="workload must be one of"):
        make_workload("nope", 100)


def test_summarize_by_hand():
    t = [RequestTiming(0.0, 1.0, 3.0, 5), RequestTiming(0.0, 2.0, 4.0, 1)]
    s = summarize(t, wall_time=4.0)
    assert s["output_tok_per_s"] == 6 / 4.0 and s["requests_per_s"] == 0.5
    assert s["ttft_p50_s"] == 1.5 and s["e2e_p99_s"] == pytest.approx(3.99)
    assert s["tpot_p50_s"] == 0.5        # only the 5-token request has a TPOT: (3 - 1) / 4


def test_bench_runs_every_system(tmp_path):
    path = tmp_path / "r.json"
    report = run_bench("nanovllm-cpu", ["hf-static", "static", "continuous"], model="smollm2-135m",
                       random_weights=True, max_num_seqs=2, json_path=str(path), log=lambda *a: None,
                       workload_overrides=dict(num_requests=3, min_len=4, max_len=9))
    saved = json.loads(path.read_text())
    assert saved["results"].keys() == {"hf-static", "static", "continuous"}
    expected = saved["workload"]["output_tokens"]
    for system, r in saved["results"].items():
        assert "error" not in r, (system, r)
        assert r["output_tokens"] == expected, system       # forced lengths, EOS ignored
    assert saved["results"]["hf-static"]["ratio_to_hf_static"] == 1.0
    assert {"device", "versions", "model", "workload", "engine"} <= saved.keys()
    assert report["model"]["random_weights"] is True
