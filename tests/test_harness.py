"""The benchmark harness (course_lib/perf/harness.py, perf/benchmarks/): one envelope that round-trips,
one loader that reads every recorded file (old shapes upgraded, no figure changed), one naming rule
that names every recorded file, and one command line: every benchmark in `bench --help`, bad flags
exit 2 naming the flag."""
import json
from pathlib import Path

import pytest
import torch

from course_lib.__main__ import build_parser, main
from course_lib.perf import harness
from course_lib.perf.benchmarks import BENCHMARKS, load
from course_lib.perf.benchmarks.graphs import topic as graphs_topic

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "data/results"


# ---- the envelope ----------------------------------------------------------------------------------
def test_envelope_round_trips(tmp_path):
    figures = dict(points=[dict(batch=1, ms=0.25), dict(batch=8, ms=float("1e-3"))], quick=True, note="x")
    report = harness.make_report("kernels", torch.device("cpu"), figures, command="python -m course_lib bench kernels")
    assert list(report)[:5] == list(harness.ENVELOPE_KEYS), "the envelope comes first"
    assert report["device"]["type"] == "cpu" and report["device"]["slug"] == "cpu"
    assert report["device"]["threads"] == torch.get_num_threads()
    assert report["versions"]["torch"] == torch.__version__ and "transformers" in report["versions"]
    path = harness.write_report(report, tmp_path / "sub" / "r.json")
    assert harness.load_report(path) == json.loads(json.dumps(report)) == report
    assert not list(path.parent.glob(".*.tmp")), "the temporary file was renamed into place"


def test_envelope_is_checked_on_the_way_in_and_out(tmp_path):
    with pytest.raises(ValueError, match="envelope's keys"):
        harness.make_report("x", "cpu", dict(device="mine"))
    with pytest.raises(ValueError, match=r"missing \['versions'\]"):
        harness.write_report(dict(benchmark="x", command=None, timestamp=None, device=dict(type="cpu", name="c",
                                                                                           slug="cpu")),
                             tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "other.json").write_text(json.dumps(dict(points=[], device="H100")))   # another tool's file
    for name, message in (("list.json", "must hold a JSON object"), ("broken.json", "is not JSON"),
                          ("other.json", "is not a benchmark report")):
        with pytest.raises(ValueError, match=message):
            harness.load_report(tmp_path / name)


def test_old_shapes_are_upgraded_with_every_figure_kept():
    serving = dict(command="c", timestamp="t", device="NVIDIA H200", versions=dict(torch="2"), model={},
                   workload={}, engine={}, results=dict(continuous=dict(output_tok_per_s=1.5)))
    up = harness.check_report(harness.upgrade(serving))
    assert up["benchmark"] == "serving" and up["device"] == dict(type="cuda", name="NVIDIA H200", slug="h200")
    assert up["results"] == serving["results"]
    fused = dict(command="c", timestamp="t", device="NVIDIA H100 80GB HBM3", torch="2.11", triton="3.6",
                 kernels=[dict(ms=1.0)], decode_step=[])
    up = harness.check_report(harness.upgrade(fused))
    assert up["benchmark"] == "fused" and up["versions"] == dict(torch="2.11", triton="3.6")
    assert "torch" not in up and up["kernels"] == [dict(ms=1.0)] and up["device"]["slug"] == "h100"
    old = dict(benchmark="bench_kernels", timestamp="t", device="NVIDIA H200", versions={}, decode=[1])
    up = harness.check_report(harness.upgrade(old))
    assert (up["benchmark"], up["legacy"], up["command"], up["decode"]) == ("kernels", dict(benchmark="bench_kernels"),
                                                                          None, [1])
    bare = harness.check_report(harness.upgrade(dict(benchmark="soak", counts={})))
    assert bare["device"]["name"] == "not recorded" and bare["versions"] == {}, "nothing is made up"
    assert harness.upgrade(up) == up, "an envelope comes back unchanged"


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.json")), ids=lambda p: p.name)
def test_every_recorded_report_loads_and_is_named_by_the_rule(path):
    r = harness.load_report(path)
    assert r["benchmark"] in BENCHMARKS + ("rate_sweep", "profile"), r["benchmark"]  # profile: `python -m course_lib profile`
    assert r["command"] is None or r["command"].startswith("python -m course_lib "), r["command"]
    topic = {"serving": r.get("workload", {}).get("name"),
             "rate_sweep": f"rates-{r.get('workload', {}).get('name')}",
             "graphs": graphs_topic(r.get("context", 512))}.get(r["benchmark"], r["benchmark"])
    model = r.get("model", {}).get("name") if isinstance(r.get("model"), dict) else None
    named = {harness.report_path(RESULTS, r["device"], topic), harness.report_path(RESULTS, r["device"], topic, model)}
    assert path in named, (path.name, sorted(p.name for p in named))


