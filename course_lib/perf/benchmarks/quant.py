"""``python -m course_lib bench quant``: batch-1 decode with weight-only quantized weights (Day 18).

    python -m course_lib bench quant [--models llama-3.2-1b] [--methods none,int8,int4] [--tokens 128]
                                     [--device cuda] [--json-dir DIR]   # <device>_quant.json

For each model shape (random weights: the time does not depend on their values) and each method
(``none``: the model's dtype; ``int8``, ``int4``: ``LLM(..., quantization=...)``, layers/quant.py), one
request of a 16-token prompt decodes ``--tokens`` tokens alone (batch 1, EOS ignored), after an
untimed warm-up request. ``ms_per_token`` is the median gap between its tokens (the request's
``token_times``); ``linear_weight_bytes`` what the decoder's linear layers hold, which a batch-1
step reads once per token. On CUDA the quantized layers run kernels/quant_matmul.py (dequantized in
registers) inside the engine's CUDA graphs; on a CPU torch dequantizes each matrix every call, so
there quantization costs time: this benchmark says how much.
"""
from __future__ import annotations

import statistics

import torch

from ..harness import device_info, make_report, output_path, progress, write_report

HELP = "batch-1 decode time per token with int8 / int4 weight-only quantization vs the model's dtype (Day 18)"
METHODS = ("none", "int8", "int4")


def decode_point(model, method: str, tokens: int) -> dict:
    from ...config import SamplingParams
    from ...engine.llm import LLM
    from ...layers.quant import linear_weight_bytes
    llm = LLM(model, quantization=None if method == "none" else method, max_num_seqs=1)
    prompt = list(range(1, 17))
    params = SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True)
    llm.generate([prompt], SamplingParams(temperature=0, max_tokens=8, ignore_eos=True), use_tqdm=False)
    out = llm.generate([prompt], params, use_tqdm=False)[0]
    times = out.metrics.token_times
    gaps = [b - a for a, b in zip(times, times[1:])]
    ms = 1e3 * statistics.median(gaps)
    wbytes = linear_weight_bytes(llm.engine.model)
    return dict(method=method, ms_per_token=ms, tokens_per_s=1e3 / ms, tokens=len(out.outputs[0].token_ids),
                linear_weight_bytes=wbytes, linear_gb_per_s=wbytes / ms / 1e6)


def run(models, methods, tokens: int, device, log=print) -> dict:
    from ...models.loader import load_model
    from ...perf.device import pick_device_dtype
    device = torch.device(device)
    _, dtype = pick_device_dtype(str(device))
    rows, bar = [], progress(len(models) * len(methods), "bench quant", unit="point")
    for name in models:
        model = load_model(name, device=device, dtype=dtype, random_weights=True)
        for method in methods:
            row = dict(model=name, dtype=str(dtype).removeprefix("torch."), **decode_point(model, method, tokens))
            rows.append(row)
            bar.update()
        del model
    bar.close()
    for r in rows:
        log(f"{r['model']:>14} {r['method']:>5}: {r['ms_per_token']:7.3f} ms/token ({r['tokens_per_s']:7.1f} tok/s), "
            f"linear weights {r['linear_weight_bytes'] / 1e6:7.1f} MB ({r['linear_gb_per_s']:6.1f} GB/s)")
    return dict(tokens=tokens, prompt_tokens=16, batch=1, weights="random", rows=rows)


def add_arguments(p) -> None:
    p.add_argument("--models", default=None, help="comma-separated registry names (default: llama-3.2-1b "
                                                    "on CUDA, smollm2-135m on the CPU)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {', '.join(METHODS)}")
    p.add_argument("--tokens", type=int, default=None, help="tokens decoded per point (default 128 on CUDA, 16 on the CPU)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if present)")


def run_cli(args) -> int:
    from ...models.registry import KNOWN_MODELS as MODELS
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    models = (args.models or ("llama-3.2-1b" if cuda else "smollm2-135m")).split(",")
    bad = [m for m in models if m not in MODELS]
    if bad:
        raise ValueError(f"--models must be chosen from {sorted(MODELS)}, got {bad}")
    methods = args.methods.split(",")
    if not methods or any(m not in METHODS for m in methods):
        raise ValueError(f"--methods must be chosen from {', '.join(METHODS)}, got {args.methods!r}")
    tokens = args.tokens if args.tokens is not None else 128 if cuda else 16
    if tokens < 2:
        raise ValueError(f"--tokens must be an integer >= 2, got {tokens}")
    dev = device_info(device)
    report = make_report("quant", dev, run(models, methods, tokens, device))
    path = output_path(args, dev, "quant")
    if path is not None:
        write_report(report, path)
        print(f"wrote {path}")
    return 0
