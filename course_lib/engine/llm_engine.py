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
from .model_runner import ModelRunner, StepHandle
from .outputs import CompletionOutput, RequestMetrics, RequestOutput, StepRecord
from .scheduler import Scheduler
from .sequence import PENDING, Sequence


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
        self.async_scheduling = (model.device.type == "cuda" if self.cfg.async_scheduling is None
                                 else self.cfg.async_scheduling)
        self._inflight: StepHandle | None = None     # async scheduling: the step the GPU is running
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
            while seq.output_token_ids and seq.output_token_ids[-1] == PENDING:
                seq.output_token_ids.pop()   # in flight: dropped when it lands
            if not seq.is_finished:
                self.scheduler.finish(seq, "abort")
            if seq.finish_time is None:
                seq.finish_time = now
        return self._output(request_id)

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_work() or self._inflight is not None

    # ---- one step --------------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        """Schedule and launch one forward pass, then take in the tokens of the pass before it.

        Returns the outputs of the requests that finished. Synchronous mode (the default on CPU)
        launches and reads back the same step. Async mode (the default on CUDA) keeps one step in
        flight: while the GPU runs step t the host reads step t-1's tokens and schedules step t+1, whose
        inputs take step t's tokens straight from the GPU. A sequence that stops on EOS costs one
        wasted token (it was already scheduled again); one stopping on length costs nothing (known ahead).
        """
        start = time.perf_counter()
        sched = self.scheduler.schedule()
        if sched is None and self._inflight is None:
            if self.scheduler.has_work():   # validate() makes this unreachable; never spin silently
                raise RuntimeError(f"scheduler made no progress with {len(self.scheduler.waiting)} "
                                   f"waiting and {len(self.scheduler.running)} running sequences")
            return []
        launched = None if sched is None else self._launch(sched, start)
        done = self._complete(self._inflight) if self._inflight is not None else []
        self._inflight = launched
        if launched is not None and not self.async_scheduling:
            done += self._complete(launched)
            self._inflight = None
        return done

    def _launch(self, sched, start: float) -> StepHandle:
        """Queue the step on the device, then account its tokens as if already computed (PENDING)."""
        handle = self.runner.launch(sched, self._inflight)
        handle.start, handle.num_tokens = start, sched.num_tokens
        for seq in sched.seqs:
            if seq.first_scheduled_time is None:
                seq.first_scheduled_time = start
            seq.num_computed_tokens = seq.num_tokens
            handle.out_index.append(len(seq.output_token_ids))
            seq.output_token_ids.append(PENDING)
            if len(seq.output_token_ids) >= seq.params.max_tokens or seq.num_tokens >= self.max_model_len:
                # Known before the token is: free the blocks now. The GPU still reads them in this
                # step, but any later step that reuses them runs after it on the same stream.
                self.scheduler.finish(seq, "length")
        return handle

    def _complete(self, handle: StepHandle) -> list[RequestOutput]:
        """Wait for a launched step's tokens; append them, stop sequences, emit finished requests."""
        tokens, logprobs = handle.result()
        now = time.perf_counter()
        done = []
        for i, (seq, token) in enumerate(zip(handle.sched.seqs, tokens)):
            k = handle.out_index[i]
            if k >= len(seq.output_token_ids) or seq.output_token_ids[k] != PENDING:
                continue                      # stopped or aborted before this token: it is dropped
            seq.output_token_ids[k] = token
            if seq.params.logprobs:
                seq.output_logprobs.append(logprobs[i])
            seq.token_times.append(now)
            if seq.first_token_time is None:
                seq.first_token_time = now
            if self._is_stop_token(seq, token):
                del seq.output_token_ids[k + 1:]      # a token already scheduled after it is dropped
                if seq.is_finished:
                    seq.finish_reason = "stop"        # it ended on both counts; EOS is the reason
                else:
                    self.scheduler.finish(seq, "stop")
            if seq.is_finished and len(seq.output_token_ids) == k + 1:   # its last token is in
                seq.finish_time = now
                if all(s.is_finished and s.finish_time is not None
                       for s in self.requests[seq.request_id]):
                    done.append(self._output(seq.request_id))
        self.step_log.append(StepRecord(handle.start, now, handle.sched.is_prefill,
                                        [s.seq_id for s in handle.sched.seqs], handle.num_tokens,
                                        self.block_manager.num_free_blocks,
                                        len(handle.sched.preempted)))
        return done

    def _is_stop_token(self, seq: Sequence, token: int) -> bool:
        return (not seq.params.ignore_eos and token in self.eos_token_ids) or token in seq.params.stop_token_ids

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
