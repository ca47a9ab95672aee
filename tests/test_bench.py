"""The serving bench on a tiny workload: every system serves every request, counts only requested
tokens, and the report carries the context a number needs (device, versions, model, workload,
roofline). The workload floor against schedules worked out by hand; the HF peers' time guards (hf-cb
reports a partial run, never an empty row), hf-static-compile's compiled path against the eager one;
what a CPU run will cost; the rate sweep's flags; the suite's and report's command lines, and the
README's performance section against data/results/ (stale -> this file fails)."""
import json
import re
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from course_lib.__main__ import main
from course_lib.config import ModelConfig
from course_lib.models.registry import KNOWN_MODELS
from course_lib.perf import peers, workloads
from course_lib.perf.benchmarks import cost, serving
from course_lib.perf.benchmarks.serving import parse_hf_num_requests, run_bench
from course_lib.perf.floor import workload_floor
from course_lib.perf.metrics import RequestTiming, summarize
from course_lib.perf.report import END, START, load_reports, run_report
from course_lib.perf.workloads import BenchRequest, Workload, anyscale, make_workload, nanovllm

ROOT = Path(__file__).resolve().parents[1]
# vocab V=10, hidden d=4, MLP f=8, L=1, H=2, KVH=1, D=2: P_mm = 184 weights (tests/test_perf.py),
# K/V 2*1*1*2*2 = 8 bytes per token in 2-byte dtypes, 4*L*H*D = 16 attention FLOPs per (query, key).
TINY = ModelConfig(vocab_size=10, hidden_size=4, intermediate_size=8, num_layers=1, num_heads=2,
                   num_kv_heads=1, head_dim=2)
W = 184 * 2                      # weight bytes read per step


def test_workloads_are_seeded_and_shaped():
    a, b = anyscale(num_requests=50, cap=64, seed=3), anyscale(num_requests=50, cap=64, seed=3)
    assert [r.max_tokens for r in a.requests] == [r.max_tokens for r in b.requests]
    assert all(len(r.prompt_token_ids) == 512 and 1 <= r.max_tokens <= 64 for r in a.requests)
    n = nanovllm(num_requests=40)
    assert all(100 <= len(r.prompt_token_ids) <= 1024 and 100 <= r.max_tokens <= 1024 for r in n.requests)
    head = n.head(10)
    assert head.requests == n.requests[:10] and head.params["num_requests"] == 10
    assert head.lengths == [(len(r.prompt_token_ids), r.max_tokens) for r in n.requests[:10]]
    with pytest.raises(ValueError, match="workload must be one of"):
        make_workload("nope", 100)


def test_summarize_by_hand():
    t = [RequestTiming(0.0, 1.0, 3.0, 5), RequestTiming(0.0, 2.0, 4.0, 1)]
    s = summarize(t, wall_time=4.0)
    assert s["output_tok_per_s"] == 6 / 4.0 and s["requests_per_s"] == 0.5
    assert s["ttft_p50_s"] == 1.5 and s["e2e_p99_s"] == pytest.approx(3.99)
    assert s["tpot_p50_s"] == 0.5        # only the 5-token request has a TPOT: (3 - 1) / 4


# ---- the workload floor ------------------------------------------------------------------------------
def test_floor_of_one_request_is_the_docstring_example():
    # step 1 prefills 3 tokens: 368 + 3*8 = 392 bytes, 2*184*3 + 16*(1+2+3) = 1200 FLOPs;
    # step 2 decodes at position 3: 368 + 4*8 = 400 bytes, 2*184 + 16*4 = 432 FLOPs.
    f = workload_floor(TINY, [(3, 2)], dtype_bytes=2, bandwidth=100, matmul_rate=1000, max_num_seqs=4)
    assert (f.steps, f.weight_bytes, f.kv_bytes, f.flops) == (2, 2 * W, 56, 1632)
    assert f.floor_s == pytest.approx(3.92 + 4.00) and f.compute_bound_steps == 0


