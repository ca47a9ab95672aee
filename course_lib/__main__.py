"""The command line: ``python -m course_lib <command> [options]``.

    generate   run one prompt through one model; print the text, or one JSON object with --json
    demo       the embedded model answers a few questions, then static vs continuous batching
    bench      run a benchmark (serving, suite, kernels, ...; `bench --help` lists them); one report each
    report     the README's performance table and data/results/perf.png, from data/results/*.json
    exercises  the learner's copies of the notebooks, each exercise's body replaced by a stub
    notebooks  --sync-setup: write the one shared setup cell into every notebook

A command is a ``cmd_<name>(args) -> exit code`` function plus a sub-parser in ``build_parser``; add
``bench`` the same way. Bad input (a value a learner typed) exits with code 2 and one line on stderr,
using the library's own checks, so the rules live in one place.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

import torch

from .config import SamplingParams
from .generate import GenerationResult, check_generate_args, generate
from .models import load_model, resolve_model
from .models.registry import DEFAULT_MODEL, check_tokenizer_files
from .perf.device import pick_device_dtype
from .tokenizer import Tokenizer

DTYPES = ("float32", "bfloat16", "float16")
DEMO_PROMPTS = ("What is the capital of France?", "Name three primary colors.", "What is 2 + 2?")


class InputError(Exception):
    """A bad value from the command line; ``main`` prints it on one line and exits with code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):       # argparse's own errors: one line and exit code 2, like ours
        raise InputError(f"{message} (see `python -m {self.prog} --help`)")


def _add_device_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if present)")
    p.add_argument("--dtype", choices=DTYPES, default=None,
                   help="default: float32 on CPU; on CUDA bfloat16 (compute capability >= 8) else float16")


def device_dtype(device: str | None, dtype: str | None):
    """(torch.device, torch.dtype) from the flags; None picks the default for the device."""
    dev, auto_dtype = pick_device_dtype(device)
    return dev, getattr(torch, dtype) if dtype else auto_dtype


def load_tokenizer(model_name: str):
    """The model's tokenizer; an unknown model name fails here, before any weights load."""
    folder = resolve_model(model_name).folder
    check_tokenizer_files(folder)
    return Tokenizer(folder)


def check_text(flag: str, text: str) -> str:
    """``text`` if it is valid UTF-8. Bytes that are not reach ``sys.argv`` as surrogate escapes,
    which the tokenizer cannot take: reject them here rather than guess what was meant."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        bad, at = os.fsencode(text[e.start:e.end]), len(os.fsencode(text[:e.start]))
        raise InputError(f"{flag} must be valid UTF-8 text, got the undecodable bytes {bad!r} "
                         f"at byte {at}") from None
    return text


def sampling_params(**fields) -> SamplingParams:
    """SamplingParams from flag values; a bad value's message also names the flag (field a_b: --a-b)."""
    try:
        return SamplingParams(**fields)
    except (TypeError, ValueError) as e:
        field = str(e).split(" ", 1)[0]
        raise InputError(f"{e} (flag --{field.replace('_', '-')})") from None


def run_one(model, tok, prompt_ids: list[int], params: SamplingParams,
            use_cache: bool = True) -> GenerationResult:
    """Generate for one prompt, stopping at the tokenizer's EOS."""
    return generate(model, prompt_ids, params.max_tokens, use_cache=use_cache,
                    temperature=params.temperature, seed=params.seed, stop_token_ids=tok.eos_token_ids)


def _stats(result: GenerationResult) -> str:
    n, secs = len(result.token_ids), sum(result.step_times)
    return f"[{n} tokens, {secs:.2f} s, {result.tokens_per_s:.1f} tokens/s]"


