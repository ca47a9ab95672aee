"""The engine loop for online use: ``add_request``, ``step`` (one scheduler decision + one forward
pass), ``abort_request``. ``LLM.generate`` is this loop run until every request has finished.

Who owns what: the scheduler owns sequence state (it advances ``num_computed_tokens`` when it
schedules and appends tokens in ``update_from_output``), the KV cache manager owns blocks, the model
runner owns tensors and turns a ``SchedulerOutput`` value into sampled token ids. The engine wires
them together, turns sequences into ``RequestOutput``s and keeps the step log.
"""
from __future__ import annotations

import hashlib
import itertools
import time
import warnings

import torch

from ..config import EngineConfig, SamplingParams, check_prompt_ids, is_int, kv_cache_torch_dtype
from ..kv.kv_cache_manager import KVCacheManager
from ..kv.paged import PagedKVCache
from ..models.llama import LlamaModel
from .detokenizer import IncrementalDetokenizer
from .model_runner import ModelRunner, StepHandle
from .profiling import phase
from .outputs import OUTPUT_KINDS, CompletionOutput, RequestMetrics, RequestOutput, StepRecord
from .scheduler import Scheduler, SchedulerOutput
from .sequence import Request, Sequence


def kv_block_bytes(model: LlamaModel, cfg: EngineConfig) -> int:
    """Bytes of one KV block (every layer's K and V) in the cache's dtype (``kv_cache_dtype``)."""
    cache_dtype = kv_cache_torch_dtype(cfg.kv_cache_dtype, model.dtype)
    return model.cfg.kv_bytes_per_token(torch.finfo(cache_dtype).bits // 8) * cfg.block_size


def kv_blocks_for_budget(model: LlamaModel, cfg: EngineConfig) -> int:
    """Number of KV blocks: given, or from ``kv_memory_gb``, or a default (80% of free GPU memory; 1 GiB on CPU)."""
    if cfg.num_kv_blocks is not None:
        return cfg.num_kv_blocks
    block_bytes = kv_block_bytes(model, cfg)
    if cfg.kv_memory_gb is not None:
        budget = cfg.kv_memory_gb * 2**30
    elif model.device.type == "cuda":
        budget = 0.8 * torch.cuda.mem_get_info(model.device)[0]
    else:
        budget = 2**30
    return max(1, int(budget // block_bytes))


def swap_blocks_for_budget(model: LlamaModel, cfg: EngineConfig, num_blocks: int) -> int:
    """Host blocks for swapped-out sequences: ``swap_space`` GiB, only when preempting by swap, and
    no more than the device has (a tiny test model would otherwise get millions of them). When the
    host pool is full, preemption falls back to recompute."""
    if cfg.preemption_mode != "swap":
        return 0
    return min(num_blocks, int(cfg.swap_space * 2**30 // kv_block_bytes(model, cfg)))


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample ``index`` of a request seeded with ``seed``: ``seed`` itself for the first,
    a hash of both for the others, so requests with nearby seeds never share a sample's stream."""
    if index == 0:
        return seed
    digest = hashlib.blake2b(f"{seed}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class StepLog(list):
    """The newest steps (``LLMEngine.step_log``): between ``maxlen`` and 2 x ``maxlen`` of them, so a
    long-running engine stays bounded while appending stays cheap (old steps go in one cut)."""

    def __init__(self, maxlen: int):
        super().__init__()
        self.maxlen = maxlen

    def append(self, record: StepRecord) -> None:
        if self.maxlen:
            super().append(record)
            if len(self) >= 2 * self.maxlen:
                del self[:self.maxlen]


class LLMEngine:
    def __init__(self, model: LlamaModel, tokenizer=None, cfg: EngineConfig | None = None,
                 max_model_len: int | None = None):
        self.model, self.tokenizer, self.cfg = model, tokenizer, cfg or EngineConfig()
        limit = model.cfg.max_position_embeddings
        if max_model_len is not None and not (is_int(max_model_len) and 1 <= max_model_len <= limit):
            raise ValueError(f"max_model_len must be None or an integer in [1, {limit}] (the model's "
                             f"max_position_embeddings), got {max_model_len!r}")
        self.max_model_len = max_model_len or limit
        num_blocks = kv_blocks_for_budget(model, self.cfg)
        num_swap = swap_blocks_for_budget(model, self.cfg, num_blocks)
        self.cache = PagedKVCache(model.cfg, num_blocks, self.cfg.block_size, model.device,
                                  kv_cache_torch_dtype(self.cfg.kv_cache_dtype, model.dtype),
                                  num_swap_blocks=num_swap)
        self.kv_manager = KVCacheManager(num_blocks, self.cfg.block_size, num_swap,
                                         self.cfg.enable_prefix_caching)
        eos = tokenizer.eos_token_ids if tokenizer is not None else model.cfg.eos_token_ids
        self.eos_token_ids = set(eos)
        self.scheduler = Scheduler(self.cfg, self.kv_manager, self.max_model_len, eos)
        self.runner = ModelRunner(model, self.cache, self.cfg.attention_backend, self.cfg.cuda_graphs,
                                  self.cfg.max_num_seqs, self.max_model_len, eos,
                                  # no step holds more than the token budget: no bucket past it
                                  min(self.cfg.max_cudagraph_capture_size, self.cfg.max_num_batched_tokens))
        self.requests: dict[str, Request] = {}
        self.step_log = StepLog(self.cfg.step_log_size)
        self.async_scheduling = (model.device.type == "cuda" if self.cfg.async_scheduling is None
                                 else self.cfg.async_scheduling)
        self._inflight: StepHandle | None = None     # async scheduling: the step the GPU is running
        self._seq_ids = itertools.count()
        self._request_ids = itertools.count()
        self._kind: dict[str, str] = {}               # request_id -> its output kind
        self._sent: dict[int, tuple[int, int]] = {}   # seq_id -> (tokens, characters) already reported

    # ---- requests in -------------------------------------------------------------------------
    def _prompt_ids(self, prompt) -> list[int]:
        if isinstance(prompt, str):
            if not prompt:
                raise ValueError("prompt must be a non-empty string or a non-empty list of token ids, got ''")
            if self.tokenizer is None:
                raise ValueError("prompt must be a list of token ids: this engine has no tokenizer")
            return self.tokenizer.encode(prompt)
        if not isinstance(prompt, (list, tuple)):
            raise TypeError(f"prompt must be a string or a list of token ids, got {type(prompt).__name__}")
        return check_prompt_ids(prompt, self.model.cfg.vocab_size)

    def validate(self, prompt_ids: list[int], params: SamplingParams) -> None:
        """Reject a request that could never run, before it touches any queue."""
        if not isinstance(params, SamplingParams):
            raise TypeError(f"sampling_params must be a SamplingParams, got {type(params).__name__}")
        n, total = len(prompt_ids), len(prompt_ids) + params.max_tokens
        if total > self.max_model_len:
            raise ValueError(f"prompt length ({n}) + max_tokens ({params.max_tokens}) must be <= "
                             f"max_model_len={self.max_model_len}")
        if not self.cfg.enable_chunked_prefill and n > self.cfg.max_num_batched_tokens:
            raise ValueError(f"prompt length ({n}) must be <= max_num_batched_tokens="
                             f"{self.cfg.max_num_batched_tokens} (enable_chunked_prefill=False runs a "
                             f"prompt in one step)")
        need = self.kv_manager.blocks_for(total)
        if need > self.kv_manager.num_blocks:
            raise ValueError(f"a request of {total} tokens needs {need} KV blocks, but num_kv_blocks="
                             f"{self.kv_manager.num_blocks}; raise num_kv_blocks or kv_memory_gb")
        vocab = self.model.cfg.vocab_size
        params.check_vocab(vocab)
        limit = min(self.cfg.max_logprobs, vocab)
        for name in ("logprobs", "prompt_logprobs"):
            k = getattr(params, name)
            if k is not None and k > limit:
                raise ValueError(f"{name} must be None or an integer in [0, {limit}] (EngineConfig."
                                 f"max_logprobs={self.cfg.max_logprobs}), got {k}")
        if params.stop and self.tokenizer is None:
            raise ValueError("stop (strings) needs a tokenizer: this engine has none; use stop_token_ids")

    def add_request(self, prompt, params: SamplingParams | None = None, request_id: str | None = None,
                    arrival_time: float | None = None, output_kind: str = "cumulative") -> str:
        """Queue a prompt (text or token ids). Raises ValueError/TypeError, leaving the engine
        untouched, if anything about it is invalid. ``output_kind``: see engine/outputs.py."""
        params = SamplingParams() if params is None else params
        if output_kind not in OUTPUT_KINDS:
            raise ValueError(f"output_kind must be one of {OUTPUT_KINDS}, got {output_kind!r}")
        if request_id is not None and not isinstance(request_id, str):
            raise TypeError(f"request_id must be a string or None, got {type(request_id).__name__}")
        if request_id in self.requests:
            raise ValueError(f"request_id must be unique, got {request_id!r} twice")
        if arrival_time is not None and not (isinstance(arrival_time, (int, float))
                                             and not isinstance(arrival_time, bool)):
            raise TypeError(f"arrival_time must be a number (time.perf_counter seconds) or None, "
                            f"got {arrival_time!r}")
        prompt_ids = self._prompt_ids(prompt)
        self.validate(prompt_ids, params)
        return self._add(prompt if isinstance(prompt, str) else None, prompt_ids, params, request_id,
                         arrival_time, output_kind)

    def _add(self, text, prompt_ids, params, request_id, arrival_time, output_kind) -> str:
        """Queue a request already checked (LLM.generate checks a whole batch first)."""
        while request_id is None or request_id in self.requests:   # automatic ids never collide
            request_id = str(next(self._request_ids))
        now = time.perf_counter() if arrival_time is None else arrival_time
        req = Request(request_id, text, list(prompt_ids), params, now)
        for i in range(params.n):
            seed = None if params.seed is None else sample_seed(params.seed, i)
            seq = Sequence(next(self._seq_ids), request_id, i, req.prompt_token_ids, params, now, seed=seed)
            req.seqs.append(seq)
            self._sent[seq.seq_id] = (0, 0)
            if self.tokenizer is not None and (output_kind != "final_only" or params.stop):
                seq.detokenizer = IncrementalDetokenizer(self.tokenizer, params.stop,
                                                         params.include_stop_str_in_output)
        self.requests[request_id] = req
        self._kind[request_id] = output_kind
        for seq in req.seqs:
            self.scheduler.add(seq)
        return request_id

    def abort_request(self, request_id: str) -> RequestOutput | None:
        """Stop a request wherever it is (waiting, running, swapped, preempted) and free its blocks.
        Returns its output so far (finished, reason "abort"), or None for an unknown id."""
        req = self.requests.get(request_id)
        if req is None:
            return None
        now = time.perf_counter()
        for seq in req.seqs:
            if not seq.is_finished:          # a token still in flight for it is dropped when it lands
                self.scheduler.finish(seq, "abort", now)
        self._kind[request_id] = "cumulative"
        return self._request_output(req)

    def abort_and_drain(self, request_ids) -> None:
        """Abort ``request_ids`` and step until a step still in flight for them (async scheduling)
        has landed, so the engine is left empty and every block is free (benchmarks end runs so)."""
        for rid in request_ids:
            self.abort_request(rid)
        for _ in range(4):
            if not self.has_unfinished_requests():
                break
            self.step()

    def reset_prefix_cache(self) -> bool:
        """Forget every cached block (vLLM's name). False, and nothing forgotten, while a request
        holds blocks: call it on an idle engine (benchmarks do, between runs)."""
        return self.kv_manager.reset_prefix_cache()

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_work() or self._inflight is not None

    # ---- one step --------------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        """Schedule and launch one forward pass, then take in the tokens of the pass before it.

        Returns a RequestOutput for every request that made progress (``finished`` False until its
        last one), shaped by each request's output kind. Synchronous mode (the default on CPU)
        launches and reads back the same step. Async mode (the default on CUDA) keeps one step in
        flight: while the GPU runs step t the host reads step t-1's tokens and schedules step t+1,
        whose inputs take step t's tokens straight from the GPU. A sequence that stops on EOS costs
        one wasted token (it was already scheduled again); one stopping on length costs nothing.

        If a step fails, the requests in it end with finish_reason "error" (their blocks freed, the
        error in ``RequestOutput.error``) and the others go on."""
        start = time.perf_counter()
        with phase("schedule"):
            sched = self.scheduler.schedule(start)
        if not sched.seqs:
            # Nothing to compute (under async scheduling every token may be in flight), but blocks
            # may have been swapped out or in: the copies must still happen, or a sequence would
            # later resume from stale host blocks.
            self.runner.update_states(sched)
            self.runner.swap(sched)
        if not sched.seqs and self._inflight is None:
            if self.scheduler.has_work():   # validate() makes this unreachable; never spin silently
                s = self.scheduler
                raise RuntimeError(f"scheduler made no progress with {len(s.waiting)} waiting, "
                                   f"{len(s.running)} running and {len(s.swapped)} swapped sequences")
            return []
        outputs, launched = [], None
        if sched.seqs:
            try:
                launched = self.runner.launch(sched, self._inflight)
                launched.start = start
                launched.blocks_in_use = self.kv_manager.num_blocks - self.kv_manager.num_free_blocks
            except Exception as e:
                outputs += self._fail([s.seq_id for s in sched.seqs], e)
        if self._inflight is not None:
            outputs += self._complete(self._inflight)
        self._inflight = launched
        if launched is not None and not self.async_scheduling:
            outputs += self._complete(launched)
            self._inflight = None
        return outputs

    def _complete(self, handle: StepHandle) -> list[RequestOutput]:
        """Wait for a launched step's tokens; hand them to the scheduler; build the outputs."""
        try:
            with phase("readback"):
                tokens, logprobs, prompt_logprobs = handle.result()
        except Exception as e:
            return self._fail([s.seq_id for s in handle.sched.seqs], e)
        now = time.perf_counter()
        with phase("update"):
            if prompt_logprobs is not None:
                self.scheduler.update_prompt_logprobs(*prompt_logprobs)
            progressed = self.scheduler.update_from_output(handle.sampled, tokens, logprobs, now)
            self._log(handle.sched, handle.start, now, handle.blocks_in_use)
        kind = self._kind        # a final_only request has nothing to say until a sequence finishes
        with phase("outputs"):
            return self._outputs({s.request_id for s in progressed
                                  if s.finish_reason is not None or kind[s.request_id] != "final_only"})

    def _log(self, sched: SchedulerOutput, start: float, end: float, blocks_in_use: int) -> None:
        s = self.scheduler
        self.step_log.append(StepRecord(
            start, end, sched.is_prefill, [x.seq_id for x in sched.seqs],
            sched.total_num_scheduled_tokens, self.kv_manager.num_free_blocks,
            len(sched.preempted_seq_ids), len(s.running), len(s.waiting), len(s.swapped), blocks_in_use))

    def _fail(self, seq_ids: list[int], error: Exception) -> list[RequestOutput]:
        """End the requests of a step that raised with finish_reason "error"; the others go on."""
        now = time.perf_counter()
        message = f"{type(error).__name__}: {error}"
        failed = {self.scheduler.live[i].request_id for i in seq_ids if i in self.scheduler.live}
        warnings.warn(f"engine step failed, ending requests {sorted(failed)} with an error: {message}")
        for rid in failed:
            req = self.requests[rid]
            req.error = message
            for seq in req.seqs:
                if not seq.is_finished:
                    # blocks the failed step was filling must not be found by a later request
                    self.kv_manager.uncache(seq.seq_id)
                    self.scheduler.finish(seq, "error", now)
            self._kind[rid] = "cumulative"
        return self._outputs(failed)

    # ---- results out -------------------------------------------------------------------------------
    def _outputs(self, request_ids) -> list[RequestOutput]:
        outs = []
        for rid in request_ids:
            req = self.requests.get(rid)
            if req is None or (self._kind[rid] == "final_only" and not req.is_finished):
                continue
            outs.append(self._request_output(req))
        return outs

    def _completion(self, seq: Sequence, kind: str) -> CompletionOutput:
        ids, finished = seq.output_token_ids, seq.is_finished
        detok = seq.detokenizer
        if detok is not None:              # stop strings were matched by the scheduler already
            detok.update(ids, final=finished, check_stop=False)
            text = detok.output_text(finished)
        else:
            text = self.tokenizer.decode(ids) if self.tokenizer is not None else ""
        sent_ids, sent_chars = self._sent[seq.seq_id]
        self._sent[seq.seq_id] = (len(ids), len(text))
        logprobs = None
        if seq.params.logprobs is not None:
            logprobs = seq.output_logprobs[sent_ids:] if kind == "delta" else list(seq.output_logprobs)
            self._decode_logprobs(logprobs)
        if kind == "delta":
            return CompletionOutput(seq.index, text[sent_chars:], ids[sent_ids:], seq.finish_reason,
                                    logprobs, seq.stop_reason)
        return CompletionOutput(seq.index, text, list(ids), seq.finish_reason, logprobs, seq.stop_reason)

    def _decode_logprobs(self, entries: list[dict]) -> None:
        """Fill in each Logprob's text, once (vLLM's decoded_token)."""
        if self.tokenizer is None:
            return
        for entry in reversed(entries):
            if all(lp.decoded_token is not None for lp in entry.values()):
                break                      # older entries were decoded by an earlier output
            for tid, lp in entry.items():
                lp.decoded_token = self.tokenizer.decode([tid], skip_special_tokens=False)

    def _request_output(self, req: Request) -> RequestOutput:
        kind = self._kind[req.request_id]
        seqs = req.seqs
        outs = [self._completion(s, kind) for s in seqs]
        finished = req.is_finished
        first = seqs[0]
        metrics = RequestMetrics(
            req.arrival_time,
            min((s.first_scheduled_time for s in seqs if s.first_scheduled_time), default=None),
            min((s.first_token_time for s in seqs if s.first_token_time), default=None),
            max(s.finish_time for s in seqs) if finished else None,
            sum(s.num_preemptions for s in seqs), list(first.token_times))
        if finished:   # the engine keeps nothing of a finished request
            del self.requests[req.request_id], self._kind[req.request_id]
            for s in seqs:
                self._sent.pop(s.seq_id, None)
        prompt_logprobs = None
        if req.params.prompt_logprobs is not None:
            prompt_logprobs = list(seqs[0].prompt_logprobs)
            self._decode_logprobs(prompt_logprobs[1:])
        return RequestOutput(req.request_id, req.prompt, list(req.prompt_token_ids), outs, finished,
                             metrics, req.error, prompt_logprobs, first.num_cached_tokens)
