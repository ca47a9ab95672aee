"""Which tokens of which sequences the next step computes (iteration-level scheduling).

There is no prefill phase and no decode phase. Each sequence has ``num_tokens`` and
``num_computed_tokens`` (engine/sequence.py); each step hands out a budget of
``max_num_batched_tokens`` tokens as ``num_scheduled_tokens`` per sequence:

    budget 8, three running sequences and a new 20-token prompt:
        A decoding            -> 1          (its newest token)
        B decoding            -> 1
        C prompt, 6 of 9 done -> 3          (the rest of its prompt: a chunk)
        D new, 20 missing     -> 3          (what is left of the budget: chunked prefill, Day 13)

Decodes go first, then unfinished prompts, then new admissions fill what is left. With
``enable_chunked_prefill=False`` a prompt is only ever scheduled whole. Two policies share this:
- ``continuous``: waiting sequences join whenever slots (``max_num_seqs``), budget and blocks allow;
- ``static``: new sequences join only when the whole previous batch has finished (what ``generate``
  on a padded batch does), so slots freed by short sequences stay empty.
When a sequence needs a block and none is free, the newest running sequence is preempted (Day 12):
by recompute (its blocks are freed; it catches up from 0 later) or by swap (its blocks are copied to
host memory; it resumes where it was). Nobody is admitted in a step that preempted.
With prefix caching (Day 15) a sequence admitted from the waiting queue starts where the cache's
longest match of its tokens ends: ``num_computed_tokens`` jumps to it, and it misses only the rest
(a sequence preempted by recompute often finds most of its own blocks again). The waiting queue is
served first come first served, or, with ``scheduling_policy="lpm"`` (Day 16, SGLang's longest
prefix match), best cached match first:

    waiting (arrival order)   cached tokens     lpm order
        W1  new topic              0              W3  (its conversation's last turn is cached)
        W2  same system prompt    64              W2
        W3  next turn of a chat  480              W1

The scheduler is the one owner of sequence state: ``schedule`` advances ``num_computed_tokens``,
``update_from_output`` appends sampled tokens and decides, in one ``check_stop``, who finished.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

from ..config import EngineConfig
from ..kv.kv_cache_manager import KVCacheManager
from .outputs import Logprob
from .sequence import Sequence, SequenceStatus


def logprob_entry(token: int, logprobs: tuple, i: int, k: int) -> dict:
    """Token ``i`` of a step as vLLM reports it: {token id: Logprob} for the chosen token and the
    ``k`` most likely ones (the chosen first; it may be among the top k too)."""
    chosen, ranks, top_ids, top_lps = logprobs
    entry = {token: Logprob(chosen[i], ranks[i])}
    for rank, (tid, lp) in enumerate(zip(top_ids[i][:k], top_lps[i][:k]) if k else (), start=1):
        entry.setdefault(tid, Logprob(lp, rank))
    return entry


LPM_MAX_WAITING = 128      # SGLang's threshold: a longer queue is served in arrival order


class ScheduledSeq(NamedTuple):
    """One sequence's share of a step. A value: nothing here changes after scheduling (a NamedTuple,
    not a frozen dataclass: one is built per sequence per step, and a frozen dataclass's __init__
    costs several times a tuple's, which at batch 256 is a visible share of a GPU step)."""
    seq_id: int
    start: int                       # its num_computed_tokens before the step: first position computed
    num_tokens: int                  # num_scheduled_tokens: positions start .. start + num_tokens - 1
    token_ids: list[int]             # the ids of those positions that the host knows
    num_from_device: int             # trailing positions whose id the previous step is still sampling
    block_ids: list[int]             # its block table (a copy), covering start + num_tokens positions
    sample: bool                     # the step computes its last missing token: sample the next one
    is_prefill: bool                 # it computes prompt (or recomputed) tokens, not only its newest
    params: object                   # its SamplingParams


