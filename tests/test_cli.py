"""``python -m course_lib`` through a real subprocess: what a learner types, what they get back."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from course_lib.generate import generate
from course_lib.models import load_model
from course_lib.tokenizer import Tokenizer

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
def smol():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_model(MODEL), Tokenizer.from_model(MODEL)
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