def test_find_reports_filters_and_orders(tmp_path):
    dev = dict(type="cuda", name="NVIDIA H200", slug="h200")
    for name, bench, quick, stamp in [("a.json", "kernels", False, "2026-01-01"), ("b.json", "kernels", True, "2026-03-01"),
                                      ("c.json", "kernels", False, "2026-02-01"), ("d.json", "graphs", False, "2026-04-01")]:
        harness.write_report(dict(harness.make_report(bench, dev, dict(quick=quick)), timestamp=stamp), tmp_path / name)
    (tmp_path / "e.json").write_text("{not json")
    assert [p.name for p, _ in harness.find_reports(tmp_path, "kernels")] == ["c.json", "a.json", "b.json"]
    assert [p.name for p, _ in harness.find_reports(tmp_path, "graphs")] == ["d.json"]
    assert len(harness.find_reports(tmp_path)) == 4


@pytest.mark.parametrize("name,slug", [("NVIDIA H100 80GB HBM3", "h100"), ("NVIDIA H200", "h200"),
                                       ("NVIDIA A100-SXM4-80GB", "a100"), ("NVIDIA L4", "l4"),
                                       ("NVIDIA GeForce RTX 4090", "geforce-rtx-4090"), ("some gpu", "some-gpu"),
                                       ("cpu (x86_64, 2 threads)", "cpu")])
def test_device_slug(name, slug):
    assert harness.device_slug(name) == slug


def test_file_names_follow_one_rule(tmp_path):
    gpu, cpu = dict(type="cuda", slug="h200", name="NVIDIA H200"), dict(type="cpu", slug="cpu", name="cpu")
    assert harness.report_path("d", gpu, "nanovllm", "qwen3-0.6b") == Path("d/gpu_h200_nanovllm_qwen3-0.6b.json")
    assert harness.report_path("d", cpu, "soak") == Path("d/cpu_soak.json")
    assert harness.report_path("d", cpu, "anyscale", "Qwen/Qwen3-0.6B") == Path("d/cpu_anyscale_Qwen-Qwen3-0.6B.json")
    assert harness.report_path("d", cpu, "x", "./models/mine/") == Path("d/cpu_x_models-mine.json")

    class Args:
        json, json_dir = None, None
    assert harness.output_path(Args, gpu, "fused") == Path("gpu_h200_fused.json")
    assert harness.output_path(Args, gpu, "fused", default_dir=None) is None
    Args.json_dir = str(tmp_path)
    assert harness.output_path(Args, gpu, "fused") == tmp_path / "gpu_h200_fused.json"
    Args.json = "x.json"
    assert harness.output_path(Args, gpu, "fused") == Path("x.json")


def test_command_line_is_what_reproduces_the_run():
    argv = ["/repo/course_lib/__main__.py", "bench", "--workload", "nanovllm", "--model", "my model"]
    assert harness.command_line(argv) == "python -m course_lib bench --workload nanovllm --model 'my model'"
    assert harness.command_line(["/usr/bin/pytest", "-q"]) is None, "a run from Python has no command"


def test_guarded_records_the_error_and_goes_on():
    rows = [harness.guarded(dict(point=i), lambda: {"x": 1 / (i - 1)}) for i in range(3)]
    assert rows[1]["error"].startswith("ZeroDivisionError") and "x" not in rows[1]
    assert rows[0]["x"] == -1.0 and rows[2]["x"] == 1.0


