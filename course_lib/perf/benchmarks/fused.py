"""``python -m course_lib bench fused``: the fused Day 9 kernels against the unfused torch ops they replace.

    python -m course_lib bench fused [--json PATH | --json-dir DIR]       # gpu_<device>_fused.json

Residual add + RMSNorm, SwiGLU's activation and RoPE + KV write do a few flops per byte: they are
memory-bound, so the yardstick is bandwidth. Each point counts the bytes the fused kernel must move
(every input read once, every output written once) and reports, for the kernel and for the torch ops
alike, those bytes / median time: GB/s, and its fraction of a device-to-device copy. The torch ops
really move more bytes than that (the intermediates), which is why they score lower.

Two timings per point (timers.time_ms): eager (triton's `do_bench`: includes the Python wrappers and
launches, what an eager step pays) and 16 calls back to back in one CUDA graph (kernels alone, what a
CUDA-graph decode step pays). A last
section times a whole decode step of each model, switch off vs on. Every point is checked against
its reference before it is timed. CUDA only.
"""
from __future__ import annotations

import functools
import math

import torch

from .. import timers
from ..harness import make_report, output_path, write_report
from ..roofline import copy_bandwidth
from ..shapes import fused_kernel_bytes

HELP = "the fused Day 9 kernels vs the torch ops they replace, and whole decode steps (CUDA)"

MODELS = ("qwen3-0.6b", "llama-3.2-1b")
TOKENS = (1, 16, 64, 256, 4096)          # decode-like batches, then a prefill-like chunk
DECODE_BATCHES, DECODE_CONTEXT = (1, 16, 64), 1024
TOL = {torch.bfloat16: 3e-2, torch.float16: 5e-3, torch.float32: 1e-5}   # as tests/test_kernels_fused.py
STEP_REL_ERR = 5e-2      # decode-step logits, on vs off: bf16 rounds the two orders differently


def torch_traffic(fn, *args) -> dict:
    """Run ``fn(*args)`` recording the aten ops it dispatches (views excluded: they move nothing):
    how many (each one a kernel launch on a GPU) and the bytes they read + write if no intermediate
    stayed in cache. A scatter (index_put_) counts the rows it writes, not its whole destination.
    Works on any device: it counts, it does not time."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    def nbytes(xs):
        return sum(t.nbytes for t in tree_leaves(xs) if isinstance(t, torch.Tensor))

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops, self.bytes = [], 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if not func.is_view:
                self.ops.append(func.__name__)
                if func._schema.is_mutable:               # in place: the destination is not read
                    written = args[2] if func.__name__.startswith("index_put") else args[0]
                    self.bytes += nbytes(args[1:]) + nbytes(written)
                else:
                    self.bytes += nbytes(args) + nbytes(kwargs) + nbytes(out)
            return out

    with Count() as count:
        fn(*args)
    return dict(ops=len(count.ops), bytes=count.bytes, names=count.ops)


def _close(got, ref, dtype) -> tuple[float, bool]:
    err = (got.float() - ref.float()).abs()
    return err.max().item(), bool((err <= TOL[dtype] * (1 + ref.float().abs())).all())


def kernel_pairs() -> dict:
    """name -> (fused Triton function, torch reference), imported on first use."""
    from ...kernels import (add_rmsnorm, add_rmsnorm_ref, rope_write_kv, rope_write_kv_ref, silu_mul,
                           silu_mul_ref)
    return {"add_rmsnorm": (add_rmsnorm, add_rmsnorm_ref), "silu_mul": (silu_mul, silu_mul_ref),
            "rope_write_kv": (rope_write_kv, rope_write_kv_ref)}


def make_inputs(cfg, n: int, dtype=torch.bfloat16, device="cuda", seed=0) -> dict[str, tuple]:
    """Each kernel's arguments at one layer of ``cfg`` over n tokens, shaped as the model makes them."""
    from ...layers.rotary import RotaryEmbedding

    g = torch.Generator(device=device).manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, device=device, dtype=dtype, generator=g)   # noqa: E731
    d, f, H, KVH, D = cfg.hidden_size, cfg.intermediate_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    qkv = rnd(n, (H + 2 * KVH) * D)                     # q, k, v as views of one buffer, as in the model
    q, k, v = (t.view(n, -1, D) for t in qkv.split([H * D, KVH * D, KVH * D], dim=-1))
    positions = torch.randint(0, 4096, (n,), device=device, generator=g)
    cos, sin = RotaryEmbedding(cfg)(positions, dtype)                           # (N, D) each
    blocks = math.ceil(n / 16) + 1                      # block size 16, some slots left unwritten
    slots = torch.randperm(blocks * 16, device=device, generator=g)[:n]
    return {"add_rmsnorm": (rnd(n, d), rnd(n, d), 1 + 0.1 * rnd(d), cfg.rms_norm_eps),
            "silu_mul": (rnd(n, 2 * f),),
            "rope_write_kv": (q, k, v, cos, sin, rnd(blocks, 16, KVH, D), rnd(blocks, 16, KVH, D), slots)}