def test_floor_counts_one_weight_read_per_step_whatever_the_slots():
    # A = (prompt 2, 3 outputs) attends over 2, 3, 4 tokens; B = (4, 1) attends over 4: 13 K/V tokens.
    # FLOPs: A 2*184*2 + 16*3, then 2*184 + 16*3 and 2*184 + 16*4; B 2*184*4 + 16*10.
    flops = (736 + 48) + (368 + 48) + (368 + 64) + (1472 + 160)
    one = workload_floor(TINY, [(2, 3), (4, 1)], 2, bandwidth=1e9, matmul_rate=1e12, max_num_seqs=1)
    two = workload_floor(TINY, [(2, 3), (4, 1)], 2, bandwidth=1e9, matmul_rate=1e12, max_num_seqs=2)
    assert (one.steps, one.weight_bytes, one.kv_bytes, one.flops) == (4, 4 * W, 13 * 8, flops)
    assert (two.steps, two.weight_bytes, two.kv_bytes, two.flops) == (3, 3 * W, 13 * 8, flops)
    assert two.floor_s == pytest.approx((3 * W + 13 * 8) / 1e9)      # memory-bound: bytes / bandwidth


def test_floor_admits_into_a_slot_the_step_after_it_frees():
    # 2 slots: step 1 prefills R1 (done) and R2; step 2 decodes R2 (attends 2) and prefills R3 (done);
    # step 3 decodes R2 (attends 3). K/V tokens 1+1, 2+1, 3.
    f = workload_floor(TINY, [(1, 1), (1, 3), (1, 1)], 2, 1e9, 1e12, max_num_seqs=2)
    assert (f.steps, f.kv_bytes, f.weight_bytes) == (3, 8 * 8, 3 * W)


def test_floor_when_compute_sets_the_pace():
    f = workload_floor(TINY, [(3, 2)], 2, bandwidth=1e30, matmul_rate=1000, max_num_seqs=1)
    assert f.compute_bound_steps == f.steps == 2
    assert f.floor_s == pytest.approx(1.632) == pytest.approx(f.compute_bound_s)
    with pytest.raises(ValueError, match="max_num_seqs"):
        workload_floor(TINY, [(3, 2)], 2, 1.0, 1.0, max_num_seqs=0)
    with pytest.raises(ValueError, match="requests"):
        workload_floor(TINY, [(0, 2)], 2, 1.0, 1.0, max_num_seqs=1)


# ---- the bench run -----------------------------------------------------------------------------------
def test_bench_runs_every_system(tmp_path):
    path = tmp_path / "r.json"
    report = run_bench("nanovllm-cpu", ["hf-static", "static", "continuous"], model="smollm2-135m",
                       random_weights=True, max_num_seqs=2, json_path=str(path), log=lambda *a: None,
                       workload_overrides=dict(num_requests=3, min_len=4, max_len=9),
                       hf_num_requests={"hf-static": 2}, show_progress=False)
    saved = json.loads(path.read_text())
    assert saved["benchmark"] == "serving" and saved["device"]["type"] == "cpu" and saved["command"] is None
    assert saved["results"].keys() == {"hf-static", "static", "continuous"}
    expected = saved["workload"]["output_tokens"]
    for system, r in saved["results"].items():
        assert "error" not in r, (system, r)
        assert r["floor_fraction"] == pytest.approx(r["floor_s"] / r["wall_time_s"])
    for system in ("static", "continuous"):
        r = saved["results"][system]
        assert r["output_tokens"] == expected and r["num_requests"] == 3, system   # EOS ignored
        assert r["floor_s"] == saved["roofline"]["floor_s"]
    hf = saved["results"]["hf-static"]                  # the first 2 of 3 requests: one batch of 2
    assert (hf["num_requests"], hf["sample_of"]) == (2, 3)
    assert saved["engine"]["hf_num_requests"] == {"hf-static": 2}
    sizes = make_workload("nanovllm-cpu", 49152, num_requests=3, min_len=4, max_len=9).lengths
    assert hf["output_tokens"] == sum(o for _, o in sizes[:2])
    assert hf["floor_s"] < saved["roofline"]["floor_s"] and hf["ratio_to_hf_static"] == 1.0
    roof = saved["roofline"]
    cfg = ModelConfig.from_hf(KNOWN_MODELS["smollm2-135m"][0])
    floor = workload_floor(cfg, sizes, 4, roof["copy_gb_per_s"] * 1e9, roof["matmul_tflops"] * 1e12, 2)
    assert roof["copy_gb_per_s"] > 0 and roof["matmul_tflops"] > 0 and roof["matmul_dtype"] == "float32"
    assert (roof["steps"], roof["kv_bytes"], roof["max_num_seqs"]) == (floor.steps, floor.kv_bytes, 2)
    assert roof["bytes"] == roof["weight_bytes"] + roof["kv_bytes"]
    assert {"device", "versions", "model", "workload", "engine"} <= saved.keys()
    assert report["model"]["random_weights"] is True


