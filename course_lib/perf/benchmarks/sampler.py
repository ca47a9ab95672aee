"""``python -m course_lib bench sampler``: what one sampling step costs (Day 06), the engine's batched
``Sampler`` per setting against the per-request reference loop, batch 1..256.

    python -m course_lib bench sampler [--vocab 128256] [--batches 1,16,64,256] [--repeats 20]
                                       [--dtype float32] [--device cuda]
                                       [--json PATH | --json-dir DIR]   # <device>_sampler[-<dtype>].json

The workload is notebook 06 section 4's: every row has a 32-token prompt and the tokens it sampled so
far (one more per timed step), random logits ``3 * randn(B, V)`` (the values do not change the
work), no seeds. The logits are float32 by default (the strictest case: twice the bytes to read);
``--dtype bfloat16`` gives them in the dtype the engine's lm_head hands the Sampler for a bf16 model. Settings, each the same for every row of the batch:

    greedy                temperature 0
    temperature           temperature 0.8
    filters               temperature 0.8, top-k 50, top-p 0.9, min-p 0.05
    filters+penalties     the same + repetition 1.2, frequency 0.5, presence 0.5
    top-p+penalties       notebook 06's setting: temperature 0.8, top-p 0.9, the three penalties

A point is the median wall time of ``--repeats`` synchronous calls (device synchronised before and
after each, so host work and launches count: the engine's sampler runs outside the CUDA graphs),
after three untimed calls; ``ms_pipelined`` is the median of the same number of runs of 10 calls
back to back, per call (max(host, device): the cost when the host does not wait for each step).
``loop`` rows time the reference (`apply_penalties` + `sample`, one
request at a time) on the top-p+penalties setting. ``stage`` rows (on CUDA) time pieces of a step
alone: the top-50 candidates (``torch.topk`` against kernels/topk.py's ``top_candidates``, the
Sampler's) and the token counts' update, ``index_put_`` with accumulate (it sorts its indices)
against the flat ``index_add_`` the Sampler uses. Issue 12's targets at batch 256 over Llama 3's
128,256-token vocabulary on a GPU: greedy or temperature-only under 0.1 ms, filters with penalties
under 0.5 ms.
"""
from __future__ import annotations

import statistics

import torch

from ..harness import device_info, make_report, output_path, progress, write_report
from ..timers import Timer

HELP = "one sampling step (Day 06): the batched Sampler per setting vs a per-request loop, batch 1..256"


def settings() -> dict:
    from ...config import SamplingParams
    pen = dict(repetition_penalty=1.2, frequency_penalty=0.5, presence_penalty=0.5)
    filt = dict(temperature=0.8, top_k=50, top_p=0.9, min_p=0.05)
    return {"greedy": SamplingParams(temperature=0, max_tokens=4096),
            "temperature": SamplingParams(temperature=0.8, max_tokens=4096),
            "filters": SamplingParams(**filt, max_tokens=4096),
            "filters+penalties": SamplingParams(**filt, **pen, max_tokens=4096),
            "top-p+penalties": SamplingParams(temperature=0.8, top_p=0.9, **pen, max_tokens=4096)}


def make_state(B: int, vocab: int, params, device, seed: int = 0, dtype=torch.float32):
    """(logits (B, V) on ``device``, prompts as lists, empty output histories, a Sampler holding the
    same B rows). The Sampler gets the Triton argmax where the engine would use it."""
    from ...engine.model_runner import triton_usable
    from ...layers.batch_sampler import Sampler
    g = torch.Generator().manual_seed(seed)
    prompts = torch.randint(0, vocab, (B, 32), generator=g).tolist()
    argmax = None
    if triton_usable(device):
        from ...kernels.argmax import argmax
    sampler = Sampler(vocab, device, (), capacity=B, argmax=argmax)
    for i, p in enumerate(prompts):
        sampler.add(i, params, p)
    return (3 * torch.randn(B, vocab, generator=g)).to(device, dtype), prompts, [[] for _ in range(B)], sampler


def batched_step(logits, prompts, outputs, sampler):
    return sampler(logits, list(range(len(prompts)))).tokens


def loop_step(logits, prompts, outputs, sampler, params):
    from ...layers.sampler import apply_penalties, sample
    tokens = []
    for i in range(len(prompts)):
        x = apply_penalties(logits[i:i + 1], [prompts[i]], [outputs[i]], [params])
        tokens.append(sample(x, [params], [None])[0])
    tokens = torch.cat(tokens)
    for out, t in zip(outputs, tokens.tolist()):
        out.append(t)
    return tokens


def stage_steps(vocab: int) -> dict:
    """The stages timed alone: name -> step(logits, prompts, outputs, sampler)."""
    def index_put(logits, prompts, outputs, sampler):
        rows = torch.arange(len(logits), device=logits.device)
        counts = sampler.counts
        counts.index_put_((rows, rows % vocab), torch.ones_like(rows, dtype=torch.int32), accumulate=True)

    def index_add(logits, prompts, outputs, sampler):
        rows = torch.arange(len(logits), device=logits.device)
        sampler.counts.view(-1).index_add_(0, rows * vocab + rows % vocab, torch.ones_like(rows, dtype=torch.int32))
    from ...kernels.topk import top_candidates                   # CUDA only, as the stage rows
    return {"top-50: torch.topk": lambda x, *_: x.topk(50, dim=-1),
            "top-50: top_candidates": lambda x, *_: top_candidates(x, 50),
            "counts: index_put_": index_put, "counts: index_add_": index_add}


