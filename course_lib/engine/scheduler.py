"""Which sequences run in the next step (iteration-level scheduling, as in Orca and vLLM).

Two policies on the same machinery:
- ``continuous``: every step, finished sequences leave and waiting ones join if the token budget,
  the batch-size cap and free KV blocks allow it.
- ``static``: a batch is formed only when the previous one has completely finished; slots freed by
  short sequences stay empty until the longest member is done (what `generate` on a padded batch does).

A continuous step decodes one token for every running sequence and, in the same forward pass, runs
the whole prompt of each newly admitted one (a "mixed" step: is_prefill is True when it has any
prompt work). A static step is either the prefill of a new batch or a decode step of the batch.
When a decode step needs a KV block and none is free, the most recently admitted sequence is
preempted: its blocks are freed and it goes back to the front of the queue, to be recomputed later.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from ..config import EngineConfig
from ..kv.block_manager import BlockManager
from .sequence import Sequence, SequenceStatus


@dataclass
class SchedulerOutput:
    """The contract between scheduler and model runner for one step."""
    seqs: list[Sequence]
    is_prefill: bool                 # some sequence computes more than one token (a prompt)
    preempted: list[Sequence] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        """Tokens this step computes: the uncached tail of every sequence (1 for a decoding one)."""
        return sum(s.num_tokens - s.num_computed_tokens for s in self.seqs)


class Scheduler:
    def __init__(self, cfg: EngineConfig, block_manager: BlockManager):
        self.cfg, self.blocks = cfg, block_manager
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self._batch_open = True     # static policy: may the current batch still take new members?

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> SchedulerOutput | None:
        if self.cfg.scheduler == "static":
            return self._schedule_static()
        # continuous: every running sequence decodes one token and waiting ones join in the SAME
        # step (as in vLLM V1): admitting a request costs no extra pass over the weights.
        out = self._decode() if self.running else SchedulerOutput([], is_prefill=False)
        if not out.preempted:     # memory is short this step: admit nobody
            admitted = self._admit(self.cfg.max_num_batched_tokens - len(out.seqs))
            out.seqs += admitted
            out.is_prefill = bool(admitted)
        return out if out.seqs else None

    def _schedule_static(self) -> SchedulerOutput | None:
        if not self.running:
            self._batch_open = True
        if self._batch_open:
            admitted = self._admit(self.cfg.max_num_batched_tokens)
            if admitted:
                return SchedulerOutput(admitted, is_prefill=True)
        if not self.running:
            return None
        self._batch_open = False
        return self._decode()

    def _admit(self, budget: int) -> list[Sequence]:
        """Move waiting sequences into the cache, oldest first, while budget, slots and blocks allow."""
        admitted = []
        while self.waiting and len(self.running) < self.cfg.max_num_seqs:
            seq = self.waiting[0]
            n = seq.num_tokens    # a preempted sequence recomputes its outputs too
            # The budget bounds how much prefill is batched together; a preempted sequence that
            # has outgrown it is still admitted when it would run alone, or it would wait forever.
            over_budget = n > budget and (admitted or self.running)
            if over_budget or not self.blocks.can_grow(seq.block_table, n):
                break
            self.waiting.popleft()
            self.blocks.grow(seq.block_table, n)
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            admitted.append(seq)
            budget -= n
        return admitted

    def _decode(self) -> SchedulerOutput:
        """One token for every running sequence; preempt the newest when blocks run out."""
        scheduled, preempted = [], []
        queue = deque(self.running)
        bs = self.blocks.block_size
        while queue:
            seq = queue.popleft()
            if seq.num_tokens <= len(seq.block_table) * bs:   # 15 steps in 16: its last block has room
                scheduled.append(seq)
                continue
            while not self.blocks.can_grow(seq.block_table, seq.num_tokens):
                victim = queue.pop() if queue else seq
                self.preempt(victim)
                preempted.append(victim)
                if victim is seq:
                    break
            else:
                self.blocks.grow(seq.block_table, seq.num_tokens)
                scheduled.append(seq)
        return SchedulerOutput(scheduled, is_prefill=False, preempted=preempted)

    def preempt(self, seq: Sequence) -> None:
        """Recompute-style preemption: drop the KV, keep the tokens, requeue at the front."""
        self.running.remove(seq)
        self.blocks.free(seq.block_table)
        seq.num_computed_tokens = 0
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        self.waiting.appendleft(seq)

    def finish(self, seq: Sequence, reason: str) -> None:
        """Remove ``seq`` from whichever queue holds it and free its blocks."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.blocks.free(seq.block_table)
        seq.status, seq.finish_reason = SequenceStatus.FINISHED, reason
