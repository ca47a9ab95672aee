"""``python -m course_lib`` through a real subprocess: what a learner types, what they get back."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from course_lib.config import SamplingParams
from course_lib.generate import generate

ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m"


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    # One thread here and in `smol` below: see test_models.one_thread (and the same thread count
    # on both sides keeps the float sums, hence the greedy picks, identical).
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "course_lib", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def smol(smol_model, smol_tokenizer):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield smol_model, smol_tokenizer                    # loaded once (conftest.py)
    torch.set_num_threads(before)


@pytest.mark.parametrize("prompt,extra,temperature,seed", [
    ("The capital of France is", [], 0.0, None),
    ("What is the capital of France?", ["--chat", "--no-cache"], 0.0, None),   # no-cache == cached
    ("Once upon a time", [], 0.8, 3),                                           # seeded sampling
])
def test_generate_json_matches_library(smol, prompt, extra, temperature, seed):
    model, tok = smol
    seed_args = ["--seed", str(seed)] if seed is not None else []
    proc = run_cli("generate", "--model", MODEL, "--prompt", prompt, "--max-tokens", "12",
                   "--temperature", str(temperature), "--json", *seed_args, *extra)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)                     # exactly one JSON object on stdout
    assert {"prompt_token_ids", "token_ids", "text"} <= out.keys()
    chat = "--chat" in extra
    assert out["prompt_token_ids"] == tok.encode(prompt, chat=chat)
    assert out["text"] == tok.decode(out["token_ids"])
    expected = generate(model, out["prompt_token_ids"], 12, temperature=temperature, seed=seed,
                        stop_token_ids=tok.eos_token_ids)
    assert out["token_ids"] == expected.token_ids
    assert out["tokens_per_s"] > 0


def test_generate_text_output(smol):
    model, tok = smol
    proc = run_cli("generate", "--prompt", "What is the capital of France?", "--chat",
                   "--max-tokens", "16", "--temperature", "0")
    assert proc.returncode == 0, proc.stderr
    *text_lines, stats = proc.stdout.rstrip("\n").split("\n")
    expected = generate(model, tok.encode("What is the capital of France?", chat=True), 16,
                        stop_token_ids=tok.eos_token_ids)
    assert "\n".join(text_lines) == tok.decode(expected.token_ids)
    m = re.fullmatch(r"\[(\d+) tokens, ([\d.]+) s, ([\d.]+) tokens/s\]", stats)
    assert m, stats
    assert int(m.group(1)) == len(expected.token_ids)


def test_demo_answers_questions():
    proc = run_cli("demo", "--max-tokens", "16", "--no-batching")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("tokens/s]") == 3
    assert "> What is the capital of France?\nThe capital of France is Paris." in proc.stdout


# --- bad values at the door (issue 11): exit code 2, one line on stderr, no traceback ------------------

def one_error_line(proc: subprocess.CompletedProcess, warnings_too: bool = False) -> str:
    """The one stderr line of a run that exited 2 (``warnings_too``: besides "warning: " lines)."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-500:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    lines = [ln for ln in proc.stderr.strip().splitlines() if not (warnings_too and ln.startswith("warning: "))]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Broken model folders: only a config.json; weights but no tokenizer; a config without heads."""
    from course_lib.models.registry import KNOWN_MODELS, resolve_model
    cfg = KNOWN_MODELS[MODEL][0]
    root = tmp_path_factory.mktemp("models")
    made = {}
    for name, config in (("only_config", cfg), ("no_tokenizer", cfg),
                         ("no_heads", {k: v for k, v in cfg.items() if k != "num_attention_heads"})):
        (root / name).mkdir()
        (root / name / "config.json").write_text(json.dumps(config))
        made[name] = root / name
    weights = Path(resolve_model(MODEL).folder) / "model.safetensors"
    (made["no_tokenizer"] / "model.safetensors").symlink_to(weights)
    return made


GENERATE = ["generate", "--model", MODEL, "--prompt", "Hello", "--max-tokens", "2"]


@pytest.mark.parametrize("args,message", [
    (["--seed", "18446744073709551616"],
     r"seed must be None or an integer in \[0, 2\*\*64 - 1\], got 18446744073709551616 \(flag --seed\)"),
    (["--seed", "-1"], r"seed must be .*got -1 \(flag --seed\)"),
    (["--temperature", "inf"], r"temperature must be a number >= 0 \(0 means greedy\) and finite, got inf "
                               r"\(flag --temperature\)"),
    (["--temperature", "nan"], r"temperature must be a number >= 0 \(0 means greedy\), got nan"),
    (["--temperature", "warm"], r"argument --temperature: invalid float value: 'warm'"),
    (["--max-tokens", "0"], r"max_tokens must be an integer >= 1, got 0 \(flag --max-tokens\)"),
    (["--prompt", "Hi \udcff\udcfe"],          # what bytes b"\xff\xfe" in argv become in sys.argv
     r"--prompt must be valid UTF-8 text, got the undecodable bytes b'\\xff\\xfe' at byte 3"),
    (["--model", "./no_such_dir"], r"model folder './no_such_dir' does not exist \(no such folder\)"),
    (["--model", "{only_config}"], r"no \*\.safetensors in .*only_config$"),
    (["--model", "{no_tokenizer}"], r"no tokenizer files in .*no_tokenizer \(looked for tokenizer.json"),
    (["--model", "{no_heads}"],
     r".*no_heads/config.json \(model_type 'llama'\) is missing 'num_attention_heads'"),
    (["--device", "tpu"], r"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got 'tpu'"),
])
def test_generate_rejects_at_the_door(folders, args, message):
    args = [a.format(**folders) for a in args]
    defaults = dict(zip(GENERATE[1::2], GENERATE[2::2]))
    defaults.update(zip(args[::2], args[1::2]))
    line = one_error_line(run_cli("generate", *[x for kv in defaults.items() for x in kv], timeout=120))
    assert re.fullmatch(rf"error: {message}.*", line), line


