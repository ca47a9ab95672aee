"""Day 08's profiler (course_lib/perf/profile.py) and the engine's phase ranges (engine/profiling.py).

A tiny random model on the CPU, profiled for real (a few seconds): every phase shows up with time, the
shares add up, the Chrome trace is valid JSON holding the ranges, the CLI runs and rejects bad flags
with exit code 2. The trace arithmetic (nesting, self time, per-step means, GPU busy time) is checked
on hand-built event lists whose answers are worked out by hand. With profiling off the engine never
calls torch.profiler.record_function.
"""
import json

import pytest
import torch

from course_lib.__main__ import main
from course_lib.config import ModelConfig, SamplingParams
from course_lib.engine import profiling
from course_lib.engine.llm import LLM
from course_lib.engine.profiling import PHASES
from course_lib.models.llama import LlamaModel
from course_lib.models.loader import init_random_
from course_lib.perf import profile as prof

TINY_HF = dict(model_type="llama", vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
               rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True, eos_token_id=0)
BATCH, PROMPT, STEPS = 3, 5, 3


@pytest.fixture(scope="module")
def model():
    m = LlamaModel(ModelConfig.from_hf(TINY_HF))
    init_random_(m, 0)
    return m.eval()


@pytest.fixture(scope="module")
def report(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("trace") / "tiny.trace.json"
    return prof.profile_engine(model, BATCH, PROMPT, STEPS, trace_path=path, warmup_steps=1)


# ---------------------------------------------------------------------------------------------------
# A real profile of a tiny model

@pytest.mark.parametrize("kind", ["decode", "prefill"])
def test_every_phase_has_time_and_the_shares_add_up(report, kind):
    s = report[kind]
    assert list(s["phases"]) == list(PHASES)
    for name, p in s["phases"].items():
        assert p["ms"] > 0, f"{kind}: phase {name} recorded no time"
        assert p["share"] == pytest.approx(p["ms"] / s["step_ms"])
    shares = sum(p["share"] for p in s["phases"].values())
    assert shares <= 1 + 1e-6, f"{kind}: phases are disjoint parts of a step, their shares sum to {shares}"
    assert s["other_ms"] >= -1e-3
    assert sum(p["ms"] for p in s["phases"].values()) + s["other_ms"] == pytest.approx(s["step_ms"])
    assert s["steps"] == (STEPS if kind == "decode" else 1)
    assert s["tokens_per_step"] == (BATCH if kind == "decode" else BATCH * PROMPT)
    assert len(s["per_step_ms"]["step"]) == s["steps"]


def test_the_trace_is_valid_json_with_the_ranges(report):
    trace = json.loads(open(report["trace"]).read())
    names = [e.get("name") for e in trace["traceEvents"] if e.get("ph") == "X"]
    for name in PHASES:
        assert name in names, f"phase {name} is not in the trace"
    assert names.count("decode_step") == STEPS and names.count("prefill_step") == 1
    # each decode step holds each phase once (synchronous engine on a CPU)
    events = prof.load_trace(report["trace"])
    assert all(len(v) == STEPS for v in prof.phase_times(events, "decode_step")[1].values())
    assert prof.phase_breakdown(events, "decode_step")["forward"] == pytest.approx(
        report["decode"]["phases"]["forward"]["ms"])


def test_ops_top_ops_and_cpu_device_fields(report):
    s = report["decode"]
    assert s["top_ops"], "top operators must not be empty"
    selfs = [o["self_ms"] for o in s["top_ops"]]
    assert selfs == sorted(selfs, reverse=True) and selfs[0] > 0
    assert all(o["name"].startswith("aten::") and o["total_ms"] >= o["self_ms"] - 1e-6 for o in s["top_ops"])
    assert s["ops_per_step"] >= s["top_level_ops_per_step"] > 0
    assert 0 < s["outside_ops_ms"] < s["step_ms"]
    assert s["phases"]["forward"]["ops_ms"] > 0 and s["phases"]["schedule"]["ops_ms"] == 0  # no op in the scheduler
    # on a CPU there is no device activity: GPU fields are None, not zeros that look like a measurement
    assert report["device_type"] == "cpu" and s["device_ms"] is None and s["gpu_idle_share"] is None
    assert report["step_ms_unprofiled"] > 0 and report["cuda_graphs"] is False
    json.dumps(report)                                      # JSON-able as it stands


def test_profiling_is_off_again_afterwards(report):
    assert not profiling.enabled()


def test_async_scheduling_profile(model, tmp_path):
    """The GPU's default mode, run on the CPU: a decode step reads back the step before it, so a
    pipeline-fill step sits between the prefill and the profiled decode steps, and every profiled step
    still holds every phase (the prefill step reads back its own tokens)."""
    r = prof.profile_engine(model, 2, 4, 2, warmup_steps=1, trace_path=tmp_path / "a.json", async_scheduling=True)
    assert r["async_scheduling"] is True
    events = prof.load_trace(r["trace"])
    assert len(prof.step_ranges(events, prof.FILL_RANGE)) == 1
    for kind in ("decode_step", "prefill_step"):
        steps, per = prof.phase_times(events, kind)
        assert all(all(us > 0 for us in v) for v in per.values()), f"{kind}: a phase missing from a step"


def test_profile_engine_rejects_bad_sizes(model):
    for kw, field in ((dict(batch=0), "batch"), (dict(steps=True), "steps"), (dict(prompt_len=1.5), "prompt_len"),
                      (dict(warmup_steps=-1), "warmup_steps")):
        with pytest.raises(ValueError, match=field):
            prof.profile_engine(model, **{"batch": 1, **kw})


# ---------------------------------------------------------------------------------------------------
# Zero cost when off

def test_disabled_profiling_records_nothing(model, monkeypatch):
    calls = []
    real = torch.profiler.record_function

    def counting(name, *args):
        calls.append(name)
        return real(name, *args)
    monkeypatch.setattr(torch.profiler, "record_function", counting)
    engine = LLM(model, max_num_seqs=2, num_kv_blocks=16).engine
    for _ in range(2):
        engine.add_request([1, 2, 3], SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))
    assert not profiling.enabled()
    assert profiling.phase("forward") is profiling.phase("schedule"), "off: one shared no-op context"
    engine.step()
    engine.step()
    assert calls == [], f"profiling off, yet the engine called record_function for {calls}"
    profiling.enable()
    try:
        engine.step()
    finally:
        profiling.enable(False)
    assert sorted(calls) == sorted(PHASES), "on: one range per phase of a synchronous step"


