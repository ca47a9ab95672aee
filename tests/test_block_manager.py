"""The block manager, white-box (exact block ids, reference counts, free order) and as a state machine.

No model and no tensors: the scheduler is driven with simulated sequences and a fake model runner that
"computes" every scheduled token and appends one new token per sequence, as `LLMEngine.step` does.
"""
import math

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition, rule)

from course_lib.config import EngineConfig, SamplingParams
from course_lib.engine.scheduler import Scheduler
from course_lib.engine.sequence import Sequence, SequenceStatus
from course_lib.kv.block_manager import BlockManager, NoFreeBlocksError


def blocks_needed(num_tokens: int, block_size: int) -> int:
    """ceil(num_tokens / block_size), computed here rather than trusted from the code under test."""
    return math.ceil(num_tokens / block_size)


def snapshot(bm: BlockManager):
    return list(bm.free_blocks), list(bm.ref_counts)


# ---- white-box unit tests ------------------------------------------------------------------------

def test_fresh_manager_has_every_block_free_in_order():
    bm = BlockManager(num_blocks=5, block_size=4)
    assert list(bm.free_blocks) == [0, 1, 2, 3, 4]
    assert bm.ref_counts == [0] * 5
    assert bm.num_free_blocks == 5


@pytest.mark.parametrize("num_blocks, block_size", [(0, 4), (4, 0), (-1, 1)])
def test_constructor_rejects_non_positive_sizes(num_blocks, block_size):
    with pytest.raises(ValueError, match="num_blocks and block_size"):
        BlockManager(num_blocks, block_size)


@pytest.mark.parametrize("num_tokens, blocks", [(0, 0), (1, 1), (3, 1), (4, 1), (5, 2), (8, 2), (9, 3)])
def test_blocks_for_is_ceil_division(num_tokens, blocks):
    assert BlockManager(16, 4).blocks_for(num_tokens) == blocks


def test_missing_blocks_and_can_grow():
    bm = BlockManager(num_blocks=3, block_size=4)
    assert bm.missing_blocks([], 9) == 3 and bm.can_grow([], 9)
    assert bm.missing_blocks([], 13) == 4 and not bm.can_grow([], 13)
    assert bm.missing_blocks([7, 8], 5) == 0                  # already covered: never negative
    assert bm.missing_blocks([7, 8], 9) == 1


def test_slot_math_matches_the_docstring_picture():
    # block_table [7, 2, 9], block_size 4: positions 0-3 -> block 7, 4-7 -> block 2, 8-9 -> block 9
    bm = BlockManager(num_blocks=10, block_size=4)
    table = [7, 2, 9]
    assert [bm.slot(table, p) for p in range(10)] == [28, 29, 30, 31, 8, 9, 10, 11, 36, 37]


def test_grow_takes_blocks_from_the_head_of_the_free_list():
    bm = BlockManager(num_blocks=6, block_size=4)
    a = []
    bm.grow(a, 9)                                     # 9 tokens -> 3 blocks
    assert a == [0, 1, 2]
    assert bm.ref_counts == [1, 1, 1, 0, 0, 0]
    assert list(bm.free_blocks) == [3, 4, 5]
    bm.grow(a, 12)                                    # still fits in block 2: nothing claimed
    assert a == [0, 1, 2] and bm.num_free_blocks == 3
    bm.grow(a, 13)                                    # position 12 needs a 4th block
    assert a == [0, 1, 2, 3]
    assert list(bm.free_blocks) == [4, 5]


def test_free_returns_blocks_tail_first_and_they_are_reused_oldest_first():
    bm = BlockManager(num_blocks=6, block_size=4)
    a, b = [], []
    bm.grow(a, 9)                                     # [0, 1, 2]
    bm.grow(b, 5)                                     # [3, 4]
    assert b == [3, 4]
    bm.free(a)
    assert a == []                                    # the table is cleared in place
    assert list(bm.free_blocks) == [5, 2, 1, 0]       # appended in reverse: A's tail block first
    assert bm.ref_counts == [0, 0, 0, 1, 1, 0]
    c = []
    bm.grow(c, 8)
    assert c == [5, 2]                                # never-used block 5, then A's tail block
    assert list(bm.free_blocks) == [1, 0]
    bm.free(b)
    bm.free(c)
    assert sorted(bm.free_blocks) == list(range(6)) and bm.ref_counts == [0] * 6


def test_free_of_a_cleared_table_is_a_no_op():
    bm = BlockManager(num_blocks=4, block_size=2)
    t = []
    bm.grow(t, 3)
    bm.free(t)
    before = snapshot(bm)
    bm.free(t)                                        # same (now empty) list again: no double free
    assert snapshot(bm) == before


