"""The block pool and KV cache manager, white-box (exact block ids, ref counts, free order), and the
scheduler over them as a Hypothesis state machine.

No model and no tensors: the scheduler is driven with simulated sequences and a fake model runner
that "computes" every scheduled token and samples token 0 for every sequence that caught up, in
synchronous or async mode (one step in flight, its tokens landing after the next step is scheduled),
as `LLMEngine.step` does.
"""
import math

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from course_lib.config import EngineConfig, SamplingParams
from course_lib.engine.scheduler import Scheduler
from course_lib.engine.sequence import Sequence, SequenceStatus
from course_lib.kv.block_pool import BlockPool, NoFreeBlocksError
from course_lib.kv.kv_cache_manager import KVCacheManager


def blocks_needed(num_tokens: int, block_size: int) -> int:
    """ceil(num_tokens / block_size), computed here rather than trusted from the code under test."""
    return math.ceil(num_tokens / block_size)


def snapshot(kv: KVCacheManager):
    return kv.pool.free_block_ids(), [b.ref_cnt for b in kv.pool.blocks], {k: kv.block_ids(k) for k in kv.tables}


# ---- white-box unit tests ------------------------------------------------------------------------

def test_fresh_pool_has_every_block_free_in_order():
    pool = BlockPool(5)
    assert pool.free_block_ids() == [0, 1, 2, 3, 4]
    assert [b.ref_cnt for b in pool.blocks] == [0] * 5 and pool.num_free_blocks == 5
    assert all(b.block_hash is None for b in pool.blocks)


@pytest.mark.parametrize("num_blocks, block_size", [(0, 4), (4, 0), (-1, 1), (2.5, 4), (4, True)])
def test_constructor_rejects_bad_sizes(num_blocks, block_size):
    with pytest.raises(ValueError, match="num_blocks|block_size"):
        KVCacheManager(num_blocks, block_size)


@pytest.mark.parametrize("num_tokens, blocks", [(0, 0), (1, 1), (3, 1), (4, 1), (5, 2), (8, 2), (9, 3)])
def test_blocks_for_is_ceil_division(num_tokens, blocks):
    assert KVCacheManager(16, 4).blocks_for(num_tokens) == blocks


def test_allocate_slots_takes_blocks_from_the_front_only_when_a_token_needs_one():
    kv = KVCacheManager(6, 4)
    assert kv.allocate_slots(7, 9) == [0, 1, 2]               # 9 tokens -> 3 blocks
    assert [b.ref_cnt for b in kv.pool.blocks] == [1, 1, 1, 0, 0, 0]
    assert kv.allocate_slots(7, 12) == [] and kv.num_free_blocks == 3   # still fits block 2
    assert kv.allocate_slots(7, 13) == [3]                    # position 12 needs a 4th block
    assert kv.block_ids(7) == [0, 1, 2, 3] and kv.pool.free_block_ids() == [4, 5]
    assert kv.num_missing_blocks(7, 5) == 0                    # covered already: never negative


def test_free_returns_blocks_tail_first_and_they_are_reused_oldest_first():
    kv = KVCacheManager(6, 4)
    kv.allocate_slots("a", 9)                                  # [0, 1, 2]
    assert kv.allocate_slots("b", 5) == [3, 4]
    kv.free("a")
    assert kv.block_ids("a") == [] and "a" not in kv.tables
    assert kv.pool.free_block_ids() == [5, 2, 1, 0]            # at the back, a's tail block first
    assert kv.allocate_slots("c", 8) == [5, 2]                 # never-used block 5, then a's tail
    kv.free("b"), kv.free("c")
    assert sorted(kv.pool.free_block_ids()) == list(range(6))
    assert all(b.ref_cnt == 0 for b in kv.pool.blocks)


def test_free_of_an_unknown_or_freed_sequence_is_a_no_op():
    kv = KVCacheManager(4, 2)
    kv.allocate_slots(1, 3)
    kv.free(1)
    before = snapshot(kv)
    kv.free(1), kv.free(99)
    assert snapshot(kv) == before


def test_allocation_that_does_not_fit_returns_none_and_changes_nothing():
    kv = KVCacheManager(4, 4)
    kv.allocate_slots("a", 10)                                 # [0, 1, 2]
    kv.allocate_slots("b", 1)                                  # [3]
    kv.free("a")                                               # free queue [2, 1, 0]
    before = snapshot(kv)
    assert kv.allocate_slots("b", 17) is None                  # 5 blocks; b holds 1, 3 free
    assert snapshot(kv) == before
    assert kv.allocate_slots("b", 16, reserve=1) is None       # fits, but not above the watermark
    assert snapshot(kv) == before
    assert kv.allocate_slots("b", 16) == [2, 1, 0] and kv.num_free_blocks == 0
    with pytest.raises(NoFreeBlocksError):
        kv.pool.allocate(1)


