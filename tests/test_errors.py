"""Bad input fails early with one clear message naming the field and what is allowed, both from the
command line (exit code 2, one line on stderr, no traceback) and from Python (ValueError)."""
import math
import re

import pytest

from course_lib.config import SamplingParams
from course_lib.generate import generate
from course_lib.models import load_model, resolve_model
from test_cli import run_cli

MODEL = "smollm2-135m"
CONTEXT = 8192                       # SmolLM2's max_position_embeddings
LONG_PROMPT = " hello" * 8190        # 8190 tokens: + 10 new tokens > 8192


@pytest.fixture(scope="module")
def smol(smol_model, smol_tokenizer):
    return smol_model, smol_tokenizer                  # loaded once (conftest.py)


# --- the command line -------------------------------------------------------------------------------

@pytest.mark.parametrize("args,field", [
    (["--model", "no-such-model"], "model must be one of"),
    (["--prompt", ""], "prompt must be a non-empty string"),
    (["--max-tokens", "0"], "max_tokens must be an integer >= 1, got 0"),
    (["--temperature", "-0.5"], r"temperature must be a number >= 0 \(0 means greedy\), got -0.5"),
    (["--prompt", LONG_PROMPT, "--max-tokens", "10"],
     rf"prompt length \(8190\) \+ max_tokens \(10\) must be <= the model's context length {CONTEXT}"),
])
def test_cli_rejects_bad_input(args, field):
    defaults = {"--model": MODEL, "--prompt": "Hello", "--max-tokens": "4"}
    for flag, value in zip(args[::2], args[1::2]):
        defaults[flag] = value
    # A short timeout: each of these must fail before the model runs (an 8k-token prompt would not).
    proc = run_cli("generate", *[x for kv in defaults.items() for x in kv], timeout=120)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert re.match(rf"error: {field}", lines[0]), lines[0]
    assert proc.stdout == ""


def test_cli_rejects_unknown_command():
    proc = run_cli("no-such-command")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "invalid choice: 'no-such-command'" in proc.stderr


# --- the Python API ----------------------------------------------------------------------------------

def test_unknown_model_name():
    for call in (resolve_model, load_model):
        with pytest.raises(ValueError, match=r"model must be one of \['llama-3.2-1b', 'qwen3-0.6b', "
                                             r"'smollm2-135m'\].*got 'no-such-model'"):
            call("no-such-model")


def test_empty_prompt(smol):
    model, tok = smol
    with pytest.raises(ValueError, match="prompt must be a non-empty string, got ''"):
        tok.encode("")
    with pytest.raises(ValueError, match="prompt must be a non-empty string or a non-empty list of token ids"):
        generate(model, [], 4)


@pytest.mark.parametrize("kwargs,message", [
    (dict(max_new_tokens=0), "max_tokens must be an integer >= 1, got 0"),
    (dict(max_new_tokens=2.0), "max_tokens must be an integer >= 1, got 2.0"),
    (dict(max_new_tokens=4, temperature=-1.0), "temperature must be a number >= 0 .*got -1.0"),
    (dict(max_new_tokens=4, temperature=math.nan), "temperature must be a number >= 0 .*got nan"),
])
def test_generate_rejects_bad_arguments(smol, kwargs, message):
    model, tok = smol
    with pytest.raises(ValueError, match=message):
        generate(model, tok.encode("Hello"), **kwargs)


def test_prompt_token_ids_out_of_vocab(smol):
    model, _ = smol
    with pytest.raises(ValueError, match=r"prompt token ids must be integers in \[0, 49152\), got \[49152, -1\]"):
        generate(model, [1, 49152, -1], 4)


def test_prompt_longer_than_context_fails_before_the_model_runs(smol, monkeypatch):
    model, tok = smol
    prompt_ids = tok.encode(LONG_PROMPT)
    assert len(prompt_ids) == 8190 and model.cfg.max_position_embeddings == CONTEXT

    def forward_must_not_run(*args, **kwargs):
        raise AssertionError("forward ran")
    monkeypatch.setattr(model, "forward", forward_must_not_run)
    too_long = rf"prompt length \(8190\) \+ max_tokens \(10\) must be <= the model's context length {CONTEXT}"
    with pytest.raises(ValueError, match=too_long):
        generate(model, prompt_ids, 10)
    # The same prompt with room for the new tokens is accepted: the limit is prompt + max_tokens.
    with pytest.raises(AssertionError, match="forward ran"):
        generate(model, prompt_ids, CONTEXT - 8190)


# --- SamplingParams ---------------------------------------------------------------------------------

@pytest.mark.parametrize("field,value,allowed", [
    ("temperature", -0.1, "a number >= 0"),
    ("temperature", math.nan, "a number >= 0"),
    ("top_p", 0.0, "in (0, 1]"),
    ("top_p", 1.5, "in (0, 1]"),
    ("top_p", -0.2, "in (0, 1]"),
    ("top_k", -2, "-1 (disabled) or an integer >= 1"),
    ("max_tokens", 0, "an integer >= 1"),
    ("max_tokens", -5, "an integer >= 1"),
    ("n", 0, "an integer >= 1"),
])
def test_sampling_params_rejects(field, value, allowed):
    message = rf"^{field} must be {re.escape(allowed)}.*, got {re.escape(repr(value))}$"
    with pytest.raises(ValueError, match=message):
        SamplingParams(**{field: value})


def test_sampling_params_accepts_the_edges():
    p = SamplingParams(temperature=0, top_p=1.0, top_k=-1, max_tokens=1, n=1)
    assert p.greedy
    SamplingParams(temperature=2.0, top_p=1e-6, top_k=1)
