"""The toy batching simulator of Day 04: exact schedules on small cases, and properties on random ones.

The expected numbers are worked out by hand (or by a formula written here), never read from the code
under test.
"""
import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from course_lib.perf.batching_sim import (SimRequest, StepCost, continuous_step, poisson_requests,
                                          rate_sweep, simulate, static_step)


def offline(*lengths, prompt_len=1):
    return [SimRequest(prompt_len, n) for n in lengths]


# ---- a tiny case, by hand ------------------------------------------------------------------------
# A:3 B:1 C:2 D:1 tokens, 2 slots.
#   static      step 0  1  2  3  4        continuous  step 0  1  2  3
#     slot 0         A  A  A  C  C          slot 0         A  A  A  D
#     slot 1         B  .  .  D  .          slot 1         B  C  C  .

def test_tiny_case_static():
    res = simulate(offline(3, 1, 2, 1), "static", 2)
    assert [s.ran for s in res.steps] == [(0, 1), (0,), (0,), (2, 3), (2,)]
    assert [s.admitted for s in res.steps] == [(0, 1), (), (), (2, 3), ()]
    assert res.finish_step == [2, 0, 4, 3]
    assert res.first_token_step == [0, 0, 3, 3]
    assert res.idle_slot_steps == 3


def test_tiny_case_continuous():
    res = simulate(offline(3, 1, 2, 1), "continuous", 2)
    assert [s.ran for s in res.steps] == [(0, 1), (0, 2), (0, 2), (3,)]
    assert [s.admitted for s in res.steps] == [(0, 1), (2,), (), (3,)]
    assert res.finish_step == [2, 0, 2, 3]
    assert res.first_token_step == [0, 0, 1, 3]
    assert res.idle_slot_steps == 1


def test_tiny_case_times_and_tokens():
    # prompts of 4 tokens; a step costs 1 + 0.5 per token computed
    res = simulate(offline(3, 1, 2, 1, prompt_len=4), "continuous", 2, StepCost(1.0, 0.5))
    assert [s.num_tokens for s in res.steps] == [8, 5, 2, 4]      # 4+4, 1+4, 1+1, 4
    assert [s.end - s.start for s in res.steps] == [5.0, 3.5, 2.0, 3.0]
    assert res.finish_time == [10.5, 5.0, 10.5, 13.5]
    assert res.e2e == res.finish_time                              # everyone arrived at 0
    assert res.ttft == [5.0, 5.0, 8.5, 13.5]


# ---- formulas for offline runs ---------------------------------------------------------------------

@pytest.mark.parametrize("lengths, slots", [([5, 2, 9, 1, 1, 4, 7], 3), ([1] * 6, 4), ([8, 1], 1)])
def test_static_steps_are_the_sum_of_batch_maxima(lengths, slots):
    batches = [lengths[i:i + slots] for i in range(0, len(lengths), slots)]
    assert simulate(offline(*lengths), "static", slots).num_steps == sum(max(b) for b in batches)


def test_continuous_extremes():
    lengths = [5, 2, 9, 1, 1, 4, 7]
    assert simulate(offline(*lengths), "continuous", 1).num_steps == sum(lengths)   # one at a time
    assert simulate(offline(*lengths), "continuous", 99).num_steps == max(lengths)  # all at once


lengths_st = st.lists(st.integers(1, 12), min_size=1, max_size=25)


@settings(max_examples=150, deadline=None)
@given(lengths=lengths_st, slots=st.integers(1, 6), prompt=st.integers(1, 5),
       a=st.floats(0.1, 2), b=st.floats(0, 1))
def test_offline_continuous_never_slower_than_static(lengths, slots, prompt, a, b):
    reqs = offline(*lengths, prompt_len=prompt)
    s = simulate(reqs, "static", slots, StepCost(a, b))
    c = simulate(reqs, "continuous", slots, StepCost(a, b))
    assert c.num_steps <= s.num_steps
    assert all(fc <= fs for fc, fs in zip(c.finish_step, s.finish_step)), "no request finishes later"
    assert c.idle_slot_steps <= s.idle_slot_steps
    # both compute the same tokens: each prompt once, then one token per later output token
    work = sum(prompt + n - 1 for n in lengths)
    assert sum(x.num_tokens for x in s.steps) == sum(x.num_tokens for x in c.steps) == work