def check_kernel(name: str, args: tuple) -> tuple[float, bool]:
    """Run the kernel and its reference on copies of what each one writes: (max |error|, within TOL)."""
    fused, ref = kernel_pairs()[name]
    if name != "rope_write_kv":
        got, want = fused(*args), ref(*args)               # add_rmsnorm returns (y, r): compare both
        if isinstance(got, tuple):
            got, want = torch.cat([t.flatten() for t in got]), torch.cat([t.flatten() for t in want])
        return _close(got, want, args[0].dtype)
    q, k, v, cos, sin, kc, vc, slots = args
    outs = []
    for fn in (fused, ref):                 # q is rotated in place and the caches written: copies
        kc2, vc2 = kc.clone(), vc.clone()
        outs.append(torch.cat([fn(q.clone(), k, v, cos, sin, kc2, vc2, slots).flatten(), kc2.flatten(),
                               vc2.flatten()]))
    return _close(*outs, q.dtype)


def kernel_cases(cfg, n: int, dtype=torch.bfloat16, device="cuda", seed=0) -> list[dict]:
    """The three fused kernels at one layer of ``cfg`` over n tokens: for each, the fused and the torch
    callables, the bytes the fused kernel moves, and (max |error|, ok) checked here once."""
    nbytes = fused_kernel_bytes(cfg, n, torch.finfo(dtype).bits // 8)
    cases = []
    for name, args in make_inputs(cfg, n, dtype, device, seed).items():
        fused, ref = kernel_pairs()[name]
        err, ok = check_kernel(name, args)
        cases.append(dict(kernel=name, bytes=nbytes[name], max_abs_err=err, ok=ok,
                          fused=functools.partial(fused, *args), torch=functools.partial(ref, *args)))
    return cases


def _eager_and_graph_ms(fn) -> tuple[float, float | None]:
    """(eager ms, ms per call of 16 back to back in one CUDA graph, or None): timers.time_ms."""
    t = timers.time_ms(fn, graph="back-to-back")
    return t["ms_eager"], t["ms_graph"]


def bench_kernels(model: str, n: int, copy_gbs: float, dtype=torch.bfloat16, device="cuda") -> list[dict]:
    """One row per kernel at n tokens of ``model``'s shape: times, GB/s and fraction of copy."""
    from ...models.registry import resolve_model

    cfg = resolve_model(model, need_weights=False).config
    rows = []
    for c in kernel_cases(cfg, n, dtype, device):
        row = dict(model=model, kernel=c["kernel"], tokens=n, dtype=str(dtype).removeprefix("torch."),
                   bytes=c["bytes"], max_abs_err=c["max_abs_err"], ok=c["ok"])
        for impl in ("fused", "torch"):
            ms, ms_graph = _eager_and_graph_ms(c[impl])
            row[f"ms_{impl}"], row[f"ms_graph_{impl}"] = ms, ms_graph
            row[f"gb_per_s_{impl}"] = c["bytes"] / ms / 1e6
            row[f"frac_of_copy_{impl}"] = row[f"gb_per_s_{impl}"] / copy_gbs
            if ms_graph is not None:
                row[f"gb_per_s_graph_{impl}"] = c["bytes"] / ms_graph / 1e6
                row[f"frac_of_copy_graph_{impl}"] = row[f"gb_per_s_graph_{impl}"] / copy_gbs
        # The engine replays decode steps as CUDA graphs, so the graph timing is the one that counts;
        # eager timing adds the Triton launcher's ~30 us of Python per call (bigger than the kernel).
        row["speedup_eager"] = row["ms_torch"] / row["ms_fused"]
        row["speedup"] = (row["ms_graph_torch"] / row["ms_graph_fused"]
                          if row["ms_graph_fused"] is not None and row["ms_graph_torch"] is not None
                          else row["speedup_eager"])
        rows.append(row)
    return rows


@torch.inference_mode()
def bench_decode_step(model_name: str, batches=DECODE_BATCHES, context=DECODE_CONTEXT,
                      dtype=torch.bfloat16, block_size=16, device="cuda") -> list[dict]:
    """A whole decode step (random weights, Triton paged attention, every sequence at ``context``):
    the model's forward with the switch off vs on, eager and replayed as a CUDA graph."""
    from ...kernels import paged_attention_triton
    from ...kv.paged import PagedAttentionContext, PagedKVCache
    from ...models.loader import load_model

    model = load_model(model_name, device=device, dtype=dtype, random_weights=True)
    cfg, rows = model.cfg, []
    g = torch.Generator(device=device).manual_seed(0)
    for batch in batches:
        nb = math.ceil(context / block_size)
        cache = PagedKVCache(cfg, batch * nb, block_size, device=device, dtype=dtype)
        cache.kv.normal_(generator=g)
        tables = torch.arange(batch * nb, device=device, dtype=torch.int32).view(batch, nb)
        slots = tables[:, (context - 1) // block_size].long() * block_size + (context - 1) % block_size
        ctx = PagedAttentionContext(cache, slots, tables,
                                    torch.full((batch,), context, device=device, dtype=torch.int32),
                                    torch.arange(batch + 1, device=device, dtype=torch.int32), 1,
                                    paged_attention_triton)
        ids = torch.randint(0, cfg.vocab_size, (1, batch), device=device, generator=g)
        positions = torch.full((1, batch), context - 1, device=device)
        row, logits = dict(model=model_name, batch=batch, context=context), {}
        for flag, name in ((False, "unfused"), (True, "fused")):
            model.use_fused_kernels(flag)
            logits[flag] = model(ids, positions, ctx).float()
            row[f"ms_{name}"], row[f"ms_graph_{name}"] = _eager_and_graph_ms(lambda: model(ids, positions, ctx))
        model.use_fused_kernels(False)
        row["rel_err"] = ((logits[True] - logits[False]).norm() / logits[False].norm()).item()
        row["speedup"] = row["ms_unfused"] / row["ms_fused"]
        if row["ms_graph_fused"] and row["ms_graph_unfused"]:
            row["speedup_graph"] = row["ms_graph_unfused"] / row["ms_graph_fused"]
        rows.append(row)
        del cache, ctx
        torch.cuda.empty_cache()
    return rows


def run(models=MODELS, tokens=TOKENS, decode=True, dtype=torch.bfloat16, json_path=None, log=print) -> dict:
    """Every point; returns the report (and writes it to ``json_path``). Importable from a notebook."""
    if not torch.cuda.is_available():
        raise ValueError("bench fused needs a CUDA GPU: under TRITON_INTERPRET=1 on a CPU the kernels "
                         "run in numpy, and their timings say nothing about a GPU")
    copy = copy_bandwidth()
    log(f"{torch.cuda.get_device_name()}: device-to-device copy {copy['gb_per_s']:.0f} GB/s")
    kernels = [r for m in models for n in tokens for r in bench_kernels(m, n, copy["gb_per_s"], dtype)]
    steps = [r for m in models for r in bench_decode_step(m, dtype=dtype)] if decode else []
    bad = [r for r in kernels if not r["ok"]] + [r for r in steps if not r["rel_err"] < STEP_REL_ERR]
    report = make_report("fused", torch.device("cuda"), dict(
        dtype=str(dtype).removeprefix("torch."), copy=copy, kernels=kernels, decode_step=steps,
        all_correct=not bad))
    if json_path:
        write_report(report, json_path)
    return report


def print_report(r: dict) -> None:
    print(f"{'model':>13} {'kernel':>13} {'N':>5} {'us fused':>8} {'us torch':>8} {'GB/s':>6} "
          f"{'of copy':>7} {'graph GB/s':>10} {'speedup':>7} {'ok':>3}")
    for k in r["kernels"]:
        print(f"{k['model']:>13} {k['kernel']:>13} {k['tokens']:>5} {1e3 * k['ms_fused']:>8.1f} "
              f"{1e3 * k['ms_torch']:>8.1f} {k['gb_per_s_fused']:>6.0f} {k['frac_of_copy_fused']:>7.1%} "
              f"{k.get('gb_per_s_graph_fused', float('nan')):>10.0f} {k['speedup']:>6.1f}x "
              f"{'yes' if k['ok'] else 'NO':>3}")
    nan = float("nan")
    for s in r["decode_step"]:
        print(f"decode step {s['model']} batch {s['batch']} context {s['context']}: "
              f"{s['ms_unfused']:.2f} -> {s['ms_fused']:.2f} ms eager ({s['speedup']:.2f}x), graph "
              f"{s['ms_graph_unfused'] or nan:.2f} -> {s['ms_graph_fused'] or nan:.2f} ms, "
              f"rel err {s['rel_err']:.1e}")


def add_arguments(p) -> None:
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated registry names")
    p.add_argument("--tokens", default=",".join(map(str, TOKENS)), help="comma-separated N")
    p.add_argument("--no-decode-step", action="store_true", help="kernels only")


def run_cli(args) -> int:
    from ..harness import device_info
    try:
        tokens = [int(t) for t in args.tokens.split(",")]
    except ValueError:
        raise ValueError(f"--tokens must be comma-separated integers, got {args.tokens!r}") from None
    if not torch.cuda.is_available():
        raise ValueError("bench fused needs a CUDA GPU")
    path = output_path(args, device_info("cuda"), "fused")
    result = run(args.models.split(","), tokens, not args.no_decode_step, json_path=path)
    print_report(result)
    print(f"wrote {path}" + ("" if result["all_correct"] else "; some points FAILED their check!"))
    return 0