class NewSeq(NamedTuple):
    """A sequence scheduled for the first time: what the runner keeps about it until it finishes
    (its sampler row: parameters, prompt tokens for the repetition penalty, sampling seed)."""
    seq_id: int
    prompt_token_ids: list[int]
    params: object
    seed: int | None = None          # the seed of its draws (None: the sampler picks one)


@dataclass(frozen=True)
class SchedulerOutput:
    """The contract between the scheduler and the model runner for one step (vLLM v1's shape).

    seqs:                the scheduled sequences, in the order their tokens are packed
    new_seqs:            those of them scheduled for the first time (the runner sets up their state)
    preempted_seq_ids:   pushed out this step (recompute or swap)
    finished_seq_ids:    finished or aborted since the previous step (the runner drops their state)
    blocks_to_swap_out:  (device block, host block) pairs to copy before the step runs
    blocks_to_swap_in:   (host block, device block) pairs, copied after the swap-outs
    blocks_to_copy:      (src, dst) device block copies (copy-on-write, Day 17): empty today
    spec_token_ids:      seq_id -> draft tokens to verify (speculative decoding, Day 20): empty today
    """
    seqs: tuple[ScheduledSeq, ...] = ()
    new_seqs: tuple[NewSeq, ...] = ()
    preempted_seq_ids: tuple[int, ...] = ()
    finished_seq_ids: tuple[int, ...] = ()
    blocks_to_swap_out: tuple[tuple[int, int], ...] = ()
    blocks_to_swap_in: tuple[tuple[int, int], ...] = ()
    blocks_to_copy: tuple[tuple[int, int], ...] = ()
    spec_token_ids: dict = field(default_factory=dict)

    @property
    def num_scheduled_tokens(self) -> dict[int, int]:
        return {s.seq_id: s.num_tokens for s in self.seqs}

    @property
    def total_num_scheduled_tokens(self) -> int:
        return sum(s.num_tokens for s in self.seqs)

    @property
    def is_prefill(self) -> bool:
        """Some sequence computes prompt tokens (the step log's label; the runner does not care)."""
        return any(s.is_prefill for s in self.seqs)

    @property
    def is_decode_only(self) -> bool:
        """One token per sequence: the shape a captured CUDA graph can replay."""
        return all(s.num_tokens == 1 for s in self.seqs)


