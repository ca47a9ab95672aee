"""Prefix caching (Day 15): hash-chained blocks in the pool, the longest cached prefix at admission,
and the engine's outputs unchanged by it (cached vs uncached, every way a request can run)."""
import pytest
import torch

from course_lib.config import EngineConfig, SamplingParams
from course_lib.engine.llm_engine import LLMEngine
from course_lib.kv.block_pool import BlockPool
from course_lib.kv.kv_cache_manager import KVCacheManager, hash_block

from test_engine import VOCAB, assert_drained, run_to_end, tiny_model


# ---- the pool and the manager, no model -----------------------------------------------------------

def test_a_block_hash_names_its_tokens_and_everything_before_them():
    a, b = hash_block(None, [1, 2, 3, 4]), hash_block(None, [1, 2, 3, 5])
    assert a != b and a == hash_block(None, [1, 2, 3, 4])
    # the same second block after different first blocks is different content (other K/V)
    assert hash_block(a, [9, 9, 9, 9]) != hash_block(b, [9, 9, 9, 9])
    assert hash_block(None, [9, 9, 9, 9]) != hash_block(a, [9, 9, 9, 9])
    assert hash_block(None, [1, 2]) != hash_block(None, [1, 2, 0])


def test_a_cached_free_block_is_revived_from_the_middle_of_the_queue_and_evicted_in_lru_order():
    pool = BlockPool(4)
    x, y = pool.allocate(2)                      # blocks 0, 1
    assert pool.cache(x, 100) and pool.cache(y, 200)
    assert not pool.cache(pool.allocate(1)[0], 100), "a second block with the same content is not filed"
    pool.free([2])
    pool.free([y, x])                            # tail first: y is handed out before x
    assert pool.free_block_ids() == [3, 2, y, x]
    pool.touch([x])                              # a hit on a free cached block: it leaves the queue
    assert pool.blocks[x].ref_cnt == 1 and pool.free_block_ids() == [3, 2, y]
    assert pool.lookup(200) == y
    assert pool.allocate(3) == [3, 2, y]         # y is handed out for new content: evicted
    assert pool.lookup(200) is None and pool.blocks[y].block_hash is None
    assert pool.lookup(100) == x
    assert not pool.reset_cache(), "refused while a block has an owner"
    pool.free([3, 2, y, x])
    assert pool.reset_cache() and pool.cached == {} and pool.lookup(100) is None


def tokens_of(ids):
    return lambda start, stop: ids[start:stop]


def test_the_longest_cached_prefix_stops_at_the_first_miss_and_leaves_the_last_token():
    kv = KVCacheManager(num_blocks=16, block_size=4, enable_prefix_caching=True)
    a = list(range(1, 15))                                     # 14 tokens: 3 full blocks
    assert kv.allocate_slots("a", 14) is not None
    kv.cache_blocks("a", 14, tokens_of(a))
    assert len(kv.pool.cached) == 3
    b = a[:8] + [99] * 6                                       # shares 2 blocks, differs in the 3rd
    blocks, k = kv.get_computed_blocks("b", len(b), tokens_of(b))
    assert (blocks, k) == (kv.tables["a"][:2], 8)
    c = [99] + a[1:]                                           # differs in the first token: nothing
    assert kv.get_computed_blocks("c", len(c), tokens_of(c)) == ([], 0)
    d = a[:12]                                                 # all 3 blocks, but its last token must
    assert kv.get_computed_blocks("d", 12, tokens_of(d))[1] == 8   # run: the 3rd block is recomputed
    assert kv.get_computed_blocks("e", 13, tokens_of(a[:13]))[1] == 12
    off = KVCacheManager(num_blocks=16, block_size=4)
    off.allocate_slots("a", 14)
    off.cache_blocks("a", 14, tokens_of(a))
    assert off.pool.cached == {} and off.get_computed_blocks("b", 14, tokens_of(a)) == ([], 0)


