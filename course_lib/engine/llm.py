"""``LLM``: the offline entry point, shaped like ``vllm.LLM`` so learners can switch later.

    llm = LLM("smollm2-135m", scheduler="continuous", max_num_seqs=16)
    outs = llm.generate(["Hello", "The capital of France is"], SamplingParams(temperature=0, max_tokens=32))
    outs[0].outputs[0].text

Every ``EngineConfig`` field is a keyword argument here (``max_num_batched_tokens``,
``enable_chunked_prefill``, ``preemption_mode``, ``cuda_graphs``, ...): see course_lib/config.py.
"""
from __future__ import annotations

import dataclasses
import functools

import torch

from ..config import EngineConfig, SamplingParams, is_int
from ..models.llama import LlamaModel
from .llm_engine import LLMEngine
from .outputs import RequestOutput

DTYPES = {"float32": torch.float32, "float": torch.float32, "bfloat16": torch.bfloat16,
          "float16": torch.float16, "half": torch.float16}
ENGINE_FIELDS = tuple(f.name for f in dataclasses.fields(EngineConfig))


def resolve_dtype(dtype, auto: torch.dtype) -> torch.dtype:
    """vLLM's ``dtype`` argument: "auto" (the device's best, see perf/device.py), a name, or a torch.dtype."""
    if dtype is None or dtype == "auto":
        return auto
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise ValueError(f"dtype must be 'auto', one of {sorted(DTYPES)} or a torch float dtype, got {dtype!r}")


class LLM:
    def __init__(self, model: str | LlamaModel = "smollm2-135m", *, tokenizer=None, device=None,
                 dtype="auto", max_model_len: int | None = None, random_weights: bool = False,
                 seed: int = 0, quantization: str | None = None, **engine_args):
        """``model`` is a registry name, a folder, a hub id, or an already-loaded LlamaModel (the
        notebooks reuse one model across engines). Config errors are raised before anything loads.
        ``quantization`` (Day 18, vLLM's argument): None, "int8" or "int4", weight-only quantization of
        the decoder's linear layers (layers/quant.py); a loaded model given here is copied, not changed."""
        unknown = sorted(set(engine_args) - set(ENGINE_FIELDS))
        if unknown:
            raise TypeError(f"LLM() got unknown argument(s) {unknown}; engine arguments are {ENGINE_FIELDS}")
        cfg = EngineConfig(**engine_args)
        resolve_dtype(dtype, torch.float32)      # checked even when the model is already loaded
        if type(random_weights) is not bool:
            raise TypeError(f"random_weights must be True or False, got {random_weights!r}")
        if not is_int(seed):
            raise TypeError(f"seed must be an integer, got {seed!r}")
        if quantization is not None:
            from ..layers.quant import check_method
            check_method(quantization)
        if isinstance(model, LlamaModel):
            if tokenizer is None and not random_weights and isinstance(getattr(model, "source", None), str):
                tokenizer = _load_tokenizer(model.source)
        elif isinstance(model, str) and model:
            from ..models.loader import load_model
            from ..perf.device import pick_device_dtype
            dev, auto_dtype = pick_device_dtype(device)
            model_dtype = resolve_dtype(dtype, auto_dtype)
            name = model
            model = load_model(name, device=dev, dtype=model_dtype, random_weights=random_weights, seed=seed)
            if tokenizer is None and not random_weights:
                tokenizer = _load_tokenizer(name)
        else:
            raise TypeError(f"model must be a model name, a folder, a hub id or a LlamaModel, got {model!r}")
        if quantization is not None:
            from ..layers.quant import quantize_model
            model = quantize_model(model, quantization)
        self.engine = LLMEngine(model, tokenizer, cfg, max_model_len)

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    def beam_search(self, prompts, params) -> list:
        """The ``params.beam_width`` most likely continuations of each prompt (vLLM's
        ``LLM.beam_search``; engine/beam_search.py). Turn on ``enable_prefix_caching`` for speed."""
        from .beam_search import beam_search
        return beam_search(self, prompts, params)

    def reset_prefix_cache(self) -> bool:
        """Forget the prefix cache (vLLM's name); False while requests hold blocks (see LLMEngine)."""
        return self.engine.reset_prefix_cache()

    def generate(self, prompts, sampling_params: SamplingParams | list[SamplingParams] | None = None,
                 use_tqdm: bool = True) -> list[RequestOutput]:
        """Run every prompt to completion; outputs come back in the order of ``prompts``.

        All prompts are checked (and text tokenized, once) before any is queued, so one bad prompt
        rejects the call cleanly; if anything raises while they run (an interrupt included), the
        requests this call queued are aborted, so the engine is clean for the next call."""
        prompts = _as_prompt_list(prompts)
        params = SamplingParams() if sampling_params is None else sampling_params
        if isinstance(params, (list, tuple)):
            if len(params) != len(prompts):
                raise ValueError(f"sampling_params must be one SamplingParams or one per prompt "
                                 f"({len(prompts)}), got {len(params)}")
        else:
            params = [params] * len(prompts)
        engine = self.engine
        checked = []
        for p, sp in zip(prompts, params):                 # validate all before queueing any
            ids = engine._prompt_ids(p)
            engine.validate(ids, sp)
            checked.append((p if isinstance(p, str) else None, ids, sp))
        ids = []
        bar = _progress(len(prompts)) if use_tqdm else None
        try:
            done = run_to_completion(engine, ids, bar, add=lambda: ids.extend(
                engine._add(text, prompt_ids, sp, None, None, "final_only") for text, prompt_ids, sp in checked))
        finally:
            if bar is not None:
                bar.close()
        return [done[i] for i in ids]


def run_to_completion(engine, ids: list[str], bar=None, add=None) -> dict[str, RequestOutput]:
    """Step ``engine`` until nothing is left; the finished outputs by request id. ``add`` (called
    first) queues the requests and fills ``ids``; if anything raises, whatever of ``ids`` has not
    finished is aborted, so a failed run leaves no request (and no KV block) behind."""
    done: dict[str, RequestOutput] = {}
    try:
        if add is not None:
            add()
        while engine.has_unfinished_requests():
            for out in engine.step():
                if out.finished:
                    done[out.request_id] = out
                    if bar is not None:
                        bar.update(1)
    finally:
        for rid in ids:
            if rid not in done:
                engine.abort_request(rid)
    return done


def _as_prompt_list(prompts) -> list:
    """One prompt (a string or a list of ids) or a list of them -> a list of prompts."""
    if isinstance(prompts, str):
        return [prompts]
    if not isinstance(prompts, (list, tuple)):
        raise TypeError(f"prompts must be a string, a list of token ids, or a list of those, "
                        f"got {type(prompts).__name__}")
    if prompts and all(is_int(t) for t in prompts):
        return [list(prompts)]
    if not prompts:
        raise ValueError("prompts must not be empty")
    return list(prompts)


def _progress(total: int):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc="requests", unit="req", leave=False, mininterval=0.5)


@functools.lru_cache(maxsize=8)
def _load_tokenizer(name: str):
    """One tokenizer per model name per process (notebooks build many LLMs over one model)."""
    from ..tokenizer import Tokenizer
    return Tokenizer.from_model(name)