def test_grow_without_enough_blocks_raises_and_changes_nothing():
    bm = BlockManager(num_blocks=4, block_size=4)
    a, b = [], []
    bm.grow(a, 10)                                    # [0, 1, 2]
    bm.grow(b, 1)                                     # [3]
    bm.free(a)                                        # free list [2, 1, 0]
    before, b_before = snapshot(bm), list(b)
    with pytest.raises(NoFreeBlocksError, match="need 4 blocks, 3 free"):
        bm.grow(b, 17)                                # 5 blocks for 17 tokens; b holds 1
    assert snapshot(bm) == before and b == b_before
    assert not bm.can_grow(b, 17) and bm.can_grow(b, 16)
    bm.grow(b, 16)                                    # exactly fits: the pool is now empty
    assert b == [3, 2, 1, 0] and bm.num_free_blocks == 0
    with pytest.raises(NoFreeBlocksError):
        bm.grow([], 1)
    assert b == [3, 2, 1, 0] and bm.ref_counts == [1, 1, 1, 1]


def test_a_shared_block_returns_to_the_free_list_only_with_its_last_reference():
    # No public fork yet: share a block by hand, as prefix caching will (two tables, ref count 2).
    bm = BlockManager(num_blocks=4, block_size=4)
    a = []
    bm.grow(a, 6)                                     # [0, 1]
    b = [a[0]]
    bm.ref_counts[a[0]] += 1
    bm.grow(b, 6)                                     # b = [0, 2]: its own second block
    assert b == [0, 2] and bm.ref_counts == [2, 1, 1, 0]
    bm.free(a)
    assert bm.ref_counts == [1, 0, 1, 0] and list(bm.free_blocks) == [3, 1]
    bm.free(b)
    assert bm.ref_counts == [0, 0, 0, 0] and list(bm.free_blocks) == [3, 1, 2, 0]


# ---- the state machine ---------------------------------------------------------------------------