def test_taking_a_cached_prefix_is_all_or_nothing_and_counts_revived_blocks_against_the_watermark():
    kv = KVCacheManager(num_blocks=6, block_size=4, enable_prefix_caching=True)
    a = list(range(1, 13))
    kv.allocate_slots("a", 12)
    kv.cache_blocks("a", 12, tokens_of(a))
    kv.free("a")                                               # 3 cached blocks, all free: 6 free
    blocks, k = kv.get_computed_blocks("b", 13, tokens_of(a + [7]))
    assert k == 12 and kv.num_free_blocks == 6
    # 3 revived + 1 new = 4 blocks taken out of 6: refused above a watermark of 3, nothing changed
    assert kv.allocate_slots("b", 13, reserve=3, computed_blocks=blocks) is None
    assert kv.num_free_blocks == 6 and "b" not in kv.tables and all(b.ref_cnt == 0 for b in kv.pool.blocks)
    new = kv.allocate_slots("b", 13, reserve=2, computed_blocks=blocks)
    assert len(new) == 1 and kv.tables["b"] == blocks + new and kv.num_free_blocks == 2
    assert all(kv.pool.blocks[i].ref_cnt == 1 for i in kv.tables["b"])


# ---- the engine: cached == uncached ------------------------------------------------------------------

SYSTEM = torch.randint(0, VOCAB, (23,), generator=torch.Generator().manual_seed(5)).tolist()


def shared_prompts(n: int, seed: int = 0) -> list[list[int]]:
    """A 23-token system prompt (5 full blocks of 4 and 3 more tokens) plus a different question each."""
    g = torch.Generator().manual_seed(seed)
    return [SYSTEM + torch.randint(0, VOCAB, (2 + i % 5,), generator=g).tolist() for i in range(n)]


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


def run(model, prompts, arrivals=None, params=None, **kw):
    """Run prompts through a fresh engine (prompt i is added before step arrivals[i]); returns the
    outputs by request id and the engine."""
    cfg = dict(block_size=4, num_kv_blocks=64, attention_backend="torch") | kw
    engine = LLMEngine(model, None, EngineConfig(**cfg))
    params = params or SamplingParams(temperature=0, max_tokens=10, ignore_eos=True, logprobs=2)
    arrivals = arrivals or [0] * len(prompts)
    outs, step = {}, 0
    while step <= max(arrivals) or engine.has_unfinished_requests():
        for i, (p, t) in enumerate(zip(prompts, arrivals)):
            if t == step:
                engine.add_request(p, params, request_id=str(i))
        for o in engine.step():
            outs[o.request_id] = o
        step += 1
        assert step < 2000
    return outs, engine


def assert_same_outputs(ref: dict, got: dict) -> None:
    assert ref.keys() == got.keys()
    for rid in ref:
        a, b = ref[rid].outputs[0], got[rid].outputs[0]
        assert a.token_ids == b.token_ids, f"request {rid}: tokens differ with prefix caching"
        for ea, eb in zip(a.logprobs, b.logprobs):
            assert ea.keys() == eb.keys()
            assert all(abs(ea[t].logprob - eb[t].logprob) < 1e-5 for t in ea), rid


@pytest.mark.parametrize("case", [
    dict(),                                                     # all admitted in one step
    dict(arrivals=[0, 3, 3, 6, 9, 20]),                         # later requests find earlier blocks
    dict(max_num_batched_tokens=8),                             # chunked prefill: cached chunk by chunk
    dict(enable_chunked_prefill=False, max_num_batched_tokens=64, arrivals=[0, 1, 2, 3, 4, 5]),
    dict(num_kv_blocks=14, arrivals=[0, 0, 0, 4, 4, 4]),        # preemption by recompute under pressure
    dict(num_kv_blocks=14, preemption_mode="swap", arrivals=[0, 0, 0, 4, 4, 4]),
    dict(async_scheduling=True, arrivals=[0, 2, 2, 5, 5, 7]),
    dict(scheduler="static", max_num_seqs=3),
], ids=["same-step", "later", "chunked", "unchunked", "recompute", "swap", "async", "static"])
def test_prefix_caching_changes_no_output(tiny, case):
    case = dict(case)
    prompts = shared_prompts(6)
    arrivals = case.pop("arrivals", None)
    ref, plain = run(tiny, prompts, arrivals, **case)
    got, cached = run(tiny, prompts, arrivals, enable_prefix_caching=True, **case)
    assert_same_outputs(ref, got)
    computed = lambda e: sum(r.num_tokens for r in e.step_log)
    saved = sum(o.num_cached_tokens for o in got.values())
    assert saved > 0 and all(o.num_cached_tokens == 0 for o in ref.values())
    if not any(r.num_preempted for r in plain.step_log + cached.step_log):
        assert computed(cached) == computed(plain) - saved, "every cached token is a token not computed"
    assert_drained(cached)
    assert len(cached.kv_manager.pool.cached) > 0, "finished requests' blocks stay findable"