TINY_HF = dict(model_type="llama", vocab_size=256, hidden_size=32, intermediate_size=64,
               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
               max_position_embeddings=8192)


@pytest.fixture(scope="module")
def tiny_hf():
    return peers.build_hf_model(TINY_HF, "cpu", torch.float32)


def test_hf_static_guard_keeps_whole_batches(tiny_hf, monkeypatch):
    wl = make_workload("nanovllm-cpu", 256, num_requests=6, min_len=4, max_len=12)
    timings, _ = peers.run_hf_static(tiny_hf, wl, 2, deadline=time.perf_counter() + 600)
    assert [t.output_tokens for t in timings] == [r.max_tokens for r in wl.requests]
    with pytest.raises(TimeoutError, match="first batch"):
        peers.run_hf_static(tiny_hf, wl, 2, deadline=time.perf_counter() - 1)
    made = iter([False, True])                  # the guard lets batch 1 finish and cuts batch 2

    class CutSecond:
        def __init__(self, deadline):
            self.cut = next(made)

        def __call__(self, input_ids, scores, **kw):
            return torch.full((input_ids.shape[0],), self.cut)
    monkeypatch.setattr(peers, "_StopAt", CutSecond)
    timings, wall = peers.run_hf_static(tiny_hf, wl, 2, deadline=time.perf_counter() + 600)
    assert [t.output_tokens for t in timings] == [r.max_tokens for r in wl.requests[:2]] and wall > 0


class FakeResult:
    def __init__(self, rid, tokens, finished=True):
        self.request_id, self.generated_tokens, self.timestamps, self.error = rid, [7] * tokens, [0.0], None
        self.finished = finished

    def is_finished(self):
        return self.finished


class FakeManager:                             # transformers' manager, reduced to what run_hf_cb calls
    def __init__(self, finishing=()):
        self.added, self.cancelled, self.hard_stopped, self.finishing = [], [], False, list(finishing)

    def add_request(self, ids, request_id, **kw):
        self.added.append(request_id)

    def get_result(self, timeout=None):
        if self.finishing:
            return self.finishing.pop(0)
        time.sleep(min(timeout, 0.01))
        return None

    def is_running(self):
        return True

    def cancel_request(self, request_id):
        self.cancelled.append(request_id)

    def stop(self, block=True, timeout=None, hard_stop=False):
        self.hard_stopped = hard_stop


def fake_cb_model(mgr):
    class Model:
        @contextmanager
        def continuous_batching_context_manager(self, **kw):
            yield mgr
    return Model()


def test_hf_cb_guard_cancels_what_is_left():
    wl = make_workload("nanovllm-cpu", 256, num_requests=3, min_len=4, max_len=12)
    mgr = FakeManager()
    with pytest.raises(TimeoutError, match="none of 3 requests finished"):
        peers.run_hf_cb(fake_cb_model(mgr), wl, deadline=time.perf_counter() + 0.05)
    assert mgr.cancelled == mgr.added == ["0", "1", "2"] and mgr.hard_stopped


