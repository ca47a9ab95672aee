"""GPU micro-benchmark of the paged attention kernels: how close does decode get to copy bandwidth?

    python -m course_lib.perf.bench_kernels --json results.json

Decode reads every cached K and V once per step and does ~2 flops per byte, so it is memory-bound:
the yardstick is a device-to-device copy (the best a kernel that reads and writes can hope for).
Each point is checked against the torch reference before it is timed. CUDA only.
"""
from __future__ import annotations

import argparse
import json
import math

import torch

POINTS = [(64, 4096), (1, 4096), (8, 4096), (32, 8192), (128, 1024), (4, 32768)]  # (batch, context)
SHAPE = dict(heads=16, kv_heads=8, head_dim=128, block_size=16)


def copy_bandwidth(nbytes: int = 1 << 30) -> dict:
    """Median GB/s of a large clone: nbytes read plus nbytes written. A read-mostly kernel can beat
    it a little (no read/write turnarounds), so a fraction just above 100% is not an error."""
    from triton.testing import do_bench

    x = torch.empty(nbytes // 4, device="cuda", dtype=torch.float32)
    ms = do_bench(lambda: x.clone(), return_mode="median")
    return dict(bytes=nbytes, ms=ms, gb_per_s=2 * nbytes / ms / 1e6)


def decode_batch(batch, context, heads, kv_heads, head_dim, block_size, dtype, seed=0):
    """Every sequence decodes one token at position context - 1; blocks are shuffled in the pool."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    n = math.ceil(context / block_size)
    num_blocks = batch * n
    k_cache = torch.randn(num_blocks, block_size, kv_heads, head_dim, device="cuda", dtype=dtype,
                          generator=g)
    v_cache = torch.randn_like(k_cache)
    block_tables = torch.randperm(num_blocks, device="cuda", generator=g).view(batch, n).int()
    seq_lens = torch.full((batch,), context, device="cuda", dtype=torch.int32)
    qsl = torch.arange(batch + 1, device="cuda", dtype=torch.int32)
    q = torch.randn(batch, heads, head_dim, device="cuda", dtype=dtype, generator=g)
    return q, k_cache, v_cache, block_tables, seq_lens, qsl


def bench_point(batch, context, dtype, copy_gbs, num_splits=None) -> dict:
    from triton.testing import do_bench, do_bench_cudagraph

    from course_lib.kernels import paged_attention_triton
    from course_lib.kv.paged import paged_attention_ref

    args = decode_batch(batch, context, dtype=dtype, **SHAPE)
    q, k_cache, v_cache, *meta = args
    out = paged_attention_triton(*args, max_query_len=1, num_splits=num_splits)
    ref = paged_attention_ref(q.float(), k_cache.float(), v_cache.float(), *meta)
    rel_err = ((out.float() - ref).norm() / ref.norm()).item()
    fn = lambda: paged_attention_triton(*args, max_query_len=1, num_splits=num_splits)  # noqa: E731
    # Eager time includes the Python wrapper and launches (~40-150 us on the host): for small batches
    # it, not the GPU, sets the pace. A CUDA-graph replay removes the host and times the kernels alone.
    ms = do_bench(fn, return_mode="median")
    try:
        ms_graph = do_bench_cudagraph(fn, return_mode="median")
    except Exception as e:                      # keep the eager number if capture is not possible
        print(f"cuda graph timing failed ({type(e).__name__}: {e}); using the eager time")
        ms_graph = ms
    kv_bytes = 2 * batch * context * SHAPE["kv_heads"] * SHAPE["head_dim"] * k_cache.element_size()
    total = kv_bytes + 2 * q.nbytes                    # K and V read once, q read, out written
    gbs = total / ms_graph / 1e6
    return dict(batch=batch, context=context, dtype=str(dtype).removeprefix("torch."),
                num_splits="auto" if num_splits is None else num_splits, rel_err=rel_err, ms=ms,
                ms_graph=ms_graph, bytes=total, gb_per_s=gbs, gb_per_s_eager=total / ms / 1e6,
                frac_of_copy=gbs / copy_gbs)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="where to write results (default: named by device/versions)")
    parser.add_argument("--max-rel-err", type=float, default=2e-2)
    a = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench_kernels needs a CUDA GPU (the interpreter's timings mean nothing)")
    import triton

    device = torch.cuda.get_device_name()
    copy = copy_bandwidth()
    print(f"{device}: device-to-device copy {copy['gb_per_s']:.0f} GB/s")
    rows = []
    for batch, context in POINTS:
        for splits in (None, 1):        # the heuristic's choice, then the plain kernel alone
            r = bench_point(batch, context, torch.bfloat16, copy["gb_per_s"], splits)
            rows.append(r)
            torch.cuda.empty_cache()
    r = bench_point(64, 4096, torch.float16, copy["gb_per_s"])
    rows.append(r)
    print(f"{'batch':>5} {'context':>7} {'dtype':>8} {'splits':>6} {'rel_err':>8} {'ms eager':>8} "
          f"{'ms graph':>8} {'GB/s':>6} {'of copy':>7}")
    for r in rows:
        print(f"{r['batch']:>5} {r['context']:>7} {r['dtype']:>8} {r['num_splits']!s:>6} "
              f"{r['rel_err']:>8.1e} {r['ms']:>8.3f} {r['ms_graph']:>8.3f} {r['gb_per_s']:>6.0f} "
              f"{r['frac_of_copy']:>7.1%}")
    bad = [r for r in rows if not r["rel_err"] <= a.max_rel_err]
    result = dict(device=device, torch=torch.__version__, triton=triton.__version__,
                  shape=SHAPE, copy=copy, decode=rows, all_correct=not bad)
    path = a.json or (f"bench_kernels_{device.replace(' ', '_')}_torch{torch.__version__}"
                      f"_triton{triton.__version__}.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {path}" + (f"; {len(bad)} point(s) above rel_err {a.max_rel_err}!" if bad else ""))
    return result


if __name__ == "__main__":
    main()