def test_the_hit_is_the_shared_full_blocks_and_is_reported(tiny):
    prompts = shared_prompts(4)                     # 25, 26, 27 and 28 tokens
    got, engine = run(tiny, prompts, [0, 5, 5, 5])
    assert got["1"].num_cached_tokens == 0          # off unless enabled
    got, engine = run(tiny, prompts, [0, 5, 5, 5], enable_prefix_caching=True)
    assert [got[r].num_cached_tokens for r in "0123"] == [0, 20, 20, 20]   # the system prompt's 5 full blocks
    stats = engine.kv_manager.stats
    assert (stats.requests, stats.queries, stats.hits) == (4, sum(map(len, prompts)), 60)
    # the same prompts again find their own last block too, but never their last token: the 28-token
    # prompt, 7 full blocks, finds 6 and computes the 7th
    for i, p in enumerate(prompts):
        engine.add_request(p, SamplingParams(temperature=0, max_tokens=2), request_id=f"again {i}")
    again = run_to_end(engine)
    assert [again[f"again {i}"].num_cached_tokens for i in range(4)] == [24, 24, 24, 24]


@pytest.mark.parametrize("async_scheduling", [False, True])
def test_the_next_turn_of_a_chat_finds_the_answer_blocks_too(tiny, async_scheduling):
    """Blocks filled by generated tokens are filed once their ids are known (under async scheduling
    the newest one is still on the device when its block fills)."""
    first, engine = run(tiny, shared_prompts(1), enable_prefix_caching=True, async_scheduling=async_scheduling)
    turn = first["0"].prompt_token_ids + first["0"].outputs[0].token_ids      # 25 + 10 tokens
    engine.add_request(turn + [3, 1, 4], SamplingParams(max_tokens=1), request_id="next turn")
    # K/V exists for the first 34 of those 35 tokens (the last answer token was sampled, never run)
    assert run_to_end(engine)["next turn"].num_cached_tokens == 34 // 4 * 4


def test_prompt_logprobs_requests_skip_the_cache_and_score_every_prompt_token(tiny):
    prompts = shared_prompts(2)
    params = SamplingParams(temperature=0, max_tokens=3, prompt_logprobs=1)
    ref, _ = run(tiny, prompts, [0, 3], params)
    got, engine = run(tiny, prompts, [0, 3], params, enable_prefix_caching=True)
    assert got["1"].num_cached_tokens == 0 and engine.kv_manager.stats.requests == 0
    for rid in ref:
        a, b = ref[rid].prompt_logprobs, got[rid].prompt_logprobs
        assert len(a) == len(b) == len(prompts[int(rid)])
        assert all(x is None and y is None or x.keys() == y.keys() for x, y in zip(a, b))
    # but they fill the cache for others
    engine.add_request(prompts[0] + [1], SamplingParams(max_tokens=1), request_id="later")
    assert run_to_end(engine)["later"].num_cached_tokens == 24


def test_a_failed_step_leaves_nothing_findable(tiny, monkeypatch):
    engine = LLMEngine(tiny, None, EngineConfig(block_size=4, num_kv_blocks=64, attention_backend="torch",
                                                enable_prefix_caching=True))
    prompts = shared_prompts(2)

    def broken(sched, inflight):
        raise RuntimeError("device lost")
    with monkeypatch.context() as m:
        m.setattr(engine.runner, "launch", broken)
        engine.add_request(prompts[0], SamplingParams(max_tokens=3), request_id="doomed")
        with pytest.warns(UserWarning, match="engine step failed"):
            out = engine.step()
    assert out[0].outputs[0].finish_reason == "error"
    assert engine.kv_manager.pool.cached == {}, "a block the failed step was writing is still filed"
    engine.add_request(prompts[1], SamplingParams(max_tokens=3), request_id="next")
    assert run_to_end(engine)["next"].num_cached_tokens == 0
    assert_drained(engine)


