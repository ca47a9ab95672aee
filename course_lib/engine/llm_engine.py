"""The engine loop for online use: ``add_request``, ``step`` (one scheduler decision + one forward
pass), ``abort_request``. ``LLM.generate`` is this loop run until every request has finished."""
from __future__ import annotations

import itertools
import time

import torch

from ..config import EngineConfig, SamplingParams, check_prompt_ids
from ..kv.block_manager import BlockManager
from ..kv.paged import PagedKVCache
from ..models.llama import LlamaModel
from .model_runner import ModelRunner
from .outputs import CompletionOutput, RequestMetrics, RequestOutput, StepRecord
from .scheduler import Scheduler
from .sequence import Sequence


def kv_blocks_for_budget(model: LlamaModel, cfg: EngineConfig) -> int:
    """Number of KV blocks: given, or from ``kv_memory_gb``, or a default (80% of free GPU memory; 1 GiB on CPU)."""
    if cfg.num_kv_blocks is not None:
        return cfg.num_kv_blocks
    dtype_bytes = torch.empty((), dtype=model.dtype).element_size()
    block_bytes = model.cfg.kv_bytes_per_token(dtype_bytes) * cfg.block_size
    if cfg.kv_memory_gb is not None:
        budget = cfg.kv_memory_gb * 2**30
    elif model.device.type == "cuda":
        budget = 0.8 * torch.cuda.mem_get_info(model.device)[0]
    else:
        budget = 2**30
    return max(1, int(budget // block_bytes))


class LLMEngine:
    def __init__(self, model: LlamaModel, tokenizer=None, cfg: EngineConfig | None = None,
                 max_model_len: int | None = None):
        self.model, self.tokenizer, self.cfg = model, tokenizer, cfg or EngineConfig()
        self.max_model_len = max_model_len or model.cfg.max_position_embeddings
        num_blocks = kv_blocks_for_budget(model, self.cfg)
        self.cache = PagedKVCache(model.cfg, num_blocks, self.cfg.block_size, model.device, model.dtype)
        self.block_manager = BlockManager(num_blocks, self.cfg.block_size)
        self.scheduler = Scheduler(self.cfg, self.block_manager)
        self.runner = ModelRunner(model, self.cache, self.cfg.attention_backend, self.cfg.cuda_graphs,
                                  self.cfg.max_num_seqs, self.max_model_len)
        eos = tokenizer.eos_token_ids if tokenizer is not None else model.cfg.eos_token_ids
        self.eos_token_ids = set(eos)
        self.requests: dict[str, list[Sequence]] = {}
        self.prompts: dict[str, str | None] = {}
        self.step_log: list[StepRecord] = []
        self._ids = itertools.count()

    # ---- requests in -------------------------------------------------------------------------
    def _prompt_ids(self, prompt) -> list[int]:
        if isinstance(prompt, str):
            if not prompt:
                raise ValueError("prompt must be a non-empty string or a non-empty list of token ids, got ''")
            if self.tokenizer is None:
                raise ValueError("prompt must be a list of token ids: this engine has no tokenizer")
            return self.tokenizer.encode(prompt)
        return check_prompt_ids(prompt, self.model.cfg.vocab_size)

    def validate(self, prompt_ids: list[int], params: SamplingParams) -> None:
        """Reject a request that could never run, before it touches any queue."""
        n, total = len(prompt_ids), len(prompt_ids) + params.max_tokens
        if total > self.max_model_len:
            raise ValueError(f"prompt length ({n}) + max_tokens ({params.max_tokens}) must be <= "
                             f"max_model_len={self.max_model_len}")
        if n > self.cfg.max_num_batched_tokens:
            raise ValueError(f"prompt length ({n}) must be <= max_num_batched_tokens="
                             f"{self.cfg.max_num_batched_tokens} (prefill runs in one step)")
        need = self.block_manager.blocks_for(total)
        if need > self.block_manager.num_blocks:
            raise ValueError(f"a request of {total} tokens needs {need} KV blocks, but num_kv_blocks="
                             f"{self.block_manager.num_blocks}; raise num_kv_blocks or kv_memory_gb")

    def add_request(self, prompt, params: SamplingParams | None = None, request_id: str | None = None,
                    arrival_time: float | None = None) -> str:
        """Queue a prompt (text or token ids). Raises ValueError, leaving the engine untouched, if invalid."""
        params = params or SamplingParams()
        if not isinstance(params, SamplingParams):
            raise TypeError(f"params must be a SamplingParams, got {type(params).__name__}")
        prompt_ids = self._prompt_ids(prompt)
        self.validate(prompt_ids, params)
        request_id = str(next(self._ids)) if request_id is None else request_id
        if request_id in self.requests:
            raise ValueError(f"request_id must be unique, got {request_id!r} twice")
        now = time.perf_counter() if arrival_time is None else arrival_time
        seqs = []
        for i in range(params.n):
            gen = None
            if params.seed is not None:
                gen = torch.Generator(device=self.model.device).manual_seed(params.seed + i)
            seqs.append(Sequence(next(self._ids), request_id, i, list(prompt_ids), params, now,
                                 generator=gen))
        self.requests[request_id] = seqs
        self.prompts[request_id] = prompt if isinstance(prompt, str) else None
        for seq in seqs:
            self.scheduler.add(seq)
        return request_id

    def abort_request(self, request_id: str) -> RequestOutput | None:
        """Stop a request wherever it is (waiting, running, preempted) and free its blocks."""
        seqs = self.requests.get(request_id)
        if seqs is None:
            return None
        now = time.perf_counter()
        for seq in seqs:
            if not seq.is_finished:
                self.scheduler.finish(seq, "abort")
                seq.finish_time = now
        return self._output(request_id)

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_work()

    # ---- one step --------------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        """Schedule, run the model once, append one token per scheduled sequence.

        Returns the outputs of the requests that finished in this step."""
        start = time.perf_counter()
        sched = self.scheduler.schedule()
        if sched is None:
            if self.scheduler.has_work():   # validate() makes this unreachable; never spin silently
                raise RuntimeError(f"scheduler made no progress with {len(self.scheduler.waiting)} "
                                   f"waiting and {len(self.scheduler.running)} running sequences")
            return []
        num_tokens = sched.num_tokens         # before the loop below marks the tokens as computed
        tokens, logprobs = self.runner.execute(sched)
        now = time.perf_counter()
        done = []
        for i, (seq, token) in enumerate(zip(sched.seqs, tokens)):
            if seq.first_scheduled_time is None:
                seq.first_scheduled_time = start
            seq.num_computed_tokens = seq.num_tokens
            seq.output_token_ids.append(token)
            if seq.params.logprobs:
                seq.output_logprobs.append(logprobs[i])
            seq.token_times.append(now)
            if seq.first_token_time is None:
                seq.first_token_time = now
            reason = self._stop_reason(seq, token)
            if reason:
                self.scheduler.finish(seq, reason)
                seq.finish_time = now
                if all(s.is_finished for s in self.requests[seq.request_id]):
                    done.append(self._output(seq.request_id))
        self.step_log.append(StepRecord(start, now, sched.is_prefill, [s.seq_id for s in sched.seqs],
                                        num_tokens, self.block_manager.num_free_blocks,
                                        len(sched.preempted)))
        return done

    def _stop_reason(self, seq: Sequence, token: int) -> str | None:
        p = seq.params
        if (not p.ignore_eos and token in self.eos_token_ids) or token in p.stop_token_ids:
            return "stop"
        if len(seq.output_token_ids) >= p.max_tokens or seq.num_tokens >= self.max_model_len:
            return "length"
        return None

    def _output(self, request_id: str) -> RequestOutput:
        seqs = self.requests[request_id]
        decode = self.tokenizer.decode if self.tokenizer is not None else (lambda ids: "")
        outs = [CompletionOutput(s.index, decode(s.output_token_ids), list(s.output_token_ids),
                                 s.finish_reason, list(s.output_logprobs) if s.params.logprobs else None)
                for s in seqs]
        first = seqs[0]
        finished = all(s.is_finished for s in seqs)
        metrics = RequestMetrics(
            first.arrival_time, min((s.first_scheduled_time for s in seqs if s.first_scheduled_time),
                                    default=None),
            min((s.first_token_time for s in seqs if s.first_token_time), default=None),
            max(s.finish_time for s in seqs) if finished else None,
            sum(s.num_preemptions for s in seqs), list(first.token_times))
        prompt = self.prompts.get(request_id)
        if finished:   # the engine keeps nothing of a finished request
            del self.requests[request_id]
            del self.prompts[request_id]
        return RequestOutput(request_id, prompt, list(first.prompt_token_ids), outs, finished, metrics)
