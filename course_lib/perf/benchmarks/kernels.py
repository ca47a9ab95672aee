"""``python -m course_lib bench kernels``: the attention kernels (Days 10-11) against the hardware.

    python -m course_lib bench kernels [--quick] [--json PATH | --json-dir DIR]   # gpu_<device>_kernels.json

Three sections, every point checked against a float32 reference before it is timed, every failing
point recorded with its error (the sweep goes on):

- ``decode``: batch x context, Triton (`paged_attention_triton`: split-KV, GQA packing) and the torch
  fast path `paged_decode_torch`. Decode does ~2 FLOPs per byte: the yardstick is bandwidth, and
  ``bytes`` is what any decode kernel must move (K and V of every context position once, the block
  table, q read, out written). The same count serves both, so GB/s is *effective* bandwidth: the torch
  path really moves ~3x more (it gathers the blocks into a contiguous copy first, then reads it).
- ``split_kv``: the same kernel with the split heuristic and with one split (no Flash-Decoding).
- ``prefill``: one sequence of T tokens, and a varlen batch; Triton vs SDPA (flash backend) vs naive
  attention that writes out the (H, T, T) scores. Time, TFLOP/s and peak memory above the inputs.

Times are medians of CUDA-graph replays with L2 flushed before each (timers.lone_call_ms: the kernels
alone, reading HBM); ``ms_eager`` adds the host's Python and launches. CUDA only; the pure helpers run
anywhere.
"""
from __future__ import annotations

import math

import torch

from .. import timers
from ..harness import guarded, make_report, output_path, write_report
from ..roofline import copy_bandwidth
from ..shapes import decode_attention_bytes

POINTS = [(64, 4096), (1, 4096), (8, 4096), (32, 8192), (128, 1024), (4, 32768)]  # split_kv (batch, context)
SHAPE = dict(heads=16, kv_heads=8, head_dim=128, block_size=16)   # one layer of qwen3-0.6b's attention
DECODE_BATCHES = (1, 8, 32, 64, 128, 256)
DECODE_CONTEXTS = (256, 1024, 4096, 16384)
MAX_KV_BYTES = 8e9                                  # skip decode points whose K/V alone exceed this
PREFILL_LENGTHS = (512, 1024, 2048, 4096, 8192)
VARLEN = (4096, 2048, 1536, 1024, 777, 512, 300, 77)   # one varlen prefill batch, ~10k tokens
QUICK = dict(batches=(1, 64), contexts=(256, 4096), lengths=(512, 2048), varlen=(1024, 300, 77),
             split_points=[(1, 4096), (64, 4096)])
ACCEPT = dict(impl="triton", batch=64, context=4096, min_frac_of_copy=0.7)
HELP = "attention kernels (Days 10-11): decode bandwidth, split-KV, prefill vs SDPA and naive (CUDA)"