# ---------------------------------------------------------------------------------------------------
# The trace arithmetic on hand-built events (times in microseconds)

def X(name, ts, dur, cat="user_annotation", tid=1, pid=1):
    return dict(ph="X", name=name, cat=cat, ts=ts, dur=dur, pid=pid, tid=tid)


def test_self_times_subtract_direct_children_only_on_the_same_thread():
    events = [X("step", 0, 100), X("forward", 10, 60), X("mm", 12, 20, "cpu_op"), X("inner", 14, 10, "cpu_op"),
              X("mm", 40, 25, "cpu_op"), X("argmax", 75, 4, "cpu_op"), X("sample", 75, 10),  # a child listed first
              X("worker", 20, 50, tid=2)]
    t = prof.self_times(events)
    assert t["step"] == (100, 30)                  # 100 - forward 60 - sample 10
    assert t["forward"] == (60, 15)                # 60 - the two mm
    assert t["mm"] == (45, 35)                     # (20 - inner 10) + 25
    assert t["sample"] == (10, 6) and t["argmax"] == (4, 4)
    assert t["worker"] == (50, 50)                 # another thread: nests in nothing here


def test_phase_breakdown_means_over_steps_inside_them_host_rows_only():
    events = [X("prefill_step", 0, 5000), X("schedule", 100, 200), X("forward", 400, 4000),
              X("decode_step", 6000, 1000), X("schedule", 6010, 90), X("forward", 6100, 700),
              X("sample", 6810, 100), X("mm", 6200, 300, "cpu_op"),
              X("forward", 6150, 650, "gpu_user_annotation", tid=7, pid=0),      # the GPU's copy of the range
              X("decode_step", 8000, 1400), X("schedule", 8010, 90), X("forward", 8100, 1100),
              X("sample", 9210, 100), X("forward", 8200, 500, tid=2)]             # another thread's range
    bd = prof.phase_breakdown(events, "decode_step", ("schedule", "forward", "sample", "readback"))
    assert bd == pytest.approx(dict(step=1.2, schedule=0.09, forward=0.9, sample=0.1, readback=0.0, other=0.11))
    assert prof.phase_breakdown(events, "prefill_step", ("forward",))["forward"] == pytest.approx(4.0)
    with pytest.raises(ValueError, match="step_name"):
        prof.phase_breakdown(events, "no_such_step")


