"""``LLM``: the offline entry point, shaped like ``vllm.LLM`` so learners can switch later.

    llm = LLM("smollm2-135m", scheduler="continuous", max_num_seqs=16)
    outs = llm.generate(["Hello", "The capital of France is"], SamplingParams(temperature=0, max_tokens=32))
    outs[0].outputs[0].text
"""
from __future__ import annotations

import functools

from ..config import EngineConfig, SamplingParams
from ..models.llama import LlamaModel
from .llm_engine import LLMEngine
from .outputs import RequestOutput


class LLM:
    def __init__(self, model: str | LlamaModel = "smollm2-135m", *, tokenizer=None, device=None,
                 dtype=None, scheduler: str = "continuous", max_num_seqs: int = 32,
                 max_num_batched_tokens: int = 4096, block_size: int = 16,
                 num_kv_blocks: int | None = None, kv_memory_gb: float | None = None,
                 attention_backend: str = "auto", cuda_graphs: bool = True,
                 async_scheduling: bool | None = None,
                 max_model_len: int | None = None,
                 random_weights: bool = False, seed: int = 0):
        """``model`` is a registry name, a folder, a hub id, or an already-loaded LlamaModel (the
        notebooks reuse one model across engines). Config errors are raised before anything loads."""
        cfg = EngineConfig(scheduler=scheduler, max_num_seqs=max_num_seqs,
                           max_num_batched_tokens=max_num_batched_tokens, block_size=block_size,
                           num_kv_blocks=num_kv_blocks, kv_memory_gb=kv_memory_gb,
                           attention_backend=attention_backend, cuda_graphs=cuda_graphs,
                           async_scheduling=async_scheduling)
        if isinstance(model, LlamaModel):
            if tokenizer is None and not random_weights and isinstance(getattr(model, "source", None), str):
                tokenizer = _load_tokenizer(model.source)
        else:
            from ..models.loader import load_model
            from ..perf.device import pick_device_dtype
            auto_device, auto_dtype = pick_device_dtype(device)
            name = model
            model = load_model(name, device=device or auto_device, dtype=dtype or auto_dtype,
                               random_weights=random_weights, seed=seed)
            if tokenizer is None and not random_weights:
                tokenizer = _load_tokenizer(name)
        self.engine = LLMEngine(model, tokenizer, cfg, max_model_len)

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    def generate(self, prompts, sampling_params: SamplingParams | list[SamplingParams] | None = None
                 ) -> list[RequestOutput]:
        """Run every prompt to completion; outputs come back in the order of ``prompts``.

        All prompts are checked before any is queued, so one bad prompt rejects the call cleanly."""
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        params = sampling_params or SamplingParams()
        params = params if isinstance(params, list) else [params] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError(f"sampling_params must be one SamplingParams or one per prompt "
                             f"({len(prompts)}), got {len(params)}")
        engine = self.engine
        for p, sp in zip(prompts, params):                 # validate all before queueing any
            engine.validate(engine._prompt_ids(p), sp)
        ids = [engine.add_request(p, sp) for p, sp in zip(prompts, params)]
        done: dict[str, RequestOutput] = {}
        while engine.has_unfinished_requests():
            for out in engine.step():
                done[out.request_id] = out
        return [done[i] for i in ids]


@functools.lru_cache(maxsize=8)
def _load_tokenizer(name: str):
    """One tokenizer per model name per process (notebooks build many LLMs over one model)."""
    from ..tokenizer import Tokenizer
    return Tokenizer.from_model(name)