def test_hf_cb_guard_reports_what_finished_as_partial():
    wl = make_workload("nanovllm-cpu", 256, num_requests=3, min_len=4, max_len=12)
    # streamed: request 0 is seen at 1 token, then finishes; request 1 has 4 tokens when the guard passes
    mgr = FakeManager([FakeResult("0", 1, finished=False), FakeResult("1", 2, finished=False),
                       FakeResult("2", 5), FakeResult("1", 4, finished=False), FakeResult("0", 3)])
    res = peers.run_hf_cb(fake_cb_model(mgr), wl, deadline=time.perf_counter() + 0.2)
    assert mgr.cancelled == ["1"] and res.served == [0, 2]
    assert [t.output_tokens for t in res.timings] == [3, 5]
    p = res.figures["partial"]
    assert (p["finished"], p["submitted"]) == (2, 3) and p["guard_s"] == pytest.approx(res.wall_s)
    assert p["unfinished_tokens"] == 4, "the unfinished request's latest count, the finished ones' dropped"
    row = serving.system_row(res, 3, 1.0)
    assert row["output_tokens"] == 3 + 5 + 4 and row["output_tok_per_s"] == pytest.approx(12 / res.wall_s)
    assert 0.15 < res.wall_s < 5, "the run ends at the guard, not when the last request would"


@pytest.fixture
def tiny_engine_model():
    from course_lib.models.llama import LlamaModel
    from course_lib.models.loader import init_random_
    cfg = ModelConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                      num_kv_heads=2, head_dim=8, max_position_embeddings=8192)
    model = LlamaModel(cfg)
    init_random_(model, 0)
    return model.eval()


RATES = dict(copy_gb_per_s=10.0, matmul_tflops=0.1, matmul_dtype="float32", measure_s=0.0)


def test_hf_cb_cut_by_its_guard_is_a_partial_row_not_a_failure(tiny_hf, tiny_engine_model, monkeypatch, tmp_path):
    """A real (tiny) transformers continuous batching run whose time guard passes while one long
    request runs: the three short ones finished, so the row reports them, marked partial, and the
    README table says so."""
    reqs = [BenchRequest([1, 2, 3, 4], 2)] * 3 + [BenchRequest([5, 6, 7], 6000)]
    monkeypatch.setitem(workloads.WORKLOADS, "short-and-long", lambda vocab, **kw: Workload("short-and-long", reqs,
                                                                                            dict(num_requests=4)))
    monkeypatch.setattr(serving, "build_peer", lambda *a: tiny_hf)
    path = tmp_path / "results" / "cpu_short-and-long_tiny.json"
    report = run_bench("short-and-long", ["hf-cb"], model="tiny", loaded=tiny_engine_model, rates=RATES,
                       hf_time_limit_s=1.5, json_path=str(path), log=lambda *a: None, show_progress=False)
    r = report["results"]["hf-cb"]
    assert "error" not in r, r
    assert r["partial"]["finished"] == r["num_requests"] == 3 and r["partial"]["submitted"] == 4
    streamed = r["partial"]["unfinished_tokens"]
    assert 0 < streamed < 6000, "the long request's tokens until the guard count towards the throughput"
    assert r["output_tokens"] == 6 + streamed and r["output_tok_per_s"] == pytest.approx((6 + streamed) / r["wall_time_s"])
    assert r["wall_time_s"] < 10, "cancelled at the guard"
    readme = tmp_path / "README.md"
    readme.write_text(f"{START}\n{END}\n")
    assert run_report(path.parent, readme, plot=False, log=lambda *a: None) == 0
    assert re.search(r"\| hf-cb \| .* \| partial: 3 of 4 finished in its \d+ s guard \|", readme.read_text())