def test_busy_time_is_a_clipped_union():
    assert prof.busy_us([(0, 10), (5, 15), (20, 30)], 0, 100) == 25      # overlap counted once
    assert prof.busy_us([(0, 10), (5, 15), (20, 30)], 8, 25) == 12       # clipped to [8, 25]
    assert prof.busy_us([(0, 50), (10, 20)], 0, 100) == 50               # nested interval adds nothing


def test_device_summary_of_a_gpu_like_trace():
    # two decode steps of 100 us; the GPU runs 3 kernels of 10 us in each (two overlap on two streams)
    events = []
    for k, t in enumerate((0, 100)):
        events += [X("decode_step", t, 100), X("cudaLaunchKernel", t + 5, 5, "cuda_runtime"),
                   X("cudaLaunchKernel", t + 15, 5, "cuda_runtime"), X("cudaGraphLaunch", t + 25, 5, "cuda_runtime"),
                   X("aten::mm", t + 4, 30, "cpu_op"),
                   X("gemm", t + 40, 10, "kernel", tid=7, pid=0), X("gemm", t + 45, 10, "kernel", tid=8, pid=0),
                   X("rmsnorm", t + 60, 10, "kernel", tid=7, pid=0)]
    s = prof.summarize_steps(events, "decode_step", tokens_per_step=4, phases=())
    assert s["device_ms"] == pytest.approx(0.025)           # 15 (union of the two gemms) + 10 per step
    assert s["gpu_idle_share"] == pytest.approx(0.75)
    assert s["launches_per_step"] == 3 and s["kernels_per_step"] == 3
    assert s["top_kernels"][0] == dict(name="gemm", ms=pytest.approx(0.02), calls_per_step=2)
    assert s["ms_per_token"] == pytest.approx(0.025)


# ---------------------------------------------------------------------------------------------------
# The command line

@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_model")
    (folder / "config.json").write_text(json.dumps(TINY_HF))
    return folder


def test_cli_profiles_and_writes_json(tiny_folder, tmp_path, capsys):
    out = tmp_path / "profile.json"
    code = main(["profile", "--model", str(tiny_folder), "--random-weights", "--device", "cpu", "--batch", "1,2",
                 "--prompt-len", "4", "--steps", "2", "--warmup-steps", "0", "--trace", str(tmp_path / "t.json"), "--json", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    for word in ("decode step", "prefill step", "forward", "top operators", "host time"):
        assert word in text
    data = json.loads(out.read_text())
    assert data["benchmark"] == "profile" and [r["batch"] for r in data["runs"]] == [1, 2]
    assert data["device"]["type"] == "cpu" and data["versions"]["torch"] == torch.__version__
    assert data["command"].startswith("python -m course_lib profile --model")
    for b in (1, 2):                                      # one trace per batch
        assert json.loads((tmp_path / f"t_b{b}.json").read_text())["traceEvents"]


@pytest.mark.parametrize("argv, flag", [
    (["--batch", "0"], "--batch"), (["--batch", "two"], "--batch"), (["--batch", "1,-3"], "--batch"),
    (["--steps", "0"], "--steps"), (["--steps", "x"], "--steps"), (["--prompt-len", "0"], "--prompt-len"),
    (["--warmup-steps", "-1"], "--warmup-steps"), (["--device", "tpu"], "--device"),
    (["--model", "no-such-model"], "--model"), (["--dtype", "int8"], "--dtype"),
    (["--cuda-graphs", "maybe"], "--cuda-graphs"),
])
def test_cli_bad_flags_exit_2_naming_the_flag(argv, flag, capsys):
    assert main(["profile", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and flag in err and len(err.strip().splitlines()) == 1, err
