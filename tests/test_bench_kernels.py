"""The GPU sweeps of Days 10, 11 and 14 (course_lib/perf/benchmarks/kernels.py, graphs.py).

On the CPU: the arithmetic (bytes, FLOPs, floors), point selection, error capture, JSON assembly and
acceptance checks, the inputs and references each point is checked against, every point's code path
under the Triton interpreter with the GPU timers stubbed, and the engine-step timing on a tiny model.
On CUDA: a --quick sweep of each, end to end."""
import json
import math
import os
from pathlib import Path

import pytest
import torch

from course_lib.config import ModelConfig
from course_lib.kv.paged import paged_attention_ref
from course_lib.layers.attention import sdpa
from course_lib.models.llama import LlamaModel
from course_lib.models.loader import init_random_
from course_lib.__main__ import main
from course_lib.perf import harness, shapes, timers
from course_lib.perf.benchmarks import graphs as bg
from course_lib.perf.benchmarks import kernels as bk

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="timings need a CUDA GPU")
TINY = dict(heads=4, kv_heads=2, head_dim=16, block_size=4)


# ---- arithmetic ----------------------------------------------------------------------------------
def test_decode_bytes_equal_the_tensors_a_kernel_reads():
    """Context a multiple of the block size: the count is exactly K, V, block table, q and out."""
    q, k, v, bt, *_ = bk.decode_batch(3, 40, dtype=torch.float16, device="cpu", **TINY)
    expected = k.nbytes + v.nbytes + bt.nbytes + 2 * q.nbytes
    assert shapes.decode_attention_bytes(3, 40, dtype_bytes=2, **TINY) == expected


def test_prefill_flops_count_every_causal_pair():
    T, H, D = 7, 3, 5
    pairs = sum(1 for i in range(T) for j in range(T) if j <= i)
    assert bk.prefill_flops([T], H, D) == 4 * H * D * pairs
    assert bk.prefill_flops([T, 2], H, D) == bk.prefill_flops([T], H, D) + bk.prefill_flops([2], H, D)


def test_naive_scores_grow_quadratically():
    assert bk.naive_scores_bytes(2048, 16, 2) == 4 * bk.naive_scores_bytes(1024, 16, 2)
    assert bk.naive_scores_bytes(1024, 16, 2) == 3 * 16 * 1024 * 1024 * 2


def test_floors_from_bytes():
    f = bg.floors_ms(weight_bytes=2e9, kv_bytes_per_token=1000, batch=4, context=500, gb_per_s=2000)
    assert f["weight_floor_ms"] == pytest.approx(1.0)          # 2 GB at 2 TB/s
    assert f["floor_ms"] == pytest.approx((2e9 + 4 * 500 * 1000) / 2e9)


# ---- point selection, errors, JSON ---------------------------------------------------------------
def test_select_points_skips_big_kv_and_says_why():
    per_token = 2 * 8 * 128 * 2
    kept, skipped = bk.select_points(bk.DECODE_BATCHES, bk.DECODE_CONTEXTS, per_token)
    assert (64, 4096) in kept, "the acceptance point must be measured"
    assert {(s["batch"], s["context"]) for s in skipped} == {(128, 16384), (256, 16384)}
    assert all(b * c * per_token <= bk.MAX_KV_BYTES for b, c in kept)
    assert len(kept) + len(skipped) == len(bk.DECODE_BATCHES) * len(bk.DECODE_CONTEXTS)
    assert all("GB" in s["skipped"] for s in skipped)
    quick, _ = bk.select_points(bk.QUICK["batches"], bk.QUICK["contexts"], per_token)
    assert (64, 4096) in quick


def fake_decode(frac):
    return [dict(impl="triton", batch=64, context=4096, frac_of_copy=frac, rel_err=1e-3),
            dict(impl="torch", batch=64, context=4096, frac_of_copy=0.2, rel_err=1e-3),
            dict(impl="triton", batch=256, context=16384, skipped="K/V 17.2 GB > 8 GB")]