# ---- the command line -------------------------------------------------------------------------------
def test_bench_help_lists_every_benchmark_with_its_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    lines = out.splitlines()
    for name in BENCHMARKS:
        first = load(name).HELP.split()[:3]
        # argparse puts a long name alone on its line and its help on the next
        assert any(line.split()[:1] == [name] and (line.split()[1:4] or nxt.split()[:3]) == first
                   for line, nxt in zip(lines, lines[1:] + [""])), (name, out)


@pytest.mark.parametrize("argv,benchmark", [
    (["bench"], "serving"), (["bench", "--workload", "nanovllm-cpu", "--systems", "continuous"], "serving"),
    (["bench", "--suite", "gpu", "--json-dir", "d"], "serving"), (["bench", "serving", "--cap", "3"], "serving"),
    (["bench", "suite", "cpu"], "suite"), (["bench", "kernels", "--quick"], "kernels"),
    (["bench", "soak", "--minutes", "1"], "soak")])
def test_old_spellings_still_parse(argv, benchmark):
    args = build_parser().parse_args(argv)
    assert args.benchmark == benchmark
    if "--suite" in argv:
        assert (args.suite, args.json_dir) == ("gpu", "d")


@pytest.mark.parametrize("argv,message", [
    (["bench", "kernels", "--bogus"], "unrecognized arguments: --bogus"),
    (["bench", "serving", "--request-rate", "fast"], "argument --request-rate: must be comma-separated"),
    (["bench", "--request-rate", "1,-2"], "argument --request-rate: must be positive"),
    (["bench", "--burstiness", "-1"], "--burstiness must be a positive, finite number"),
    (["bench", "--slo-ttft-ms", "nan"], "--slo-ttft-ms must be a positive, finite number"),
    (["bench", "--request-rate", "1", "--systems", "hf-static"], "--systems: a rate sweep"),
    (["bench", "--systems", "hf-static-compiled"], "--systems: systems must be chosen from"),
    (["bench", "suite", "tpu"], "argument name: invalid choice: 'tpu'"),
    (["bench", "suite", "cpu", "--time-budget-s", "0"], "--time-budget-s must be a positive"),
    (["bench", "graphs", "--modes", "fast"], "--modes must be chosen from"),
    (["bench", "graphs", "--model", "gpt-5"], "--model must be one of"),
    (["bench", "kernels", "--sections", "decode,x"], "--sections must be chosen from"),
    (["bench", "fused", "--tokens", "1,a"], "--tokens must be comma-separated integers"),
    (["bench", "soak", "--minutes", "0"], "--minutes must be a positive, finite number"),
    (["bench", "sampler", "--batches", "1,x"], "--batches must be comma-separated integers"),
    (["bench", "sampler", "--batches", "0"], "--batches must be positive integers"),
    (["bench", "sampler", "--vocab", "1"], "--vocab must be an integer >= 2"),
    (["bench", "sampler", "--dtype", "int8"], "--dtype"),
    (["bench", "quant", "--methods", "none,fp8"], "--methods must be chosen from none, int8, int4"),
    (["bench", "quant", "--models", "gpt-5"], "--models must be chosen from"),
    (["bench", "quant", "--tokens", "1"], "--tokens must be an integer >= 2"),
    (["bench", "notebooks", "--only", "99"], "--only must name days from"),
    (["bench", "--workload", "nanovllm-cpu", "--cap", "8"], "--cap applies to the anyscale workloads only"),
    (["bench", "--max-cudagraph-capture-size", "8"], "--max-cudagraph-capture-size must be an integer >= 16"),
])
def test_bad_flags_exit_2_naming_the_flag(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU refusal only")
@pytest.mark.parametrize("name", ["kernels", "fused", "gemv", "graphs", "mixed"])
def test_gpu_benchmarks_refuse_the_cpu_clearly(name, capsys, tmp_path):
    assert main(["bench", name, "--json", str(tmp_path / "x.json")]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_table_notes_say_sample_partial_and_compiled():
    from course_lib.perf.report import notes
    assert notes(dict(num_requests=128, sample_of=256)) == "128 of 256"
    assert notes(dict(num_requests=30, sample_of=256, partial=dict(finished=30, submitted=32, guard_s=40.2))) == \
        "partial: 30 of the first 32 of 256 finished in its 40 s guard"
    assert notes(dict(num_requests=3, sample_of=4, partial=dict(finished=3, submitted=4, guard_s=1.4))) == \
        "partial: 3 of 4 finished in its 1 s guard"
    compiled = dict(compile=dict(compiled=True), batch1=dict(ms_per_token_compiled=2.5, speedup=20.0))
    assert notes(compiled) == "compiled, batch 1 2.5 ms/token (20.00x eager)"
    assert notes(dict(compile=dict(compiled=False))) == "NOT compiled"
    assert notes(dict(num_requests=5)) == ""


def test_sampler_benchmark_times_every_setting_and_the_loop(tmp_path):
    path = tmp_path / "s.json"
    assert main(["bench", "sampler", "--vocab", "512", "--batches", "1,4", "--loop-batches", "4",
                 "--repeats", "2", "--device", "cpu", "--json", str(path)]) == 0
    r = harness.load_report(path)
    assert r["benchmark"] == "sampler" and r["vocab"] == 512
    got = {(row["impl"], row["setting"], row["batch"]) for row in r["rows"]}
    settings = ["greedy", "temperature", "filters", "filters+penalties", "top-p+penalties"]
    assert got == {("batched Sampler", s, b) for s in settings for b in (1, 4)} | \
        {("per-request loop", "top-p+penalties", 4)}
    assert all(0 < row["ms_min"] <= row["ms"] <= row["ms_max"] for row in r["rows"])
    assert r["settings"]["filters+penalties"]["top_k"] == 50 and r["settings"]["greedy"]["temperature"] == 0
    assert r["logits_dtype"] == "float32"


def test_quant_benchmark_times_each_method_and_counts_the_weights(tmp_path):
    assert main(["bench", "quant", "--models", "smollm2-135m", "--methods", "none,int4", "--tokens", "3",
                 "--device", "cpu", "--json-dir", str(tmp_path)]) == 0
    r = harness.load_report(tmp_path / "cpu_quant.json")
    assert [row["method"] for row in r["rows"]] == ["none", "int4"] and r["batch"] == 1
    none, int4 = r["rows"]
    assert none["tokens"] == int4["tokens"] == 3 and all(row["ms_per_token"] > 0 for row in r["rows"])
    assert 7 < none["linear_weight_bytes"] / int4["linear_weight_bytes"] < 8     # fp32 vs 4 bits + scales


def test_sampler_benchmark_takes_the_logits_dtype_and_names_its_file(tmp_path):
    assert main(["bench", "sampler", "--vocab", "256", "--batches", "2", "--loop-batches", "2", "--repeats", "1",
                 "--dtype", "bfloat16", "--device", "cpu", "--json-dir", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("*.json")
    assert path.name == "cpu_sampler-bfloat16.json"
    assert harness.load_report(path)["logits_dtype"] == "bfloat16"


def test_notebooks_benchmark_records_ok_and_the_failing_cell(tmp_path):
    import nbformat
    from course_lib.perf.benchmarks import notebooks
    good, bad = tmp_path / "01_good.ipynb", tmp_path / "02_bad.ipynb"
    for path, code in ((good, "x = 1 + 1"), (bad, "assert 1 == 2, 'a check that fails'")):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
        nb.metadata["kernelspec"] = dict(name="python3", display_name="Python 3", language="python")
        nbformat.write(nb, path)
    rows = notebooks.run([good, bad], tmp_path / "out", timeout_s=60, log=lambda *a: None)
    assert [r["notebook"] for r in rows] == ["01_good.ipynb", "02_bad.ipynb"]
    assert rows[0]["status"] == "ok" and rows[0]["wall_s"] > 0 and rows[0]["slowest_cell"]["cell"] == 0
    assert rows[1]["status"].startswith("PapermillExecutionError") and "a check that fails" in rows[1]["status"]