arrivals_st = st.lists(st.tuples(st.integers(1, 10), st.floats(0, 30)), min_size=1, max_size=20)


@settings(max_examples=150, deadline=None)
@given(reqs=arrivals_st, slots=st.integers(1, 5), policy=st.sampled_from(["static", "continuous"]))
def test_every_request_gets_exactly_its_tokens_after_it_arrives(reqs, slots, policy):
    requests = [SimRequest(3, n, t) for n, t in reqs]
    res = simulate(requests, policy, slots)
    tokens = Counter(r for s in res.steps for r in s.ran)
    assert [tokens[i] for i in range(len(requests))] == [r.output_len for r in requests]
    assert all(len(set(s.ran)) == len(s.ran) <= slots for s in res.steps)
    for i, r in enumerate(requests):
        first = res.steps[res.first_token_step[i]]
        assert first.start >= r.arrival and i in first.admitted
    for prev, nxt in zip(res.steps, res.steps[1:]):
        assert nxt.start >= prev.end                              # one step at a time
    # first come, first served: admission order follows arrival order (ties: list order)
    order = sorted(range(len(requests)), key=lambda i: (requests[i].arrival, i))
    starts = [res.first_token_step[i] for i in order]
    assert starts == sorted(starts)


@settings(max_examples=300, deadline=None)
@given(reqs=arrivals_st, slots=st.integers(1, 5))
def test_with_arrivals_continuous_never_takes_more_steps(reqs, slots):
    requests = [SimRequest(3, n, t) for n, t in reqs]
    assert simulate(requests, "continuous", slots).num_steps <= simulate(requests, "static", slots).num_steps


def test_with_arrivals_a_request_can_finish_later_under_continuous():
    # Not a theorem once requests arrive over time: continuous batching, idle at t=19.5, starts a step for
    # the request that just arrived, so the one arriving at t=20 waits for it; static batching is still
    # busy with its straggler at 19.5 and takes both together at 20. (Offline it cannot happen.)
    requests = [SimRequest(3, 1, 0.0), SimRequest(3, 1, 20.0), SimRequest(3, 1, 19.5),
                SimRequest(3, 10, 0.0), SimRequest(3, 10, 0.0)]
    s, c = simulate(requests, "static", 2), simulate(requests, "continuous", 2)
    assert (c.finish_time[1], s.finish_time[1]) == (21.5, 21.0)
    assert (c.num_steps, s.num_steps) == (13, 21)


def test_idle_gap_jumps_the_clock_to_the_next_arrival():
    res = simulate([SimRequest(2, 2, 0.0), SimRequest(2, 1, 10.0)], "continuous", 4)
    assert [(s.start, s.end, s.ran) for s in res.steps] == [(0.0, 1.0, (0,)), (1.0, 2.0, (0,)),
                                                           (10.0, 11.0, (1,))]
    assert res.e2e == [2.0, 1.0]
    assert res.makespan == 11.0
    assert res.output_tokens_per_time == 3 / 11


def test_a_request_arriving_mid_step_waits_for_the_next_step():
    res = simulate([SimRequest(1, 3, 0.0), SimRequest(1, 1, 0.5)], "continuous", 2)
    assert [s.ran for s in res.steps] == [(0,), (0, 1), (0,)]
    assert res.ttft == [1.0, 1.5]


# ---- wrong policies are reported, not hidden ----------------------------------------------------

def test_a_policy_that_never_runs_anything_raises():
    with pytest.raises(RuntimeError, match="not making progress"):
        simulate(offline(2, 2), lambda running, waiting, remaining, n: [], 2)


