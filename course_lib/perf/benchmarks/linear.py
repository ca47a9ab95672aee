"""``python -m course_lib bench linear``: a decode step's matmuls on the CPU in the two operand orders.

    python -m course_lib bench linear [--model smollm2-135m] [--rows 1,2,...] [--json-dir DIR]   # cpu_linear.json

For each row count M (tokens in the step), every matmul of one decoder step of the model's shape runs
once over distinct random fp32 weights (all layers' copies, as a real step reads them from memory, not
from cache): ``F.linear(x, W)`` (what nn.Linear does) and ``linear_weight_first`` (course_lib's CPU
path: ``(W @ x^T)^T`` on rows zero-padded to 2, 4 or a multiple of 8). The time is the median of
``--repeats`` steps; ``max_abs_diff`` compares the two outputs of the last matrix. The engine's CPU
Linear (layers/linear.py) takes the second path up to ``CPU_WEIGHT_FIRST_MAX_ROWS`` rows; this
benchmark is how that choice was made and how to check it on another CPU.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from ..harness import device_info, make_report, output_path, progress, write_report
from ..shapes import weight_matrices
from ..timers import median_time

HELP = "a CPU decode step's matmuls: F.linear vs the weight-first order course_lib's CPU Linear uses"
ROWS = (1, 2, 3, 4, 8, 12, 15, 16, 24, 31, 32, 48, 62, 64, 128, 256)


def step_matrices(model_name: str, seed: int = 0) -> list[torch.Tensor]:
    """Every matmul weight of one decode step: L copies of qkv, o, gate_up, down, then the LM head."""
    from ...models.registry import resolve_model
    cfg = resolve_model(model_name, need_weights=False).config
    g = torch.Generator().manual_seed(seed)
    shapes = weight_matrices(cfg)
    layer = [shapes[k] for k in ("qkv", "o", "gate_up", "down")]
    return [torch.randn(n, k, generator=g) / k ** 0.5 for _ in range(cfg.num_layers) for n, k in layer] + \
           [torch.randn(*shapes["lm_head"], generator=g) / shapes["lm_head"][1] ** 0.5]


def run(model: str = "smollm2-135m", rows=ROWS, repeats: int = 7, json_path=None, log=print,
        show_progress: bool = True) -> dict:
    from ...layers.linear import CPU_WEIGHT_FIRST_MAX_ROWS, linear_weight_first, padded_rows
    weights = step_matrices(model)
    nbytes = sum(w.nbytes for w in weights)
    log(f"{model}: {len(weights)} matrices, {nbytes / 1e6:.0f} MB of fp32 weights per step, "
        f"{torch.get_num_threads()} threads")
    points, bar = [], progress(len(rows), "bench linear", show_progress, unit="row count")
    for m in rows:
        g = torch.Generator().manual_seed(m)
        xs = {k: torch.randn(m, k, generator=g) for k in {w.shape[1] for w in weights}}

        def step(fn):
            return lambda: [fn(xs[w.shape[1]], w) for w in weights]
        ms_linear = 1e3 * median_time(step(F.linear), repeats=repeats)
        ms_first = 1e3 * median_time(step(linear_weight_first), repeats=repeats)
        w = weights[-1]
        diff = (F.linear(xs[w.shape[1]], w) - linear_weight_first(xs[w.shape[1]], w)).abs().max().item()
        points.append(dict(rows=m, padded_rows=padded_rows(m), ms_f_linear=ms_linear,
                           ms_weight_first=ms_first, speedup=ms_linear / ms_first,
                           gb_per_s_f_linear=nbytes / ms_linear / 1e6,
                           gb_per_s_weight_first=nbytes / ms_first / 1e6, max_abs_diff=diff))
        log(f"  {m:>4} rows: F.linear {ms_linear:7.1f} ms ({nbytes / ms_linear / 1e6:5.1f} GB/s), "
            f"weight-first {ms_first:7.1f} ms ({nbytes / ms_first / 1e6:5.1f} GB/s): {ms_linear / ms_first:.2f}x")
        bar.update()
    bar.close()
    report = make_report("linear", torch.device("cpu"), dict(
        model=model, dtype="float32", weight_bytes=nbytes, threads=torch.get_num_threads(),
        repeats=repeats, cpu_weight_first_max_rows=CPU_WEIGHT_FIRST_MAX_ROWS, points=points))
    if json_path:
        write_report(report, json_path)
    return report


def add_arguments(p) -> None:
    p.add_argument("--model", default="smollm2-135m", help="registry name whose shapes are timed")
    p.add_argument("--rows", default=",".join(map(str, ROWS)), help="comma-separated row counts")
    p.add_argument("--repeats", type=int, default=7, help="timed steps per point (the median is kept)")


def run_cli(args) -> int:
    try:
        rows = tuple(int(r) for r in args.rows.split(","))
    except ValueError:
        raise ValueError(f"--rows must be comma-separated positive integers, got {args.rows!r}") from None
    if not rows or min(rows) < 1:
        raise ValueError(f"--rows must be comma-separated positive integers, got {args.rows!r}")
    if args.repeats < 1:
        raise ValueError(f"--repeats must be an integer >= 1, got {args.repeats}")
    path = output_path(args, device_info("cpu"), "linear")
    run(args.model, rows, args.repeats, json_path=path)
    print(f"wrote {path}")
    return 0