def time_point(step, state, device, repeats: int, warmup: int = 3, run: int = 10) -> dict:
    """``ms``: the median of ``repeats`` synchronous calls (host work, launches, the device's work
    and the final sync, one after the other); ``ms_pipelined``: the median over ``repeats`` of
    ``run`` calls back to back / ``run``: a step's cost when the host does not wait for each one
    (the engine syncs once per step, after more work than the sampler), max(host, device) per call."""
    for _ in range(warmup):
        step(*state)
    times, piped = [], []
    for _ in range(repeats):
        with Timer(device) as t:
            step(*state)
        times.append(t.elapsed * 1e3)
    for _ in range(repeats if run > 1 else 0):
        with Timer(device) as t:
            for _ in range(run):
                step(*state)
        piped.append(t.elapsed * 1e3 / run)
    out = dict(ms=statistics.median(times), ms_min=min(times), ms_max=max(times), repeats=repeats)
    if piped:
        out["ms_pipelined"] = statistics.median(piped)
    return out


def run(vocab: int, batches, repeats: int, device, loop_batches=None, log=print, dtype=torch.float32) -> dict:
    device = torch.device(device)
    torch.set_grad_enabled(False)
    cases = settings()
    loop_batches = batches if loop_batches is None else loop_batches
    rows = []
    stages = stage_steps(vocab) if device.type == "cuda" else {}    # the Triton path's pieces
    todo = ([(name, B) for B in batches for name in cases] + [("loop", B) for B in loop_batches]
            + [(name, B) for B in batches for name in stages])
    bar = progress(len(todo), "sampler points", unit="point")
    for name, B in todo:
        params = cases["filters+penalties" if name in stages else "top-p+penalties" if name == "loop" else name]
        state = make_state(B, vocab, params, device, dtype=dtype)
        step = (stages[name] if name in stages else (lambda *s: loop_step(*s, params)) if name == "loop"
                else batched_step)
        impl = "stage" if name in stages else "per-request loop" if name == "loop" else "batched Sampler"
        row = dict(impl=impl, setting="top-p+penalties" if name == "loop" else name, batch=B,
                   **time_point(step, state, device, repeats if name != "loop" or B <= 64 else max(3, repeats // 4),
                                run=1 if name == "loop" else 10))
        rows.append(row)
        bar.update()
        del state
    bar.close()
    for r in rows:
        piped = f", pipelined {r['ms_pipelined']:.3f}" if "ms_pipelined" in r else ""
        log(f"{r['impl']:>16} {r['setting']:>22} batch {r['batch']:>3}: {r['ms']:8.3f} ms "
            f"(min {r['ms_min']:.3f}, max {r['ms_max']:.3f}{piped})")
    return dict(vocab=vocab, batches=list(batches), repeats=repeats, logits_dtype=str(dtype).removeprefix("torch."),
                inputs="32-token prompts, one more output token per step, logits 3*randn(B, V), no seeds",
                settings={k: {f: getattr(p, f) for f in ("temperature", "top_k", "top_p", "min_p",
                                                          "repetition_penalty", "frequency_penalty",
                                                          "presence_penalty")} for k, p in cases.items()},
                rows=rows)


def _ints(flag: str, text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(f"{flag} must be comma-separated integers, got {text!r}") from None
    if not out or min(out) < 1:
        raise ValueError(f"{flag} must be positive integers, got {text!r}")
    return out


def add_arguments(p) -> None:
    p.add_argument("--vocab", type=int, default=128256, help="vocabulary size (default Llama 3's 128,256)")
    p.add_argument("--batches", default="1,4,16,64,256", help="comma-separated batch sizes")
    p.add_argument("--loop-batches", default=None, help="batches for the per-request loop (default: --batches)")
    p.add_argument("--repeats", type=int, default=20, help="timed calls per point (median reported)")
    from ...engine.llm import DTYPES
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES),
                   help="the logits' dtype (default float32; bfloat16 is what a bf16 model's lm_head gives)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if present)")


def run_cli(args) -> int:
    batches = _ints("--batches", args.batches)
    loops = batches if args.loop_batches is None else _ints("--loop-batches", args.loop_batches)
    if args.vocab < 2:
        raise ValueError(f"--vocab must be an integer >= 2, got {args.vocab}")
    if args.repeats < 1:
        raise ValueError(f"--repeats must be an integer >= 1, got {args.repeats}")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dev = device_info(device)
    from ...engine.llm import DTYPES
    dtype = DTYPES[args.dtype]
    report = make_report("sampler", dev, run(args.vocab, batches, args.repeats, device, loops, dtype=dtype))
    path = output_path(args, dev, "sampler" if dtype == torch.float32 else f"sampler-{str(dtype).removeprefix('torch.')}")
    if path is not None:
        write_report(report, path)
        print(f"wrote {path}")
    return 0