def test_a_forked_block_returns_to_the_free_queue_only_with_its_last_reference():
    kv = KVCacheManager(4, 4)
    kv.allocate_slots("a", 6)                                  # [0, 1]
    kv.fork("a", "b")
    assert kv.block_ids("b") == [0, 1] and [b.ref_cnt for b in kv.pool.blocks] == [2, 2, 0, 0]
    with pytest.raises(ValueError, match="already owns"):
        kv.fork("a", "b")
    kv.allocate_slots("b", 9)                                  # b grows on its own: block 2
    assert kv.block_ids("b") == [0, 1, 2] and kv.block_ids("a") == [0, 1]
    kv.free("a")
    assert [b.ref_cnt for b in kv.pool.blocks] == [1, 1, 1, 0] and kv.pool.free_block_ids() == [3]
    kv.free("b")
    assert kv.pool.free_block_ids() == [3, 2, 1, 0]


def test_swap_out_and_in_move_blocks_between_pools_with_the_pairs_to_copy():
    kv = KVCacheManager(4, 2, num_swap_blocks=3)
    kv.allocate_slots("a", 5)                                  # device [0, 1, 2]
    assert kv.can_swap_out("a")
    assert kv.swap_out("a") == [(0, 0), (1, 1), (2, 2)]
    assert kv.block_ids("a") == [] and kv.num_free_blocks == 4 and kv.swap_pool.num_free_blocks == 0
    kv.allocate_slots("b", 4)                                  # takes device 3, 2
    assert kv.swap_in("a") is None                             # 3 needed, 2 free: nothing moves
    assert kv.swap_in("a", reserve=0) is None and "a" in kv.swapped
    kv.free("b")
    pairs = kv.swap_in("a")
    assert [h for h, _ in pairs] == [0, 1, 2] and kv.block_ids("a") == [d for _, d in pairs]
    assert kv.swap_pool.num_free_blocks == 3 and "a" not in kv.swapped
    assert not KVCacheManager(4, 2).can_swap_out("a")          # no host pool: recompute instead


# ---- the state machine ---------------------------------------------------------------------------