def test_a_policy_that_drops_a_request_leaves_it_unfinished():
    def drop_last_token(running, waiting, remaining, max_num_seqs):
        running[:] = [r for r in running if remaining[r] > 1]      # retires one token early
        return continuous_step(running, waiting, remaining, max_num_seqs)
    res = simulate(offline(1, 3), drop_last_token, 2)
    assert res.finish_step == [0, None]


def test_the_step_functions_can_be_called_directly():
    from collections import deque
    running, waiting, remaining = [0, 1], deque([2, 3]), {0: 0, 1: 2, 2: 4, 3: 4}
    assert continuous_step(running, waiting, remaining, 2) == [2]
    assert running == [1, 2] and list(waiting) == [3] and remaining == {0: 0, 1: 1, 2: 3, 3: 4}
    running, waiting, remaining = [0, 1], deque([2, 3]), {0: 0, 1: 2, 2: 4, 3: 4}
    assert static_step(running, waiting, remaining, 2) == []       # 1 still runs: the batch stays
    assert running == [0, 1] and remaining == {0: 0, 1: 1, 2: 4, 3: 4}


@pytest.mark.parametrize("kw", [dict(prompt_len=0, output_len=1), dict(prompt_len=1, output_len=0),
                                dict(prompt_len=1, output_len=1, arrival=-1.0)])
def test_bad_requests_are_rejected(kw):
    with pytest.raises(ValueError):
        SimRequest(**kw)


def test_bad_slot_count_is_rejected():
    with pytest.raises(ValueError, match="max_num_seqs"):
        simulate(offline(1), "continuous", 0)


# ---- Poisson workloads and the rate sweep ----------------------------------------------------------

def test_poisson_requests_are_seeded_and_share_lengths_across_rates():
    kw = dict(prompt_len=8, mean_output=20, cap=64, seed=3)
    a, b = poisson_requests(300, 0.5, **kw), poisson_requests(300, 0.5, **kw)
    assert a == b
    other_rate = poisson_requests(300, 2.0, **kw)
    assert [r.output_len for r in a] == [r.output_len for r in other_rate]
    assert all(1 <= r.output_len <= 64 and r.prompt_len == 8 for r in a)
    assert poisson_requests(300, 0.5, **{**kw, "seed": 4}) != a
    offline_reqs = poisson_requests(5, math.inf, **kw)
    assert [r.arrival for r in offline_reqs] == [0.0] * 5


def test_poisson_gaps_have_the_requested_rate():
    reqs = poisson_requests(4000, 2.0, prompt_len=1, mean_output=10, cap=100)
    arrivals = [r.arrival for r in reqs]
    assert arrivals == sorted(arrivals) and arrivals[0] == 0.0
    mean_gap = arrivals[-1] / (len(arrivals) - 1)
    assert abs(mean_gap - 0.5) < 0.03                       # 4000 exponential gaps: sd ~0.008
    mean_len = sum(r.output_len for r in reqs) / len(reqs)
    assert abs(mean_len - 10) < 0.7


def test_rate_sweep_continuous_lowers_p50_and_raises_throughput():
    rows = rate_sweep([0.05, 0.2, 0.4], ["static", "continuous"], 8, StepCost(1.0, 0.01),
                      num_requests=200, prompt_len=16, mean_output=16, cap=64, seed=0)
    assert [(r["rate"], r["policy"]) for r in rows] == [(q, p) for q in (0.05, 0.2, 0.4)
                                                        for p in ("static", "continuous")]
    by = {(r["rate"], r["policy"]): r for r in rows}
    for q in (0.05, 0.2, 0.4):
        assert by[(q, "continuous")]["E2E p50"] < by[(q, "static")]["E2E p50"]
    assert by[(0.4, "continuous")]["output tok / time"] > 1.5 * by[(0.4, "static")]["output tok / time"]


def test_slot_grid_of_the_tiny_case():
    reqs = offline(3, 1, 2, 1)
    assert simulate(reqs, "static", 2).slot_grid() == [[0, 0, 0, 2, 2], [1, None, None, 3, None]]
    assert simulate(reqs, "continuous", 2).slot_grid() == [[0, 0, 0, 3], [1, 2, 2, None]]