@pytest.mark.parametrize("args,message", [
    (["--kv-memory-gb", "-1"], r"--kv-memory-gb must be a positive, finite number of GiB, got -1.0"),
    (["--kv-memory-gb", "nan"], r"--kv-memory-gb must be a positive, finite number of GiB, got nan"),
    (["--num-requests", "0"], r"--num-requests must be an integer >= 1, got 0"),
    (["--max-num-seqs", "0"], r"--max-num-seqs must be an integer >= 1, got 0"),
    (["--cap", "-3"], r"--cap must be an integer >= 1, got -3"),
    (["--hf-time-limit-s", "inf"], r"--hf-time-limit-s must be a positive, finite number of seconds, got inf"),
    (["--hf-num-requests", "hf-static=0"], r"--hf-num-requests: hf_num_requests must map"),
    (["--systems", "continuous,fast"],
     r"--systems: systems must be chosen from \['hf-static'.*got 'continuous,fast'"),
    (["--workload", "nope"], r"--workload must be one of \["),
    (["--model", "./no_such_dir"], r"model folder './no_such_dir' does not exist"),
])
def test_bench_rejects_at_the_door(args, message):
    # --random-weights: nothing would download even if a check let the run start.
    line = one_error_line(run_cli("bench", "--random-weights", *args, timeout=120))
    assert re.fullmatch(rf"error: {message}.*", line), line


def test_tiny_temperature_warns_on_one_line_and_runs():
    proc = run_cli(*GENERATE, "--temperature", "1e-39", "--seed", "0", "--json", timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    warns = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning: ")]
    assert warns == ["warning: temperature=1e-39 is below 0.01, which gives inf/NaN probabilities; using "
                     "temperature=0.01 (0 means greedy)"], proc.stderr
    assert len(json.loads(proc.stdout)["token_ids"]) >= 1


# A few flags with arbitrary values through real subprocesses. The model is a missing folder, checked
# after the flags: every run exits 2 in the time an import takes, and the one line says which came first.
FLAG_VALUES = {"--temperature": st.one_of(st.floats().map(repr), st.text(max_size=6),
                                          st.sampled_from(["1e-39", "0", "1", "-0.0", "inf", "1e400"])),
               "--seed": st.one_of(st.integers().map(str), st.integers(0, 2**64 + 5).map(str),
                                   st.text(max_size=6)),
               "--max-tokens": st.one_of(st.integers(-3, 10**30).map(str), st.text(max_size=4))}


def flag_is_valid(flag: str, text: str) -> bool:
    """What the CLI should decide, from argparse's type and SamplingParams (the rules live there)."""
    import warnings
    field, parse = {"--temperature": ("temperature", float), "--seed": ("seed", int),
                    "--max-tokens": ("max_tokens", int)}[flag]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            SamplingParams(**{field: parse(text)})
    except (ValueError, TypeError):
        return False
    return True


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck),
          phases=[Phase.explicit, Phase.generate])          # no shrinking: each example is a subprocess
@given(values=st.fixed_dictionaries({}, optional=FLAG_VALUES),
       prompt=st.binary(min_size=1, max_size=6).filter(lambda b: b"\0" not in b))
def test_cli_flags_property(values, prompt):
    args = [f"{flag}={text}" for flag, text in values.items() if "\0" not in text]
    # --flag=value: a value that starts with "-" stays a value
    proc = run_cli("generate", "--model", "./no_such_dir", "--prompt=" + os.fsdecode(prompt), *args,
                   timeout=120)
    line = one_error_line(proc, warnings_too=True)   # a valid tiny --temperature warns, then the folder fails
    bad = [f for f, t in values.items() if "\0" not in t and not flag_is_valid(f, t)]
    try:
        prompt.decode("utf-8")
    except UnicodeDecodeError:
        bad.append("--prompt")
    if not bad:
        assert line.startswith("error: model folder './no_such_dir' does not exist"), (values, line)
    else:
        names = {f: (f, f.lstrip("-").replace("-", "_")) for f in bad}
        assert any(n in line for f in bad for n in names[f]), (values, prompt, line)
        assert "no_such_dir" not in line, line