# ---- pure helpers: bytes, FLOPs, point selection, results (tested on the CPU) -----------------------
def prefill_flops(lengths, heads, head_dim) -> int:
    """Causal attention FLOPs: query i meets i + 1 keys, 2*D for q.k and 2*D for p*v, per head."""
    return sum(4 * heads * head_dim * T * (T + 1) // 2 for T in lengths)


def naive_scores_bytes(T, heads, dtype_bytes) -> int:
    """Naive attention's temporaries: scores, masked scores and probabilities, each (H, T, T)."""
    return 3 * heads * T * T * dtype_bytes


def select_points(batches, contexts, kv_bytes_per_token, max_kv_bytes=None):
    """(kept, skipped): every (batch, context) with K/V up to ``max_kv_bytes`` (default MAX_KV_BYTES);
    skipped ones carry the reason."""
    max_kv_bytes = MAX_KV_BYTES if max_kv_bytes is None else max_kv_bytes
    kept, skipped = [], []
    for b in batches:
        for c in contexts:
            kv = b * c * kv_bytes_per_token
            if kv > max_kv_bytes:
                skipped.append(dict(batch=b, context=c, skipped=f"K/V {kv / 1e9:.1f} GB > "
                                                                f"{max_kv_bytes / 1e9:.0f} GB"))
            else:
                kept.append((b, c))
    return kept, skipped


def acceptance(decode_rows) -> dict:
    """The Day 11 target: Triton decode at batch 64, context 4096 reaches 70% of copy bandwidth."""
    hit = [r for r in decode_rows if r.get("impl") == ACCEPT["impl"] and r.get("batch") == ACCEPT["batch"]
           and r.get("context") == ACCEPT["context"] and "frac_of_copy" in r]
    frac = hit[0]["frac_of_copy"] if hit else None
    return dict(ACCEPT, frac_of_copy=frac, ok=frac is not None and frac >= ACCEPT["min_frac_of_copy"])


def figures(copy, sections: dict, quick: bool, dtype="bfloat16", max_rel_err: float = 2e-2) -> dict:
    """The report's figures: the shape, every section's rows, the acceptance check, all_correct."""
    rows = [r for rs in sections.values() for r in rs if "skipped" not in r]
    return dict(shape=dict(SHAPE, dtype=dtype), quick=quick, copy=copy, **sections,
                acceptance=acceptance(sections.get("decode", [])), max_rel_err=max_rel_err,
                all_correct=all("error" not in r and r.get("rel_err", 0) <= max_rel_err for r in rows))


# ---- inputs and references ---------------------------------------------------------------------
def decode_batch(batch, context, heads, kv_heads, head_dim, block_size, dtype, seed=0, device="cuda"):
    """Every sequence decodes one token at position context - 1; blocks are shuffled in the pool."""
    g = torch.Generator(device=device).manual_seed(seed)
    n = math.ceil(context / block_size)
    num_blocks = batch * n
    k_cache = torch.randn(num_blocks, block_size, kv_heads, head_dim, device=device, dtype=dtype,
                          generator=g)
    v_cache = torch.randn_like(k_cache)
    block_tables = torch.randperm(num_blocks, device=device, generator=g).view(batch, n).int()
    seq_lens = torch.full((batch,), context, device=device, dtype=torch.int32)
    qsl = torch.arange(batch + 1, device=device, dtype=torch.int32)
    q = torch.randn(batch, heads, head_dim, device=device, dtype=dtype, generator=g)
    return q, k_cache, v_cache, block_tables, seq_lens, qsl


def prefill_batch(lengths, heads, kv_heads, head_dim, block_size, dtype, seed=0, device="cuda"):
    """Varlen prefill over an identity block table (each sequence's blocks in order: a contiguous
    sequence is a paged one). Returns (q, k_cache, v_cache, block_tables, seq_lens, qsl)."""
    g = torch.Generator(device=device).manual_seed(seed)
    n = [math.ceil(T / block_size) for T in lengths]
    k_cache = torch.randn(sum(n), block_size, kv_heads, head_dim, device=device, dtype=dtype, generator=g)
    v_cache = torch.randn_like(k_cache)
    first = [sum(n[:i]) for i in range(len(n))]
    block_tables = torch.tensor([[f + j if j < k else 0 for j in range(max(n))] for f, k in zip(first, n)],
                                device=device, dtype=torch.int32)
    qsl = torch.tensor([sum(lengths[:i]) for i in range(len(lengths) + 1)], device=device, dtype=torch.int32)
    q = torch.randn(sum(lengths), heads, head_dim, device=device, dtype=dtype, generator=g)
    seq_lens = torch.tensor(lengths, device=device, dtype=torch.int32)
    return q, k_cache, v_cache, block_tables, seq_lens, qsl


def contiguous_kv(args, i):
    """Sequence i's K and V as (T_i, KVH, D) views of an identity-table pool (no copy)."""
    q, k_cache, v_cache, block_tables, seq_lens, qsl = args
    first, T = int(block_tables[i, 0]), int(seq_lens[i])
    n = math.ceil(T / k_cache.shape[1])
    return (k_cache[first:first + n].flatten(0, 1)[:T], v_cache[first:first + n].flatten(0, 1)[:T])


def reference_rows(args, rows):
    """paged_attention_ref in float32 on decode rows ``rows`` only: their blocks copied into a small pool."""
    from ...kv.paged import paged_attention_ref
    q, k_cache, v_cache, block_tables, seq_lens, _ = args
    rows = torch.as_tensor(rows, device=q.device)
    tables = block_tables[rows].long()                               # (R, n)
    R, n = tables.shape
    pool = lambda c: c[tables.flatten()].float()                     # noqa: E731 - (R*n, bs, KVH, D)
    local = torch.arange(R * n, device=q.device, dtype=torch.int32).view(R, n)
    qsl = torch.arange(R + 1, device=q.device, dtype=torch.int32)
    return paged_attention_ref(q[rows].float(), pool(k_cache), pool(v_cache), local, seq_lens[rows], qsl)


def naive_attention(q, k, v, scale=None):
    """softmax(q k^T * scale) v for one sequence (T, H, D) with K/V (T, KVH, D), causal, writing the
    whole (H, T, T) score matrix to memory (as a textbook or nanoGPT's model.py does): O(T^2) bytes."""
    T, H, D = q.shape
    k = k.repeat_interleave(H // k.shape[1], dim=1)                  # (T, H, D)
    v = v.repeat_interleave(H // v.shape[1], dim=1)
    s = torch.einsum("thd,shd->hts", q, k) * (scale or 1 / math.sqrt(D))   # (H, T, T)
    s = s.masked_fill(torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    return torch.einsum("hts,shd->thd", s.softmax(-1), v)            # (T, H, D)


def sdpa_flash(q, k, v):
    """torch SDPA forced onto its FlashAttention backend (GQA via enable_gqa), one sequence."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        out = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None],
            is_causal=True, enable_gqa=q.shape[1] != k.shape[1])      # (1, H, T, D)
    return out[0].transpose(0, 1)


def rel_err(got, ref) -> float:
    return ((got.float() - ref).norm() / ref.norm()).item()


# ---- timing (CUDA) ---------------------------------------------------------------------------
def peak_extra_bytes(fn) -> int:
    """Most memory allocated during ``fn`` above what was allocated before it (its temporaries + output)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


# ---- the sweeps ----------------------------------------------------------------------------------
def bench_point(batch, context, dtype, copy_gbs, num_splits=None, impl="triton", device="cuda") -> dict:
    """One decode point: ``impl`` "triton" (``num_splits`` None = heuristic) or "torch"."""
    from ...kernels import paged_attention as pa
    from ...kv.paged import paged_decode_torch

    args = decode_batch(batch, context, dtype=dtype, device=device, **SHAPE)
    q, k_cache, *_ = args
    if impl == "triton":
        fn = lambda: pa.paged_attention_triton(*args, max_query_len=1, num_splits=num_splits)  # noqa: E731
        splits = num_splits or pa.num_kv_splits(batch * SHAPE["kv_heads"], pa._sm_count(q.device))
    else:
        fn, splits = (lambda: paged_decode_torch(*args)), None                           # noqa: E731
    rows = sorted({0, batch // 3, batch // 2, batch - 1})               # spread over the pool
    err = rel_err(fn()[rows], reference_rows(args, rows))
    t = timers.time_ms(fn)                   # graph replay, L2 flushed (eager if capture fails)
    total = decode_attention_bytes(batch, context, dtype_bytes=k_cache.element_size(), **SHAPE)
    gbs = total / t["ms"] / 1e6
    return dict(rel_err=err, num_splits=splits, bytes=total, gb_per_s=gbs, frac_of_copy=gbs / copy_gbs,
                gb_per_s_eager=total / t["ms_eager"] / 1e6, **t)


def decode_sweep(batches, contexts, copy_gbs, dtype=torch.bfloat16, impls=("triton", "torch"), log=print,
                 device="cuda"):
    w = torch.empty((), dtype=dtype).element_size()
    kept, skipped = select_points(batches, contexts, 2 * SHAPE["kv_heads"] * SHAPE["head_dim"] * w)
    rows = []
    for batch, context in kept:
        for impl in impls:
            base = dict(impl=impl, batch=batch, context=context, dtype=str(dtype).removeprefix("torch."))
            rows.append(guarded(base, lambda: bench_point(batch, context, dtype, copy_gbs, impl=impl,
                                                           device=device)))
            log(_fmt(rows[-1]))
    return rows + [dict(r, impl=i) for r in skipped for i in impls]


def split_sweep(points, copy_gbs, dtype=torch.bfloat16, log=print, device="cuda"):
    rows = []
    for batch, context in points:
        for splits in (None, 1):        # the heuristic's choice, then the plain kernel alone
            base = dict(impl="triton", batch=batch, context=context, dtype=str(dtype).removeprefix("torch."),
                        splits_asked="auto" if splits is None else splits)
            rows.append(guarded(base, lambda: bench_point(batch, context, dtype, copy_gbs, splits,
                                                           device=device)))
            log(_fmt(rows[-1]))
    return rows


def prefill_point(impl, lengths, dtype, device="cuda") -> dict:
    from ...kernels import paged_attention_triton
    from ...kv.paged import paged_attention_ref

    args = prefill_batch(lengths, dtype=dtype, device=device, **SHAPE)
    q, *_, qsl = args
    H, scores = SHAPE["heads"], naive_scores_bytes(max(lengths), SHAPE["heads"], q.element_size())
    if impl == "naive" and device == "cuda" and scores > torch.cuda.mem_get_info()[0] / 2:
        return dict(skipped=f"naive attention's scores need {scores / 1e9:.1f} GB")
    kv = [contiguous_kv(args, i) for i in range(len(lengths))]
    starts = qsl.tolist()                    # host ints: a slice by a GPU scalar would sync (no graph)
    per_seq = dict(naive=naive_attention, sdpa_flash=sdpa_flash)
    if impl == "triton":
        fn = lambda: paged_attention_triton(*args, max_query_len=max(lengths))   # noqa: E731
    else:
        fn = lambda: torch.cat([per_seq[impl](q[starts[i]:starts[i + 1]], *kv[i])  # noqa: E731
                                for i in range(len(lengths))])
    ref = paged_attention_ref(q.float(), args[1].float(), args[2].float(), *args[3:])
    err = rel_err(fn(), ref)
    del ref
    peak = peak_extra_bytes(fn)
    t = timers.time_ms(fn)                   # graph replay, L2 flushed (eager if capture fails)
    return dict(rel_err=err, peak_extra_bytes=peak, output_bytes=q.nbytes,
                tflops=prefill_flops(lengths, H, SHAPE["head_dim"]) / t["ms"] / 1e9, **t)


def prefill_sweep(lengths, varlen, dtype=torch.bfloat16, impls=("triton", "sdpa_flash", "naive"), log=print,
                  device="cuda"):
    rows = []
    cases = [("single", [T]) for T in lengths] + ([("varlen", list(varlen))] if varlen else [])
    for case, lens in cases:
        for impl in impls:
            base = dict(impl=impl, case=case, tokens=sum(lens), lengths=lens,
                        dtype=str(dtype).removeprefix("torch."))
            rows.append(guarded(base, lambda: prefill_point(impl, lens, dtype, device)))
            log(_fmt(rows[-1]))
    return rows


def _fmt(r: dict) -> str:
    where = f"{r['impl']:>10} " + (f"T={r['tokens']:<6}" if "tokens" in r else f"B={r['batch']:<3} "
                                   f"L={r['context']:<5} splits={r.get('num_splits')!s:<4}")
    if "error" in r or "skipped" in r:
        return f"{where} {r.get('error') or r['skipped']}"
    unit = f"{r['tflops']:6.1f} TFLOP/s" if "tflops" in r else f"{r['frac_of_copy']:6.1%} of copy"
    return f"{where} {r['ms']:8.3f} ms  {unit}  rel_err {r['rel_err']:.1e}"


def run(quick: bool = False, json_path=None, max_rel_err: float = 2e-2, log=print,
        sections=("decode", "split_kv", "prefill")) -> dict:
    """The ``sections`` asked for; writes ``json_path`` after each, so a crash keeps what was measured."""
    if not torch.cuda.is_available():
        raise ValueError("bench kernels needs a CUDA GPU (the interpreter's timings mean nothing)")
    copy = copy_bandwidth()
    dev = torch.device("cuda")
    log(f"{torch.cuda.get_device_name()}: device-to-device copy {copy['gb_per_s']:.0f} GB/s")
    cfg = QUICK if quick else dict(batches=DECODE_BATCHES, contexts=DECODE_CONTEXTS, lengths=PREFILL_LENGTHS,
                                   varlen=VARLEN, split_points=POINTS)
    sweeps = dict(decode=lambda: decode_sweep(cfg["batches"], cfg["contexts"], copy["gb_per_s"], log=log),
                  split_kv=lambda: split_sweep(cfg["split_points"], copy["gb_per_s"], log=log),
                  prefill=lambda: prefill_sweep(cfg["lengths"], cfg["varlen"], log=log))
    done = {}
    for name in sections:
        done[name] = sweeps[name]()
        report = make_report("kernels", dev, figures(copy, done, quick, max_rel_err=max_rel_err))
        if json_path:
            write_report(report, json_path)
    acc = report["acceptance"]
    if "decode" in done:
        log(f"acceptance: triton decode batch 64, context 4096 at {acc['frac_of_copy']} of copy "
            f"bandwidth (target >= {acc['min_frac_of_copy']}): {'ok' if acc['ok'] else 'MISSED'}")
    return report


def add_arguments(p) -> None:
    p.add_argument("--quick", action="store_true", help="a few points per section (for tests)")
    p.add_argument("--max-rel-err", type=float, default=2e-2)
    p.add_argument("--sections", default="decode,split_kv,prefill", help="comma-separated, from decode, split_kv, prefill")


def run_cli(args) -> int:
    from ..harness import device_info
    sections = tuple(x.strip() for x in args.sections.split(",") if x.strip())
    if not sections or not set(sections) <= {"decode", "split_kv", "prefill"}:
        raise ValueError(f"--sections must be chosen from decode, split_kv, prefill, got {args.sections!r}")
    if not torch.cuda.is_available():
        raise ValueError("bench kernels needs a CUDA GPU (the interpreter's timings mean nothing)")
    path = output_path(args, device_info("cuda"), "kernels")
    report = run(args.quick, path, args.max_rel_err, sections=sections)
    print(f"wrote {path}" + ("" if report["all_correct"] else "; some points failed or were inaccurate!"))
    return 0