def test_report_carries_context_and_acceptance(tmp_path):
    copy = dict(bytes=1, ms=1.0, gb_per_s=3000.0)
    fig = bk.figures(copy, dict(decode=fake_decode(0.8)), quick=False)
    assert {"shape", "copy", "decode", "acceptance", "quick"} <= fig.keys()
    assert fig["acceptance"]["frac_of_copy"] == 0.8 and fig["acceptance"]["ok"]
    assert fig["all_correct"], "skipped points are not failures"
    assert not bk.figures(copy, dict(decode=fake_decode(0.6)), False)["acceptance"]["ok"]
    missing = bk.figures(copy, dict(decode=fake_decode(0.8)[1:]), False)["acceptance"]
    assert missing["frac_of_copy"] is None and not missing["ok"]
    bad = fake_decode(0.8) + [dict(impl="torch", batch=1, context=256, error="OutOfMemoryError: ...")]
    assert not bk.figures(copy, dict(decode=bad), False)["all_correct"]
    report = harness.make_report("kernels", "cpu", fig)
    assert harness.load_report(harness.write_report(report, tmp_path / "k.json")) == report


def test_graphs_report_ratios_and_acceptance():
    info = dict(name="llama-3.2-1b", weight_bytes=2_000_000_000)
    rows = [dict(batch=1, mode="graphs", cuda_graphs=True, step_ms=1.5, context=520),
            dict(batch=1, mode="graphs-sync", cuda_graphs=True, step_ms=1.9, context=520),
            dict(batch=1, mode="eager", cuda_graphs=False, step_ms=9.0, context=520),
            dict(batch=2, mode="graphs", cuda_graphs=True, error="RuntimeError: boom")]
    r = bg.figures(info, dict(gb_per_s=2000.0), 1000, rows, 512, 20, 3, False)
    p = r["points"][0]
    assert p["weight_floor_ms"] == pytest.approx(1.0) and p["ratio_to_weight_floor"] == pytest.approx(1.5)
    # the decode-only floor fraction counts the K/V: 520 tokens x 1,000 bytes = 0.00026 ms at 2,000 GB/s
    assert p["floor_ms"] == pytest.approx(1.00026) and p["floor_fraction"] == pytest.approx(1.00026 / 1.5)
    acc = r["acceptance"]
    assert acc["applies"] and acc["ok"] and acc["ratio_to_weight_floor"] == 1.5, "graphs mode, batch 1"
    assert "ratio_to_weight_floor" not in r["points"][3] and "weight_floor_ms" in r["points"][3]
    other = bg.figures(dict(info, name="qwen3-0.6b"), dict(gb_per_s=2000.0), 1000, rows, 512, 20, 3, False)
    assert not other["acceptance"]["applies"] and other["acceptance"]["ok"] is None
    json.dumps(r)


def test_notebooks_find_the_recorded_sweeps():
    """What notebooks 10, 11 and 14 read: the recorded kernel, graphs and gemv reports, in the
    envelope, each with the fields the notebooks plot."""
    folder = Path(__file__).resolve().parents[1] / "data/results"
    [(_, k)] = harness.find_reports(folder, "kernels")
    assert {"shape", "copy", "decode", "split_kv", "prefill"} <= k.keys() and k["device"]["name"] == "NVIDIA H200"
    graphs = harness.find_reports(folder, "graphs")
    assert {r["model"]["name"] for _, r in graphs} == {"llama-3.2-1b", "qwen3-0.6b"}
    assert all("weight_floor_ms" in r["points"][0] for _, r in graphs)
    [(_, g)] = harness.find_reports(folder, "gemv")
    assert g["argmax"] and g["versions"]["triton"]