def test_hf_static_compile_compiles_and_matches_eager(tiny_hf, monkeypatch):
    """hf-static-compile on the CPU with dynamo's eager backend (the graphs are captured, nothing is
    code-generated: seconds): it records that it compiled, its batch-1 timings, and generates the
    same tokens as plain generate on the same padded batch."""
    from transformers import StoppingCriteriaList
    monkeypatch.setitem(peers.COMPILE, "cpu", dict(backend="eager"))
    monkeypatch.setattr(peers, "BATCH1_TOKENS", 8)
    wl = make_workload("nanovllm-cpu", 256, num_requests=3, min_len=4, max_len=12)
    res = peers.run_peer("hf-static-compile", tiny_hf, wl, 3)
    assert [t.output_tokens for t in res.timings] == [r.max_tokens for r in wl.requests]
    c, b = res.figures["compile"], res.figures["batch1"]
    assert c["compiled"] and c["graphs"] > 0 and c["shapes"] == 1 and c["config"]["backend"] == "eager"
    assert c["graphs_during_timed_run"] == 0, "every shape was compiled before the clock started"
    assert b["ms_per_token_eager"] > 0 and b["speedup"] == pytest.approx(b["ms_per_token_eager"] / b["ms_per_token_compiled"])
    [(_, ids, mask, width, new, new_rounded)] = list(peers._batches(wl, 3, peers.PAD_TO))
    cc = peers.compile_config_for("cpu")
    with torch.inference_mode():
        fast = tiny_hf.generate(ids, attention_mask=mask, generation_config=peers._generation_config(new, new_rounded, cc),
                                stopping_criteria=StoppingCriteriaList([peers._StopAfter(width + new)]))
        ref = tiny_hf.generate(ids, attention_mask=mask, generation_config=peers._generation_config(new, new))
    assert torch.equal(fast[:, width:width + new], ref[:, width:width + new])


# ---- what a CPU run will cost -----------------------------------------------------------------------
def test_computed_tokens_count_the_padding_of_static_batches():
    lengths = [(3, 1), (5, 4), (2, 2)]                   # batches of 2: [(3,1),(5,4)] and [(2,2)]
    assert cost.computed_tokens("continuous", lengths, 2) == 4 + 9 + 4
    assert cost.computed_tokens("hf-static", lengths, 2) == 2 * (5 + 4) + 1 * (2 + 2)
    assert cost.computed_tokens("hf-static-compile", lengths, 2) == cost.computed_tokens("hf-static", lengths, 2)


def test_check_cost_refuses_a_long_cpu_run_and_says_what_to_do():
    est = dict(seconds={"hf-static": 3000.0, "continuous": 900.0}, total_s=3900.0, forward_tok_per_s=300.0)
    lines = []
    with pytest.raises(cost.TooSlow, match=r"about 65 min.*--workload anyscale-cpu.*--allow-slow"):
        cost.check_cost(est, "anyscale", allow_slow=False, log=lines.append)
    assert lines and "hf-static ~50 min" in lines[0], "the estimate is printed up front"
    cost.check_cost(est, "anyscale", allow_slow=True, log=lines.append)        # runs
    cost.check_cost(dict(est, total_s=10.0), "anyscale", allow_slow=False, log=lines.append)


def test_gpu_sized_workload_on_a_cpu_is_refused_before_it_runs(capsys):
    t0 = time.perf_counter()
    assert main(["bench", "--workload", "anyscale", "--device", "cpu", "--random-weights",
                 "--systems", "continuous"]) == 2
    out = capsys.readouterr()
    assert "estimated cost on this CPU" in out.out
    assert "--allow-slow" in out.err and "--workload anyscale-cpu" in out.err and out.err.startswith("error: ")
    assert time.perf_counter() - t0 < 120