class SchedulerMachine(RuleBasedStateMachine):
    """Sequences arrive, steps run (admission, decode growth, preemption by the scheduler), and
    sequences are also finished, preempted and aborted from outside at any moment."""

    @initialize(policy=st.sampled_from(["continuous", "static"]), block_size=st.integers(1, 4),
                num_blocks=st.integers(4, 12), max_num_seqs=st.integers(1, 4))
    def setup(self, policy, block_size, num_blocks, max_num_seqs):
        self.bm = BlockManager(num_blocks, block_size)
        capacity = num_blocks * block_size
        # a token budget that holds any sequence: prompt + outputs never exceeds the pool
        self.sched = Scheduler(EngineConfig(scheduler=policy, max_num_seqs=max_num_seqs,
                                            max_num_batched_tokens=capacity, block_size=block_size,
                                            num_kv_blocks=num_blocks), self.bm)
        self.capacity = capacity
        self.seqs: list[Sequence] = []
        self.next_id = 0

    # -- helpers
    def _unfinished(self):
        return [s for s in self.seqs if not s.is_finished]

    def _simulate_step(self):
        """One engine step without a model; returns the SchedulerOutput."""
        out = self.sched.schedule()
        if out is None:
            return None
        assert out.seqs, "the scheduler returned an empty step"
        assert len(self.sched.running) <= self.sched.cfg.max_num_seqs
        if out.is_prefill:
            assert out.num_tokens <= self.sched.cfg.max_num_batched_tokens
        for seq in out.preempted:
            assert seq.status is SequenceStatus.WAITING and seq.block_table == []
            assert seq not in out.seqs
        for seq in out.seqs:
            assert seq.status is SequenceStatus.RUNNING
            # every token this step computes has a slot
            assert len(seq.block_table) == blocks_needed(seq.num_tokens, self.bm.block_size)
            seq.num_computed_tokens = seq.num_tokens
            seq.output_token_ids.append(0)
            if len(seq.output_token_ids) >= seq.params.max_tokens:
                self.sched.finish(seq, "length")
        return out

    # -- rules
    @rule(data=st.data())
    def allocate(self, data):
        """A new request arrives with a random prompt length and output budget that fit the pool."""
        prompt = data.draw(st.integers(1, self.capacity - 1), label="prompt_len")
        max_tokens = data.draw(st.integers(1, self.capacity - prompt), label="max_tokens")
        seq = Sequence(self.next_id, str(self.next_id), 0, [1] * prompt,
                       SamplingParams(max_tokens=max_tokens), arrival_time=0.0)
        self.next_id += 1
        self.seqs.append(seq)
        self.sched.add(seq)

    @rule()
    def step(self):
        """Admission (allocate), or one token for every running sequence (append, maybe preempt)."""
        self._simulate_step()

    @precondition(lambda self: self.sched.running)
    @rule(data=st.data())
    def append_by_hand(self, data):
        """Grow one running sequence's table for its pending token, as a decode step would."""
        seq = data.draw(st.sampled_from(self.sched.running))
        before, table = snapshot(self.bm), list(seq.block_table)
        if self.bm.can_grow(seq.block_table, seq.num_tokens):
            self.bm.grow(seq.block_table, seq.num_tokens)
            seq.num_computed_tokens = seq.num_tokens
            seq.output_token_ids.append(0)
            if len(seq.output_token_ids) >= seq.params.max_tokens:
                self.sched.finish(seq, "length")
        else:
            with pytest.raises(NoFreeBlocksError):
                self.bm.grow(seq.block_table, seq.num_tokens)
            assert snapshot(self.bm) == before and seq.block_table == table

    @precondition(lambda self: self.sched.running)
    @rule(data=st.data())
    def finish(self, data):
        seq = data.draw(st.sampled_from(self.sched.running))
        self.sched.finish(seq, "stop")
        assert seq.block_table == [] and seq not in self.sched.running

    @precondition(lambda self: self.sched.running)
    @rule(data=st.data())
    def preempt(self, data):
        seq = data.draw(st.sampled_from(self.sched.running))
        n = seq.num_tokens
        self.sched.preempt(seq)
        assert seq.status is SequenceStatus.WAITING and self.sched.waiting[0] is seq
        assert seq.block_table == [] and seq.num_computed_tokens == 0 and seq.num_tokens == n

    @precondition(lambda self: any(not s.is_finished for s in self.seqs))
    @rule(data=st.data())
    def abort(self, data):
        """Abort a new, running or preempted sequence."""
        seq = data.draw(st.sampled_from(self._unfinished()))
        self.sched.finish(seq, "abort")
        assert seq.finish_reason == "abort" and seq.block_table == []
        assert seq not in self.sched.running and seq not in self.sched.waiting

    # -- invariants
    @invariant()
    def free_list_has_no_duplicates(self):
        assert len(set(self.bm.free_blocks)) == len(self.bm.free_blocks)

    @invariant()
    def free_and_owned_partition_the_pool(self):
        free = set(self.bm.free_blocks)
        owned = [b for s in self.seqs for b in s.block_table]
        assert not free & set(owned), "a block is both free and owned"
        assert free | set(owned) == set(range(self.bm.num_blocks)), "a block is lost"

    @invariant()
    def ref_counts_count_the_tables(self):
        holders = [0] * self.bm.num_blocks
        for s in self.seqs:
            for b in s.block_table:
                holders[b] += 1
        assert self.bm.ref_counts == holders
        assert all(self.bm.ref_counts[b] == 0 for b in self.bm.free_blocks)

    @invariant()
    def tables_match_the_queues(self):
        running, waiting = self.sched.running, self.sched.waiting
        for s in self.seqs:
            if s.status is SequenceStatus.RUNNING:
                assert s in running and s not in waiting
                # the computed tokens, exactly: blocks are claimed only when a token needs one
                assert len(s.block_table) == blocks_needed(s.num_computed_tokens, self.bm.block_size)
                assert s.num_computed_tokens == s.num_tokens - 1   # one sampled token is pending
            else:
                assert s.block_table == [] and s not in running
                assert (s in waiting) == (s.status is SequenceStatus.WAITING)
        assert len(running) + len(waiting) == len(self._unfinished())

    def teardown(self):
        if not hasattr(self, "sched"):
            return
        # Liveness: with nothing new arriving, the scheduler finishes everything (the pool and the
        # token budget hold any single sequence, so preemption can't livelock).
        bound = sum(s.params.max_tokens + 1 for s in self.seqs) * 2 + 10
        for _ in range(bound):
            if not self.sched.has_work():
                break
            assert self._simulate_step() is not None, "work is queued but nothing can be scheduled"
        assert not self.sched.has_work(), "the scheduler did not drain"
        for s in self._unfinished():
            self.sched.finish(s, "abort")
        assert sorted(self.bm.free_blocks) == list(range(self.bm.num_blocks))
        assert self.bm.ref_counts == [0] * self.bm.num_blocks
        assert all(s.is_finished and s.block_table == [] for s in self.seqs)


SchedulerMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None,
                                              suppress_health_check=[HealthCheck.too_slow])
test_scheduler_and_block_manager_state_machine = SchedulerMachine.TestCase