# ---- inputs and references -----------------------------------------------------------------------
def test_prefill_batch_is_an_identity_paged_layout():
    args = bk.prefill_batch([9, 4, 13], dtype=torch.float32, device="cpu", **TINY)
    q, k_cache, v_cache, bt, seq_lens, qsl = args
    assert qsl.tolist() == [0, 9, 13, 26] and seq_lens.tolist() == [9, 4, 13]
    assert bt[:, 0].tolist() == [0, 3, 4] and bt[2, :4].tolist() == [4, 5, 6, 7]
    for i, T in enumerate([9, 4, 13]):
        k, v = bk.contiguous_kv(args, i)
        assert k.shape == (T, 2, 16) and k.data_ptr() >= k_cache.data_ptr(), "a view into the pool"
        s = slice(qsl[i], qsl[i + 1])
        ref = sdpa(q[s][None], k[None], v[None], causal=True)[0]
        torch.testing.assert_close(paged_attention_ref(*args)[s], ref)


def test_reference_rows_equal_the_full_reference():
    args = bk.decode_batch(6, 37, dtype=torch.float32, device="cpu", **TINY)
    full = paged_attention_ref(*args)
    torch.testing.assert_close(bk.reference_rows(args, [0, 2, 5]), full[[0, 2, 5]])


@pytest.mark.parametrize("fn", [bk.naive_attention, bk.sdpa_flash])
def test_prefill_baselines_equal_causal_sdpa(fn):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(11, 4, 8, generator=g)
    k, v = torch.randn(11, 2, 8, generator=g), torch.randn(11, 2, 8, generator=g)
    torch.testing.assert_close(fn(q, k, v), sdpa(q[None], k[None], v[None], causal=True)[0])


# ---- every point's code path, on the CPU: interpreter for Triton, timers stubbed -----------------
@pytest.fixture
def cpu_bench(monkeypatch):
    if os.environ.get("TRITON_INTERPRET") != "1":   # on CUDA the --quick sweeps below cover these
        pytest.skip("runs Triton on CPU tensors: needs TRITON_INTERPRET=1 (conftest.py sets it without CUDA)")
    monkeypatch.setattr(bk, "SHAPE", TINY)
    monkeypatch.setattr(timers, "time_ms", lambda fn, graph="lone": (fn(), dict(ms=0.5, ms_eager=1.0, timing="stub"))[1])
    monkeypatch.setattr(bk, "peak_extra_bytes", lambda fn: (fn(), 1)[1])


@pytest.mark.parametrize("impl, splits", [("triton", None), ("triton", 3), ("torch", None)])
def test_decode_point_checks_and_accounts(cpu_bench, impl, splits):
    r = bk.bench_point(5, 70, torch.float32, copy_gbs=1.0, num_splits=splits, impl=impl, device="cpu")
    assert r["rel_err"] < 1e-5, r
    assert r["bytes"] == shapes.decode_attention_bytes(5, 70, dtype_bytes=4, **TINY)
    assert r["gb_per_s"] == pytest.approx(r["bytes"] / 0.5 / 1e6) and r["frac_of_copy"] == r["gb_per_s"]
    if splits:
        assert r["num_splits"] == splits


@pytest.mark.parametrize("impl", ["triton", "sdpa_flash", "naive"])
def test_prefill_point_checks_and_accounts(cpu_bench, impl):
    r = bk.prefill_point(impl, [21, 5, 9], torch.float32, device="cpu")
    assert r["rel_err"] < 1e-5, r
    assert r["tflops"] == pytest.approx(bk.prefill_flops([21, 5, 9], 4, 16) / 0.5 / 1e9)


