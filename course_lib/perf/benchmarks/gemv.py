"""``python -m course_lib bench gemv``: decode at batch 1 (Day 14), the GEMV kernel and the Triton
argmax against cuBLAS and torch, on the weight shapes of real models.

    python -m course_lib bench gemv [--no-sweep] [--json PATH | --json-dir DIR]   # gpu_<device>_gemv.json

- ``gemv``: every distinct matrix of a decoder step (qkv, o, gate_up, down, LM head) of each model,
  one row of input, bf16: cuBLAS (``F.linear``), the kernel with its default tiles (`gemv_config`),
  and the best of a sweep of tile sizes (with ``--sweep``), each as a fraction of copy bandwidth.
- ``argmax``: greedy sampling over each model's vocabulary at a few batch sizes, torch vs Triton.

Timing (timers.back_to_back_ms): each point runs its call back to back over distinct copies of the
weights (up to ~400 MB, far past the 50-60 MB L2, as 16 layers' weights are in a real step) inside
one CUDA graph; the time is the median replay divided by the calls. A lone call with L2 flushed (bench_kernels' method) would add
the launch latency that back-to-back kernels in a step hide. CUDA only.
"""
from __future__ import annotations

import itertools

import torch

from ..harness import make_report, output_path, write_report
from ..roofline import copy_bandwidth
from ..shapes import weight_matrices
from ..timers import back_to_back_ms

HELP = "batch-1 decode (Day 14): the GEMV kernel vs cuBLAS per weight matrix, Triton argmax vs torch (CUDA)"

MODELS = ("llama-3.2-1b", "qwen3-0.6b")
SWEEP = [dict(BLOCK_N=n, BLOCK_K=k, num_warps=w) for n, k, w in itertools.product((1, 2, 4, 8), (512, 1024, 2048),
                                                                                   (1, 2, 4))]
ARGMAX_BATCHES = (1, 8, 64, 256)
MAX_BYTES = 400e6


def gemv_rows(model_name: str, copy_gbs: float, sweep: bool, dtype=torch.bfloat16, log=print) -> list[dict]:
    from ...kernels.gemv import gemv, gemv_config
    from ...models.registry import resolve_model
    cfg, rows = resolve_model(model_name, need_weights=False).config, []
    g = torch.Generator(device="cuda").manual_seed(0)
    for name, (N, K) in weight_matrices(cfg).items():
        nbytes = N * K * torch.finfo(dtype).bits // 8
        ws = [torch.randn(N, K, device="cuda", dtype=dtype, generator=g) / K ** 0.5
              for _ in range(max(2, min(16, int(MAX_BYTES // nbytes))))]
        x = torch.randn(K, device="cuda", dtype=dtype, generator=g)
        err = (gemv(x, ws[0]).float() - torch.nn.functional.linear(x, ws[0]).float()).abs().max().item()
        row = dict(model=model_name, matrix=name, N=N, K=K, bytes=nbytes, max_abs_diff_vs_cublas=err,
                   default=gemv_config(N, K))
        row["ms_cublas"] = back_to_back_ms([lambda w=w: torch.nn.functional.linear(x, w) for w in ws])
        row["ms_gemv"] = back_to_back_ms([lambda w=w: gemv(x, w) for w in ws])
        if sweep:
            tried = [dict(c, ms=back_to_back_ms([lambda w=w, c=c: gemv(x, w, config=c) for w in ws])) for c in SWEEP]
            row["sweep"] = tried
            row["best"] = min(tried, key=lambda c: c["ms"])
        for impl in ("cublas", "gemv"):
            row[f"frac_of_copy_{impl}"] = nbytes / (row[f"ms_{impl}"] * 1e-3) / (copy_gbs * 1e9)
        row["speedup"] = row["ms_cublas"] / row["ms_gemv"]
        rows.append(row)
        log(f"{model_name:>13} {name:>8} {N:>6}x{K:<5} cuBLAS {1e3 * row['ms_cublas']:6.1f} us "
            f"({row['frac_of_copy_cublas']:.0%})  gemv {1e3 * row['ms_gemv']:6.1f} us ({row['frac_of_copy_gemv']:.0%})"
            + (f"  best {1e3 * row['best']['ms']:6.1f} us" if sweep else ""))
        del ws
    return rows


def argmax_rows(model_name: str, dtype=torch.bfloat16, log=print) -> list[dict]:
    from ...kernels.argmax import argmax
    from ...models.registry import resolve_model
    V, rows = resolve_model(model_name, need_weights=False).config.vocab_size, []
    for B in ARGMAX_BATCHES:
        xs = [torch.randn(B, V, device="cuda", dtype=dtype) for _ in range(8)]
        same = all(torch.equal(argmax(x), x.argmax(-1)) for x in xs)
        row = dict(model=model_name, vocab=V, batch=B, same_as_torch=same,
                   ms_torch=back_to_back_ms([lambda x=x: x.argmax(-1) for x in xs]),
                   ms_triton=back_to_back_ms([lambda x=x: argmax(x) for x in xs]))
        row["speedup"] = row["ms_torch"] / row["ms_triton"]
        rows.append(row)
        log(f"{model_name:>13} argmax batch {B:>3} x {V}: torch {1e3 * row['ms_torch']:6.1f} us, "
            f"triton {1e3 * row['ms_triton']:6.1f} us, same tokens: {same}")
    return rows


def run(models=MODELS, sweep: bool = True, json_path=None, log=print) -> dict:
    if not torch.cuda.is_available():
        raise ValueError("bench gemv needs a CUDA GPU")
    copy = copy_bandwidth()
    log(f"{torch.cuda.get_device_name()}: copy {copy['gb_per_s']:.0f} GB/s")
    gemv = [r for m in models for r in gemv_rows(m, copy["gb_per_s"], sweep, log=log)]
    am = [r for m in models for r in argmax_rows(m, log=log)]
    report = make_report("gemv", torch.device("cuda"), dict(
        dtype="bfloat16", copy=copy, gemv=gemv, argmax=am, all_correct=all(r["same_as_torch"] for r in am)))
    if json_path:
        write_report(report, json_path)
    return report


def add_arguments(p) -> None:
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated registry names")
    p.add_argument("--no-sweep", action="store_true", help="skip the tile-size sweep (default config only)")


def run_cli(args) -> int:
    from ..harness import device_info
    if not torch.cuda.is_available():
        raise ValueError("bench gemv needs a CUDA GPU")
    path = output_path(args, device_info("cuda"), "gemv")
    run(tuple(args.models.split(",")), sweep=not args.no_sweep, json_path=path)
    print(f"wrote {path}")
    return 0