def cmd_generate(args) -> int:
    name = DEFAULT_MODEL if args.model is None else args.model
    try:
        # Cheapest checks first: flags, then the name and the prompt, and only then the weights.
        params = sampling_params(temperature=args.temperature, max_tokens=args.max_tokens, seed=args.seed)
        device, dtype = device_dtype(args.device, args.dtype)
        prompt = check_text("--prompt", args.prompt)
        tok = load_tokenizer(name)
        prompt_ids = tok.encode(prompt, chat=args.chat)
        model = load_model(name, device=device, dtype=dtype)
        # The context-length check, before any forward pass (an 8k prompt on a CPU takes a while).
        check_generate_args(model, prompt_ids, params.max_tokens, params.temperature)
    except (ValueError, OSError) as e:
        raise InputError(str(e)) from None
    result = run_one(model, tok, prompt_ids, params, use_cache=not args.no_cache)
    text = tok.decode(result.token_ids)
    if args.json:
        print(json.dumps({"model": name, "prompt_token_ids": result.prompt_token_ids,
                          "token_ids": result.token_ids, "text": text,
                          "seconds": sum(result.step_times), "tokens_per_s": result.tokens_per_s}))
    else:
        print(text)
        print(_stats(result))
    return 0


def demo_completions(model, tok, args) -> None:
    """Greedy chat answers to a few short questions, with the decode speed of each."""
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens)
    for prompt in DEMO_PROMPTS:
        result = run_one(model, tok, tok.encode(prompt, chat=True), params)
        print(f"> {prompt}\n{tok.decode(result.token_ids)}\n{_stats(result)}\n")


def demo_batching(model, tok, args) -> None:
    from .perf.benchmarks.serving import demo_batching as run
    run(model, tok, args)


# Each part of the demo is a function (model, tokenizer, args) -> None; append new parts here.
DEMO_PARTS = [demo_completions, demo_batching]


def cmd_demo(args) -> int:
    try:
        sampling_params(max_tokens=args.max_tokens)
        device, dtype = device_dtype(args.device, args.dtype)
        tok = load_tokenizer(DEFAULT_MODEL)
        model = load_model(DEFAULT_MODEL, device=device, dtype=dtype)
    except (ValueError, OSError) as e:
        raise InputError(str(e)) from None
    print(f"model {DEFAULT_MODEL} on {model.device} in {model.dtype}\n")
    t0 = time.perf_counter()
    for part in DEMO_PARTS[:1] if args.no_batching else DEMO_PARTS:
        part(model, tok, args)
    print(f"demo done in {time.perf_counter() - t0:.1f} s")
    return 0


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    """warnings on the command line: one line, no source excerpt (``--temperature 1e-39`` warns)."""
    print(f"warning: {message}", file=sys.stderr if file is None else file)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="course_lib", description="30 Days of LLM Inference: the course library.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    g = sub.add_parser("generate", help="complete one prompt")
    g.add_argument("--model", default=None,
                   help=f"registry name, HF folder or hub id (default: the embedded {DEFAULT_MODEL})")
    g.add_argument("--prompt", required=True)
    g.add_argument("--max-tokens", type=int, default=64)
    g.add_argument("--temperature", type=float, default=0.0, help="0 is greedy")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    g.add_argument("--json", action="store_true", help="print one JSON object")
    g.add_argument("--no-cache", action="store_true", help="re-run the whole sequence every step")
    _add_device_args(g)
    g.set_defaults(func=cmd_generate)

    d = sub.add_parser("demo", help="the embedded model answers a few questions")
    d.add_argument("--max-tokens", type=int, default=32)
    d.add_argument("--no-batching", action="store_true", help="skip the batching comparison")
    _add_device_args(d)
    d.set_defaults(func=cmd_demo)

    from .perf.benchmarks import add_bench_parser        # `bench <name>`: perf/benchmarks/
    add_bench_parser(sub, device_args=_add_device_args)
    from .perf.report import add_report_parser
    add_report_parser(sub)
    from .exercises import add_exercises_parser
    add_exercises_parser(sub)
    from .notebook_setup import add_notebooks_parser
    add_notebooks_parser(sub)
    from .perf.profile import add_profile_parser
    add_profile_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    shown, warnings.showwarning = warnings.showwarning, _one_line_warning
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = shown


if __name__ == "__main__":
    sys.exit(main())