def test_sweeps_assemble_a_report(cpu_bench, monkeypatch):
    """The sweeps as run() calls them, on tiny points: every row measured, skipped or failed, and the
    JSON assembled from them. One point is made to fail: its row records the error, the rest go on."""
    monkeypatch.setattr(bk, "MAX_KV_BYTES", 2 * 2 * 20 * 2 * 16 * 4)   # skips (2, 40) and beyond
    real = bk.decode_batch
    monkeypatch.setattr(bk, "decode_batch", lambda b, c, **kw: (_ for _ in ()).throw(MemoryError("boom"))
                        if (b, c) == (1, 40) else real(b, c, **kw))
    log = []
    sections = dict(decode=bk.decode_sweep((1, 2), (9, 40), 1.0, torch.float32, log=log.append, device="cpu"),
                    split_kv=bk.split_sweep([(1, 300)], 1.0, torch.float32, log=log.append, device="cpu"),
                    prefill=bk.prefill_sweep([12], [7, 3], torch.float32, log=log.append, device="cpu"))
    report = bk.figures(dict(gb_per_s=1.0), sections, quick=True, dtype="float32")
    dec = {(r["impl"], r["batch"], r["context"]): r for r in report["decode"]}
    assert len(dec) == 8 and "skipped" in dec["triton", 2, 40]
    assert "MemoryError" in dec["torch", 1, 40]["error"]
    assert all(r["rel_err"] < 1e-5 for r in report["decode"] + report["split_kv"] + report["prefill"]
               if "rel_err" in r)
    assert [r["splits_asked"] for r in report["split_kv"]] == ["auto", 1]
    assert {(r["case"], r["impl"]) for r in report["prefill"]} == {
        (c, i) for c in ("single", "varlen") for i in ("triton", "sdpa_flash", "naive")}
    assert not report["all_correct"] and report["acceptance"]["frac_of_copy"] is None
    assert len(log) == 6 + 2 + 6 and any("boom" in line for line in log)
    json.dumps(report)


# ---- the engine-step timing, on a tiny model on the CPU (no graphs there) ------------------------
@pytest.mark.parametrize("mode", list(bg.MODES))
def test_time_engine_steps_on_a_tiny_model(mode):
    """On the CPU every mode is an eager, synchronous engine; the timing plumbing is the same."""
    cfg = ModelConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                      num_kv_heads=2, head_dim=8, max_position_embeddings=256)
    model = LlamaModel(cfg)
    init_random_(model, 0)
    rows = bg.measure(model.eval(), (1, 3), context=10, steps=4, warmup=1, mode=mode, log=lambda s: None)
    assert [r["batch"] for r in rows] == [1, 3] and all("error" not in r for r in rows), rows
    for r in rows:
        assert r["step_ms"] >= r["launch_ms"] > 0, "the step contains the model runner's launch"
        assert r["mode"] == mode and r["graph_bucket"] is None and not r["cuda_graphs"]
        assert r["tokens_per_s"] == pytest.approx(r["batch"] / r["step_ms"] * 1e3)
        assert r["context"] == 10 + 1 + 2


# ---- CUDA: the real thing, quick ---------------------------------------------------------------
@cuda_only
def test_gpu_kernels_quick_sweep(tmp_path):
    path = tmp_path / "k.json"
    assert main(["bench", "kernels", "--json", str(path), "--quick"]) == 0
    report = json.loads(path.read_text())
    assert report["all_correct"], [r for s in ("decode", "split_kv", "prefill") for r in report[s]
                                   if "error" in r]
    assert report["acceptance"]["frac_of_copy"] is not None
    assert {r["impl"] for r in report["prefill"]} == {"triton", "sdpa_flash", "naive"}
    assert all(math.isfinite(r["ms"]) for r in report["decode"] if "ms" in r)


@cuda_only
def test_gpu_graphs_quick_sweep(tmp_path):
    path = tmp_path / "g.json"
    assert main(["bench", "graphs", "--model", "smollm2-135m", "--json", str(path), "--quick", "--context", "128"]) == 0
    report = json.loads(path.read_text())
    points = report["points"]
    assert all("error" not in p for p in points), points
    assert {(p["batch"], p["mode"]) for p in points} == {(b, m) for b in bg.QUICK_BATCHES for m in bg.MODES}
    assert all(p["cuda_graphs"] == bg.MODES[p["mode"]]["cuda_graphs"] for p in points), "graphs captured"
    by = {(p["batch"], p["mode"]): p["step_ms"] for p in points}
    assert by[1, "eager"] > by[1, "graphs"], "graphs must speed up batch 1"