def test_reset_prefix_cache_waits_for_an_idle_engine(tiny):
    _, engine = run(tiny, shared_prompts(2), enable_prefix_caching=True)
    engine.add_request(shared_prompts(1)[0], SamplingParams(max_tokens=4), request_id="busy")
    engine.step()
    assert engine.reset_prefix_cache() is False and engine.kv_manager.pool.cached
    run_to_end(engine)
    assert engine.reset_prefix_cache() is True and engine.kv_manager.pool.cached == {}
    engine.add_request(shared_prompts(1)[0], SamplingParams(max_tokens=1), request_id="cold")
    assert run_to_end(engine)["cold"].num_cached_tokens == 0


def test_enable_prefix_caching_is_validated():
    with pytest.raises(ValueError, match="enable_prefix_caching"):
        EngineConfig(enable_prefix_caching="yes")


# ---- cache-aware scheduling: longest prefix match first (Day 16) ----------------------------------------

def run_workload(model, workload, **kw):
    """Every request of ``workload`` at once; returns the outputs in workload order and the engine."""
    cfg = dict(block_size=4, attention_backend="torch", enable_prefix_caching=True) | kw
    engine = LLMEngine(model, None, EngineConfig(**cfg))
    for i, r in enumerate(workload.requests):
        engine.add_request(r.prompt_token_ids, SamplingParams(temperature=0, max_tokens=r.max_tokens,
                                                              ignore_eos=True), request_id=str(i))
    outs = run_to_end(engine)
    return [outs[str(i)] for i in range(len(workload.requests))], engine


def chats():
    from course_lib.perf.workloads import multi_turn
    return multi_turn(num_conversations=6, num_turns=3, system_len=16, user_len=8, answer_len=4,
                      vocab_size=VOCAB, seed=1)


def test_lpm_admits_the_best_cached_match_first_and_keeps_preempted_sequences_ahead(tiny):
    from course_lib.engine.sequence import Sequence
    engine = LLMEngine(tiny, None, EngineConfig(block_size=4, num_kv_blocks=64, attention_backend="torch",
                                                enable_prefix_caching=True, scheduling_policy="lpm",
                                                max_num_seqs=1))
    shared = list(range(1, 13))
    engine.add_request(shared + [50], SamplingParams(max_tokens=1), request_id="warm")
    run_to_end(engine)                                             # caches 3 blocks of `shared`
    for rid, prompt in [("none", [60] * 13), ("one", shared[:4] + [61] * 9), ("three", shared + [62]),
                        ("none again", [63] * 13)]:
        engine.add_request(prompt, SamplingParams(max_tokens=1), request_id=rid)
    s = engine.scheduler
    s._order_by_cached_prefix()
    assert [q.request_id for q in s.waiting] == \
        ["three", "one", "none", "none again"], "most cached tokens first, ties in arrival order"
    s.waiting[-1].num_preemptions = 1                              # preempted by recompute earlier
    s._order_by_cached_prefix()
    assert s.waiting[0].request_id == "none again"
    outs = run_to_end(engine)
    assert outs["three"].num_cached_tokens == 12 and outs["one"].num_cached_tokens == 4
    assert_drained(engine)


@pytest.mark.parametrize("num_kv_blocks", [24, 40])
def test_lpm_finds_more_of_a_replayed_chat_under_memory_pressure_and_changes_no_output(tiny, num_kv_blocks):
    wl = chats()                     # 6 conversations x 3 turns, shuffled: the working set is ~90 blocks
    fcfs, e_fcfs = run_workload(tiny, wl, num_kv_blocks=num_kv_blocks, max_num_seqs=2)
    lpm, e_lpm = run_workload(tiny, wl, num_kv_blocks=num_kv_blocks, max_num_seqs=2, scheduling_policy="lpm")
    assert [o.outputs[0].token_ids for o in fcfs] == [o.outputs[0].token_ids for o in lpm]
    hits = lambda outs: sum(o.num_cached_tokens for o in outs)
    assert hits(lpm) > 1.2 * hits(fcfs), (hits(lpm), hits(fcfs))
    assert e_lpm.kv_manager.stats.hits >= hits(lpm)              # re-admissions after preemption count too
    assert_drained(e_lpm)


def test_lpm_needs_prefix_caching():
    with pytest.raises(ValueError, match="scheduling_policy"):
        EngineConfig(scheduling_policy="lpm")
    with pytest.raises(ValueError, match="scheduling_policy must be one of"):
        EngineConfig(scheduling_policy="priority", enable_prefix_caching=True)