# ---- the rate sweep ---------------------------------------------------------------------------------
def test_request_rate_flags_reach_the_load_generator(tiny_engine_model, monkeypatch, tmp_path):
    import course_lib.models.loader as loader
    import course_lib.perf.loadgen as loadgen
    seen = {}

    def fake_sweep(llm, workload, rates, **kw):
        seen.update(kw, rates=rates, requests=len(workload.requests), scheduler=llm.engine.cfg.scheduler)
        return dict(points=[dict(rate=r) for r in rates], slo=dict(ttft_s=kw.get("slo_ttft_s")))
    monkeypatch.setattr(loadgen, "rate_sweep", fake_sweep)
    monkeypatch.setattr(loader, "load_model", lambda *a, **kw: tiny_engine_model)
    argv = ["bench", "--request-rate", "0.5,2", "--arrival", "gamma", "--burstiness", "0.5", "--slo-ttft-ms", "250",
            "--slo-tpot-ms", "40", "--workload", "nanovllm-cpu", "--num-requests", "3", "--random-weights",
            "--json-dir", str(tmp_path)]
    assert main(argv) == 0
    assert seen == dict(rates=[0.5, 2.0], arrival="gamma", burstiness=0.5, slo_ttft_s=0.25, slo_tpot_s=0.04, seed=0,
                        progress=True, requests=3, scheduler="continuous")
    [path] = tmp_path.glob("*.json")
    assert path.name == "cpu_rates-nanovllm-cpu_smollm2-135m.json"
    report = json.loads(path.read_text())
    assert report["benchmark"] == "rate_sweep" and [p["rate"] for p in report["points"]] == [0.5, 2.0]
    assert report["command"] is None and report["model"]["name"] == "smollm2-135m" and report["system"] == "continuous"


def test_suite_guard_fails_the_peer_and_keeps_the_engine(tmp_path, monkeypatch):
    """A suite whose budget is already spent: hf-static is cut at its first step and recorded as a
    TimeoutError; the engine's run (never guarded) stands, in the file the suite names."""
    from course_lib.perf.benchmarks import suite
    tiny = dict(device="cpu", workload="nanovllm-cpu", models=("smollm2-135m",),
                systems=("continuous", "hf-static"), random_weights=True, max_num_seqs=2,
                workload_overrides=dict(num_requests=2, min_len=4, max_len=8), budget_s=1e-3)
    monkeypatch.setitem(suite.SUITES, "tiny", tiny)
    [report] = suite.run_suite("tiny", str(tmp_path), log=lambda *a: None, show_progress=False)
    saved = json.loads((tmp_path / "cpu_nanovllm-cpu_smollm2-135m.json").read_text())
    assert saved["results"] == report["results"]
    assert saved["results"]["hf-static"]["error"].startswith("TimeoutError: hf-static")
    assert saved["results"]["continuous"]["output_tokens"] == saved["workload"]["output_tokens"]
    readme = tmp_path / "README.md"
    readme.write_text(f"{START}\n{END}\n")
    assert run_report(tmp_path, readme, plot=False, log=lambda *a: None) == 0
    assert "| hf-static | " in readme.read_text() and "| failed: TimeoutError |" in readme.read_text()


# ---- command lines -----------------------------------------------------------------------------------
def test_hf_num_requests_flag():
    assert parse_hf_num_requests("128") == 128
    assert parse_hf_num_requests("hf-static=128, hf-cb=64") == {"hf-static": 128, "hf-cb": 64}
    assert main(["bench", "--hf-num-requests", "lots"]) == 2


def test_bench_rejects_bad_input_before_loading(capsys):
    assert main(["bench", "--systems", "vllm"]) == 2
    assert "systems must be chosen from" in capsys.readouterr().err
    assert main(["bench", "--hf-num-requests", "hf-fast=3"]) == 2
    assert "hf_num_requests must map" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["bench", "--suite", "gpu"]) == 2
        assert "needs a CUDA device" in capsys.readouterr().err


# ---- the README's performance section ----------------------------------------------------------------
def test_readme_perf_section_matches_data_results():
    """Fails when data/results/ changed and `python -m course_lib report` was not rerun."""
    assert run_report(ROOT / "data/results", ROOT / "README.md", check=True, log=lambda *a: None) == 0
    assert main(["report", "--check"]) == 0