class SchedulerMachine(RuleBasedStateMachine):
    """Sequences arrive, steps run (admission, chunked prefill, decode growth, preemption by recompute
    or swap), blocks are forked and released, and sequences are finished and aborted from outside at
    any moment, including while a token of theirs is in flight."""

    @initialize(policy=st.sampled_from(["continuous", "static"]), block_size=st.integers(1, 4),
                num_blocks=st.integers(4, 12), max_num_seqs=st.integers(1, 4),
                budget=st.integers(1, 12), chunked=st.booleans(),
                mode=st.sampled_from(["recompute", "swap"]), swap_blocks=st.integers(0, 12),
                async_=st.booleans())
    def setup(self, policy, block_size, num_blocks, max_num_seqs, budget, chunked, mode, swap_blocks,
              async_):
        self.kv = KVCacheManager(num_blocks, block_size, swap_blocks if mode == "swap" else 0)
        self.capacity = num_blocks * block_size
        if not chunked:
            budget = self.capacity          # unchunked, any prompt must fit one step
        self.cfg = EngineConfig(scheduler=policy, max_num_seqs=max_num_seqs, max_num_batched_tokens=budget,
                                enable_chunked_prefill=chunked, block_size=block_size,
                                num_kv_blocks=num_blocks, preemption_mode=mode)
        self.sched = Scheduler(self.cfg, self.kv, max_model_len=self.capacity)
        self.async_, self.inflight = async_, None
        self.seqs: list[Sequence] = []
        self.forks: dict[str, int] = {}      # fork id -> the sequence it copied
        self.next_id = 0

    # -- helpers
    def _unfinished(self):
        return [s for s in self.seqs if not s.is_finished]

    def _land(self, out):
        sampled = [s for s in out.seqs if s.sample]
        self.sched.update_from_output(sampled, [0] * len(sampled), None, now=1.0)

    def _simulate_step(self):
        """One engine step without a model; returns the SchedulerOutput."""
        out = self.sched.schedule()
        assert len(self.sched.running) <= self.cfg.max_num_seqs
        if self.cfg.enable_chunked_prefill:
            assert out.total_num_scheduled_tokens <= self.cfg.max_num_batched_tokens
        for s in out.seqs:
            seq = self.sched.live[s.seq_id]
            assert seq.status is SequenceStatus.RUNNING
            assert s.seq_id not in out.preempted_seq_ids
            assert len(s.block_ids) >= blocks_needed(s.start + s.num_tokens, self.kv.block_size), \
                "a scheduled token has no slot"
            assert s.num_from_device <= 1 and (not s.num_from_device or self.async_)
        if self.async_:                       # the previous step's tokens land after this one is out
            if self.inflight is not None:
                self._land(self.inflight)
            self.inflight = out if out.seqs else None
        else:
            self._land(out)
        return out

    # -- rules
    @rule(data=st.data())
    def arrive(self, data):
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
        self._simulate_step()

    @precondition(lambda self: self.sched.running)
    @rule(data=st.data())
    def fork(self, data):
        """Share a running sequence's blocks (a sample forked, Day 17): counts up, nothing copied."""
        seq = data.draw(st.sampled_from(self.sched.running))
        fid = f"fork{self.next_id}"
        self.next_id += 1
        self.kv.fork(seq.seq_id, fid)
        self.forks[fid] = seq.seq_id

    @precondition(lambda self: self.forks)
    @rule(data=st.data())
    def release_fork(self, data):
        fid = data.draw(st.sampled_from(sorted(self.forks)))
        self.kv.free(fid)
        del self.forks[fid]

    @precondition(lambda self: self.sched.running)
    @rule(data=st.data())
    def finish(self, data):
        seq = data.draw(st.sampled_from(self.sched.running))
        self.sched.finish(seq, "stop", now=1.0)
        assert self.kv.block_ids(seq.seq_id) == [] and seq not in self.sched.running

    @precondition(lambda self: any(not s.is_finished for s in self.seqs))
    @rule(data=st.data())
    def abort(self, data):
        """Abort a new, running, swapped, preempted or mid-prefill sequence (maybe with a token in flight)."""
        seq = data.draw(st.sampled_from(self._unfinished()))
        self.sched.finish(seq, "abort", now=1.0)
        assert seq.finish_reason == "abort" and seq.seq_id not in self.kv.tables
        assert seq.seq_id not in self.kv.swapped and seq.seq_id not in self.sched.live

    # -- invariants
    @invariant()
    def free_and_owned_partition_each_pool(self):
        for pool, tables in ((self.kv.pool, self.kv.tables), (self.kv.swap_pool, self.kv.swapped)):
            if pool is None:
                continue
            free = pool.free_block_ids()
            assert len(set(free)) == len(free), "a block is twice on the free queue"
            holders = [0] * pool.num_blocks
            for blocks in tables.values():
                for b in blocks:
                    holders[b] += 1
            assert [b.ref_cnt for b in pool.blocks] == holders, "ref counts do not count the owners"
            assert {i for i, h in enumerate(holders) if h == 0} == set(free), "a block is lost or double-owned"

    @invariant()
    def state_matches_the_queues(self):
        s, bs = self.sched, self.kv.block_size
        for q in self.seqs:
            owns = len(self.kv.tables.get(q.seq_id, []))
            if q.status is SequenceStatus.RUNNING:
                assert q in s.running and q not in s.waiting and q not in s.swapped
                assert blocks_needed(q.num_computed_tokens, bs) <= owns <= blocks_needed(q.num_tokens, bs)
            elif q.status is SequenceStatus.SWAPPED:
                assert q in s.swapped and owns == 0 and q.seq_id in self.kv.swapped
            elif q.status is SequenceStatus.WAITING:
                assert q in s.waiting and owns == 0 and q.num_computed_tokens == 0
            else:
                assert owns == 0 and q.seq_id not in s.live
            assert 0 <= q.num_output_placeholders <= 1
            assert q.num_computed_tokens <= q.num_tokens
        assert len(s.running) + len(s.waiting) + len(s.swapped) == len(self._unfinished())

    def teardown(self):
        if not hasattr(self, "sched"):
            return
        for fid in list(self.forks):
            self.kv.free(fid)
        # Liveness: with nothing new arriving, the scheduler finishes everything (the pool and the
        # token budget hold any single sequence, so preemption can't livelock).
        bound = sum(s.num_tokens + s.params.max_tokens + 2 for s in self.seqs) * 3 + 10
        for _ in range(bound):
            if not self.sched.has_work() and self.inflight is None:
                break
            had_inflight = self.inflight is not None     # an empty step may just land its tokens
            out = self._simulate_step()
            assert out.seqs or had_inflight or not self.sched.has_work(), \
                "work is queued but nothing can be scheduled"
        assert not self.sched.has_work(), "the scheduler did not drain"
        assert all(s.is_finished and s.finish_reason in ("stop", "length", "abort") for s in self.seqs)
        for pool in filter(None, (self.kv.pool, self.kv.swap_pool)):
            assert sorted(pool.free_block_ids()) == list(range(pool.num_blocks))
            assert all(b.ref_cnt == 0 for b in pool.blocks)
        assert self.kv.tables == {} and self.kv.swapped == {}


SchedulerMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None,
                                              suppress_health_check=[HealthCheck.too_slow])
test_scheduler_and_kv_cache_manager_state_machine = SchedulerMachine.TestCase