class Scheduler:
    def __init__(self, cfg: EngineConfig, kv: KVCacheManager, max_model_len: int,
                 eos_token_ids=()):
        self.cfg, self.kv, self.max_model_len = cfg, kv, max_model_len
        self.eos_token_ids = frozenset(eos_token_ids)
        # unfinished sequences by id: a step's result names sequences by id, and one may be gone by then
        self.live: dict[int, Sequence] = {}
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.swapped: deque[Sequence] = deque()
        self.watermark_blocks = int(cfg.watermark * kv.num_blocks)
        self._finished: list[int] = []          # seq ids finished since the last schedule()
        self._caching = kv.enable_prefix_caching
        self._lpm = cfg.scheduling_policy == "lpm"

    def add(self, seq: Sequence) -> None:
        self.live[seq.seq_id] = seq
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running or self.swapped)

    # ---- one step --------------------------------------------------------------------------------
    def schedule(self, now: float = 0.0) -> SchedulerOutput:
        budget = self.cfg.max_num_batched_tokens
        batch_was_empty = not self.running
        picked: dict[int, tuple[Sequence, int]] = {}        # seq_id -> (seq, tokens), in batch order
        preempted, swap_out, swap_in = [], [], []
        decodes, prompts = [], []
        for s in self.running:
            (decodes if s.num_tokens - s.num_computed_tokens == 1 else prompts).append(s)
        tables, bs = self.kv.tables, self.kv.block_size
        max_len = self.max_model_len
        for seq in decodes:          # the common case, kept lean: one token, its last block has room
            if (budget and seq.num_computed_tokens % bs        # position not at a block boundary
                    and not (seq.num_output_placeholders and (seq.num_generated >= seq.params.max_tokens
                                                              or seq.num_tokens >= max_len))):
                picked[seq.seq_id] = (seq, 1)
                budget -= 1
        for seq in decodes + prompts:
            if seq.seq_id in picked or seq.status is not SequenceStatus.RUNNING:
                continue                                     # done above, or preempted in this loop
            n = self._num_new_tokens(seq, budget, alone=not picked)
            if n == 0:
                continue
            table = tables.get(seq.seq_id)
            if table is not None and seq.num_computed_tokens + n <= len(table) * bs:
                picked[seq.seq_id] = (seq, n)                # its last block has room
                budget -= n
                continue
            while self.kv.allocate_slots(seq.seq_id, seq.num_computed_tokens + n) is None:
                victim = self.running[-1]                    # the newest running sequence
                if victim.seq_id in picked:                  # scheduled already: give its tokens back
                    budget += picked.pop(victim.seq_id)[1]
                self._preempt(victim, preempted, swap_out)
                if victim is seq:
                    break
            else:
                picked[seq.seq_id] = (seq, n)
                budget -= n
        if not preempted and (self.cfg.scheduler == "continuous" or batch_was_empty):
            budget = self._admit(picked, budget, swap_in)
        new_seqs = tuple(NewSeq(seq.seq_id, seq.prompt_token_ids, seq.params, seq.seed)
                         for seq, _ in picked.values() if seq.first_scheduled_time is None)
        out = SchedulerOutput(
            seqs=tuple(self._commit(seq, n, now) for seq, n in picked.values()), new_seqs=new_seqs,
            preempted_seq_ids=tuple(preempted), finished_seq_ids=tuple(self._finished),
            blocks_to_swap_out=tuple(swap_out), blocks_to_swap_in=tuple(swap_in))
        self._finished = []
        return out

    def _num_new_tokens(self, seq: Sequence, budget: int, alone: bool) -> int:
        """Tokens ``seq`` gets this step: what it misses, cut to the budget (0: it sits this one out)."""
        num_tokens = seq.num_tokens
        missing = num_tokens - seq.num_computed_tokens
        if seq.num_output_placeholders and (seq.num_generated >= seq.params.max_tokens
                                             or num_tokens >= self.max_model_len):
            return 0          # its last token is in flight (async): nothing more to compute
        if self.cfg.enable_chunked_prefill:
            return min(missing, budget)
        # Unchunked: all or nothing. A preempted sequence that outgrew the budget still runs when it
        # runs alone, or it would wait forever.
        return missing if missing <= budget or alone else 0

    def _admit(self, picked: dict, budget: int, swap_in: list) -> int:
        """Bring swapped-out sequences back, then waiting ones, while slots, budget and blocks allow."""
        static = self.cfg.scheduler == "static"
        if self._lpm and len(self.waiting) > 1 and len(self.running) < self.cfg.max_num_seqs:
            self._order_by_cached_prefix()
        for queue in (self.swapped, self.waiting):
            while queue and len(self.running) < self.cfg.max_num_seqs:
                seq = queue[0]
                if seq.num_output_placeholders:       # its last token is still being read back
                    return budget
                # leave room for the running sequences to decode (the watermark), unless none runs
                reserve = self.watermark_blocks if self.running else 0
                computed, hit = self._cache_hit(seq)
                seq.num_computed_tokens += hit         # (0 before: waiting) taken back if not admitted
                n = self._num_new_tokens(seq, budget, alone=not picked)
                if n == 0 and not static:              # static admits the whole batch at once and
                    seq.num_computed_tokens -= hit     # gives it tokens over the next steps
                    return budget
                if seq.status is SequenceStatus.SWAPPED:
                    pairs = self.kv.swap_in(seq.seq_id, reserve)
                    if pairs is None:
                        return budget
                    swap_in += pairs
                if self.kv.allocate_slots(seq.seq_id, seq.num_computed_tokens + n, reserve,
                                          computed) is None:
                    if seq.status is SequenceStatus.SWAPPED:
                        n = 0                          # back on the device; tokens next step
                    else:
                        seq.num_computed_tokens -= hit
                        return budget
                if self._caching and seq.status is SequenceStatus.WAITING:
                    self._count_hit(seq, hit)
                    # filed now, not at commit: a request admitted after it in this step may share them
                    self.kv.cache_blocks(seq.seq_id, hit + n, seq.token_slice)
                queue.popleft()
                seq.status = SequenceStatus.RUNNING
                self.running.append(seq)
                if n:
                    picked[seq.seq_id] = (seq, n)
                    budget -= n
        return budget

    def _order_by_cached_prefix(self) -> None:
        """LPM: sort the waiting queue by cached tokens, most first; ties keep arrival order, and
        sequences preempted by recompute stay ahead of new ones (they held blocks already). Past
        ``LPM_MAX_WAITING`` waiting sequences the queue stays FCFS, as in SGLang: the lookups would
        cost more than they save."""
        if len(self.waiting) > LPM_MAX_WAITING:
            return
        hit = {seq.seq_id: self._cache_hit(seq)[1] for seq in self.waiting}
        ordered = sorted(self.waiting, key=lambda s: (s.num_preemptions == 0, -hit[s.seq_id]))
        self.waiting.clear()
        self.waiting.extend(ordered)

    def _cache_hit(self, seq: Sequence) -> tuple[list[int], int]:
        """The cached blocks a waiting sequence starts from, and the tokens they cover. None for a
        swapped sequence (it has its own blocks) or one asking for prompt_logprobs (a cached
        position is never computed, so it could not be scored: vLLM skips the cache for them too)."""
        if (not self._caching or seq.status is not SequenceStatus.WAITING
                or seq.params.prompt_logprobs is not None or seq.num_output_placeholders):
            return [], 0                 # (a token still in flight: its ids are not all known yet)
        return self.kv.get_computed_blocks(seq.seq_id, seq.num_tokens, seq.token_slice)

    def _count_hit(self, seq: Sequence, hit: int) -> None:
        """Prefix cache statistics, and the request's ``num_cached_tokens`` (at its first admission)."""
        if seq.first_scheduled_time is None:
            seq.num_cached_tokens = hit
        if seq.params.prompt_logprobs is None:
            stats = self.kv.stats
            stats.requests += 1
            stats.queries += seq.num_tokens
            stats.hits += hit

    def _commit(self, seq: Sequence, n: int, now: float) -> ScheduledSeq:
        """Account ``n`` tokens of ``seq`` as computed (they are, once the step runs) and describe them."""
        start, known = seq.num_computed_tokens, seq.num_known_tokens
        stop, total = start + n, known + seq.num_output_placeholders
        sample = stop == total                             # caught up: this step yields a new token
        is_prefill = start < total - 1 or total == seq.num_prompt_tokens
        seq.num_computed_tokens = stop
        if seq.first_scheduled_time is None:
            seq.first_scheduled_time = now
        if self._caching:                                  # blocks this step fills with known tokens
            self.kv.cache_blocks(seq.seq_id, min(stop, known), seq.token_slice)
        if n == 1 and stop == known:                       # decoding: its newest token, known
            ids = [seq.output_token_ids[-1] if seq.output_token_ids else seq.prompt_token_ids[-1]]
        else:
            ids = seq.token_slice(start, min(stop, known))
        scheduled = ScheduledSeq(seq.seq_id, start, n, ids, max(0, stop - known),
                                 list(self.kv.tables.get(seq.seq_id, ())), sample, is_prefill,
                                 seq.params)
        if sample:
            seq.num_output_placeholders += 1
        return scheduled

    def _preempt(self, seq: Sequence, preempted: list, swap_out: list) -> None:
        self.running.remove(seq)
        seq.num_preemptions += 1
        preempted.append(seq.seq_id)
        if self.cfg.preemption_mode == "swap" and self.kv.can_swap_out(seq.seq_id):
            swap_out += self.kv.swap_out(seq.seq_id)       # resumes at num_computed_tokens
            seq.status = SequenceStatus.SWAPPED
            self.swapped.append(seq)
        else:                                              # recompute (or no room left to swap)
            self.kv.free(seq.seq_id)
            seq.num_computed_tokens = 0
            seq.status = SequenceStatus.WAITING
            self.waiting.appendleft(seq)

    # ---- results in ------------------------------------------------------------------------------
    def update_from_output(self, sampled: list[ScheduledSeq], tokens: list[int],
                           logprobs: tuple | None, now: float) -> list[Sequence]:
        """Append each sampled token to its sequence and stop those that are done.

        ``sampled``: the step's ScheduledSeqs with ``sample`` set, in the order of ``tokens``;
        ``logprobs``: None, or (chosen logprobs, ranks, top ids, top logprobs), one entry per token.
        Returns the sequences that got a token. A token for a sequence that finished in the
        meantime (it stopped on the token before, or was aborted) is dropped."""
        progressed = []
        for i, (s, token) in enumerate(zip(sampled, tokens)):
            seq = self.live.get(s.seq_id)
            if seq is None:
                continue
            seq.num_output_placeholders -= 1
            seq.output_token_ids.append(token)
            if logprobs is not None and seq.params.logprobs is not None:
                seq.output_logprobs.append(logprob_entry(token, logprobs, i, seq.params.logprobs))
            seq.token_times.append(now)
            if seq.first_token_time is None:
                seq.first_token_time = now
            reason = self.check_stop(seq, token)
            if reason:
                self.finish(seq, reason, now)
            progressed.append(seq)
        return progressed

    def update_prompt_logprobs(self, owners: list[tuple[int, int, int]], scored: tuple) -> None:
        """Record prompt_logprobs: ``owners`` (seq_id, first position, rows) in row order; ``scored``
        the rows' (target ids, logprobs, ranks, top ids, top logprobs). A position already recorded
        (a sequence preempted by recompute computes its prompt again) is skipped."""
        targets = scored[0]
        row = 0
        for seq_id, first, count in owners:
            seq = self.live.get(seq_id)
            if seq is not None:
                for j in range(count):
                    if len(seq.prompt_logprobs) == first + j + 1:    # entry p + 1 scores token p + 1
                        seq.prompt_logprobs.append(logprob_entry(targets[row + j], scored[1:], row + j,
                                                                 seq.params.prompt_logprobs))
            row += count

    def check_stop(self, seq: Sequence, token: int) -> str | None:
        """The one place that decides whether a sequence is done, and why ("stop" or "length"; a
        stop id or stop string is kept in ``seq.stop_reason``, vLLM's field). Before ``min_tokens``
        only the length limits count (the sampler already kept EOS and stop ids out)."""
        p = seq.params
        may_stop = len(seq.output_token_ids) >= p.min_tokens
        if may_stop and not p.ignore_eos and token in self.eos_token_ids:
            return "stop"
        if may_stop and token in p.stop_token_ids:
            seq.stop_reason = token
            return "stop"
        if p.stop:                         # decode every token; match only once min_tokens is met
            hit = seq.detokenizer.update(seq.output_token_ids, check_stop=may_stop)
            if hit is not None:
                seq.stop_reason = hit
                return "stop"
        if len(seq.output_token_ids) >= p.max_tokens or seq.num_known_tokens >= self.max_model_len:
            return "length"
        return None

    def finish(self, seq: Sequence, reason: str, now: float) -> None:
        """Take ``seq`` out of whichever queue holds it, free its blocks, and mark it finished."""
        for queue in (self.running, self.waiting, self.swapped):
            if seq in queue:
                queue.remove(seq)
                break
        self.kv.free(seq.seq_id)
        seq.status, seq.finish_reason, seq.finish_time = SequenceStatus.FINISHED, reason, now
        self.live.pop(seq.seq_id, None)
        self._finished.append(seq.seq_id)