def test_report_rewrites_only_its_section(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    src = ROOT / "data/results/cpu_anyscale-cpu_smollm2-135m.json"
    report = json.loads(src.read_text())        # the recorded file, with figures this test controls
    r = report["results"]
    r["hf-static"]["output_tok_per_s"], r["continuous"]["output_tok_per_s"] = 43.5, 69.1
    r["continuous"]["ratio_to_hf_static"] = 69.1 / 43.5
    (results / src.name).write_text(json.dumps(report))
    (results / "kernels_h100.json").write_text(json.dumps({"points": [], "device": "H100"}))   # skipped
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n{START}\nold table\n{END}\nafter\n")
    assert [p.name for p, _ in load_reports(results)] == [src.name]
    assert run_report(results, readme, check=True, log=lambda *a: None) == 1
    assert run_report(results, readme, log=lambda *a: None) == 0
    text = readme.read_text()
    assert text.startswith("# title\n\nbefore\n" + START) and text.endswith(END + "\nafter\n")
    assert "old table" not in text and text.count("| [1](results/" + src.name + ") |") == 3
    assert "| continuous | cpu (x86_64, 2 threads) | smollm2-135m | fp32 | anyscale-cpu (128 req) |" in text
    assert "| 69.1 | 1.59x | — |" in text and "(results/perf.png)" in text
    assert (results / "perf.png").stat().st_size > 0
    assert run_report(results, readme, check=True, log=lambda *a: None) == 0
    report = json.loads(src.read_text())
    report["results"]["continuous"]["output_tok_per_s"] = 70.0
    (results / src.name).write_text(json.dumps(report))
    assert run_report(results, readme, check=True, log=lambda *a: None) == 1
    readme.write_text("no markers\n")
    with pytest.raises(ValueError, match="perf-table:start"):
        run_report(results, readme, log=lambda *a: None)


def test_warm_up_covers_block_table_widths_divisible_by_16_and_not(monkeypatch):
    """Triton compiles one variant per divisibility of its integer arguments; the prefill kernel's
    block-table stride is the step's longest table. The warm-up must see a width that is a multiple
    of 16 (alone) and one that is not (with a second sequence), and fit a small engine."""
    from course_lib.engine.llm import LLM
    from course_lib.models.llama import LlamaModel
    from course_lib.perf.benchmarks.serving import warm_up
    seen = []
    monkeypatch.setattr(LLM, "generate", lambda self, prompts, params, **kw: seen.append([len(p) for p in prompts]))
    cfg = ModelConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2,
                      num_kv_heads=1, head_dim=8, max_position_embeddings=4096)
    big = LLM(LlamaModel(cfg), block_size=16, num_kv_blocks=64, random_weights=True)
    warm_up(big, [1, 2, 3])
    assert seen == [[256], [287, 48]]
    assert [-(-max(lens) // 16) % 16 == 0 for lens in seen] == [True, False]    # 16 blocks, 18 blocks
    seen.clear()
    small = LLM(LlamaModel(cfg), block_size=16, num_kv_blocks=64, max_model_len=100, random_weights=True)
    warm_up(small, [1, 2, 3])
    assert max(max(lens) for lens in seen) <= 98


def test_warm_up_runs_eagerly_past_the_mixed_graphs(monkeypatch):
    """On a GPU, steps of up to mixed_graphs.max_tokens tokens replay a graph whose block table is a
    static buffer (its stride is not the step's): the warm-up's steps must be longer than that, or the
    first long prefill compiles its kernel variant inside the timed run (measured on an H200: a
    0.6 s first step, qwen3-0.6b TTFT p50 1.36 s instead of 0.32 s)."""
    from types import SimpleNamespace
    from course_lib.engine.llm import LLM
    from course_lib.models.llama import LlamaModel
    from course_lib.perf.benchmarks.serving import warm_up
    seen = []
    monkeypatch.setattr(LLM, "generate", lambda self, prompts, params, **kw: seen.append([len(p) for p in prompts]))
    cfg = ModelConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2,
                      num_kv_heads=1, head_dim=8, max_position_embeddings=4096)
    llm = LLM(LlamaModel(cfg), block_size=16, num_kv_blocks=128, random_weights=True)
    llm.engine.runner.mixed_graphs = SimpleNamespace(max_tokens=512,      # as on a GPU
                                                     capture_all=lambda: seen.append("capture_all"))
    warm_up(llm, [1, 2, 3])
    assert seen.pop() == "capture_all"                # then every graph, before any timed step
    assert all(sum(lens) > 512 for lens in seen)                          # no step replays a graph
    assert [-(-max(lens) // 16) % 16 == 0 for lens in seen] == [True, False]
