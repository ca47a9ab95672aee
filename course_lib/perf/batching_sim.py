"""A toy batching simulator (Day 04): static vs continuous scheduling, no model, simulated time.

A request has a prompt length, an output length (>= 1 tokens) and an arrival time. The machine has
``max_num_seqs`` batch slots. One *step* is one forward pass, and it works like the course's engine:

- a request admitted in a step computes its whole prompt there and gets its first output token;
- every other request in the batch that still needs tokens computes one token and gets one;
- a request whose last token came out in step k holds no slot from step k + 1 on (continuous), or
  keeps its slot, idle, until its whole batch is done (static).

A policy is a *step function* ``step(running, waiting, remaining, max_num_seqs) -> admitted``: it
edits ``running`` (ids in the batch, in admission order), ``waiting`` (a deque of ids that have
arrived, oldest first) and ``remaining`` (id -> tokens still to produce) in place, and returns the
ids it admitted this step. ``simulate`` owns everything else: arrivals, the clock, metrics.

A step lasts ``cost.a + cost.b * tokens`` time units, where ``tokens`` counts the prompt tokens of
the admitted requests plus one token per decoding request (Day 02's step model: ``a`` reads the
weights, ``b`` is the compute per token). ``StepCost(1, 0)`` measures time in steps.

Requests A, B, C, D with output lengths 3, 1, 2, 1 and ``max_num_seqs=2`` (``.`` is an idle slot):

    static      step 0  1  2  3  4          continuous  step 0  1  2  3
      slot 0         A  A  A  C  C            slot 0         A  A  A  D
      slot 1         B  .  .  D  .            slot 1         B  C  C  .
    5 steps, 3 of 10 slot-steps idle         4 steps, 1 of 8 idle: C takes B's slot at step 1
"""
from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np


@dataclass(frozen=True)
class SimRequest:
    prompt_len: int
    output_len: int
    arrival: float = 0.0

    def __post_init__(self):
        if self.prompt_len < 1 or self.output_len < 1:
            raise ValueError(f"prompt_len and output_len must be >= 1, got {self.prompt_len}, {self.output_len}")
        if self.arrival < 0:
            raise ValueError(f"arrival must be >= 0, got {self.arrival}")


@dataclass(frozen=True)
class StepCost:
    """Time of one step: ``a + b * tokens`` (``a``: fixed cost per pass, ``b``: cost per token)."""
    a: float = 1.0
    b: float = 0.0

    def __call__(self, tokens: int) -> float:
        return self.a + self.b * tokens


@dataclass(frozen=True)
class SimStep:
    start: float
    end: float
    ran: tuple[int, ...]          # ids that produced a token this step (admission order)
    admitted: tuple[int, ...]     # ids that joined the batch this step (their prompt ran here)
    num_tokens: int               # tokens computed: prompts of the admitted + 1 per decoding id


@dataclass
class SimResult:
    """One simulated run: every step, and per request id its first- and last-token step and time."""
    requests: list[SimRequest]
    max_num_seqs: int
    steps: list[SimStep] = field(default_factory=list)
    first_token_step: list[int | None] = field(default_factory=list)   # per request id
    finish_step: list[int | None] = field(default_factory=list)
    first_token_time: list[float | None] = field(default_factory=list)
    finish_time: list[float | None] = field(default_factory=list)

    @property
    def num_steps(self) -> int:
        return len(self.steps)

    @property
    def occupancy(self) -> list[int]:
        """Requests that produced a token, per step (the busy slots)."""
        return [len(s.ran) for s in self.steps]

    @property
    def idle_slot_steps(self) -> int:
        """Slot-steps that produced nothing: ``max_num_seqs`` per step minus the busy ones."""
        return self.max_num_seqs * self.num_steps - sum(self.occupancy)

    def slot_grid(self) -> list[list[int | None]]:
        """``grid[slot][step]``: the id that produced a token there, or None (an idle slot).

        A request takes the lowest free slot at its first step and frees it after its last. Under
        static batching nobody is admitted until the whole batch is done, so a freed slot stays idle.
        A policy that runs more than ``max_num_seqs`` requests gets extra rows.
        """
        holder: list[int | None] = [None] * self.max_num_seqs      # slot -> id, for this step
        grid = [[] for _ in range(self.max_num_seqs)]
        for i, step in enumerate(self.steps):
            for r in step.admitted:
                if None in holder:
                    holder[holder.index(None)] = r
                else:                                    # a policy over max_num_seqs: show it
                    holder.append(r)
                    grid.append([None] * i)
            for s, r in enumerate(holder):
                grid[s].append(r if r in step.ran else None)
                if r is not None and self.finish_step[r] == i:
                    holder[s] = None
        return grid

    @property
    def ttft(self) -> list[float | None]:
        return [None if t is None else t - r.arrival for r, t in zip(self.requests, self.first_token_time)]

    @property
    def e2e(self) -> list[float | None]:
        return [None if t is None else t - r.arrival for r, t in zip(self.requests, self.finish_time)]

    @property
    def makespan(self) -> float:
        return self.steps[-1].end - min(r.arrival for r in self.requests) if self.steps else 0.0

    @property
    def output_tokens_per_time(self) -> float:
        """Throughput: output tokens over the time from the first arrival to the last token."""
        return sum(r.output_len for r in self.requests) / self.makespan

    def summary(self) -> dict:
        """Steps, idle slot-steps, throughput and p50/p99 of TTFT and end-to-end latency."""
        e2e = [v for v in self.e2e if v is not None]
        ttft = [v for v in self.ttft if v is not None]
        return {"steps": self.num_steps, "idle slot-steps": self.idle_slot_steps,
                "output tok / time": self.output_tokens_per_time,
                "TTFT p50": float(np.percentile(ttft, 50)), "TTFT p99": float(np.percentile(ttft, 99)),
                "E2E p50": float(np.percentile(e2e, 50)), "E2E p99": float(np.percentile(e2e, 99))}


StepFn = Callable[[list, deque, dict, int], list]


def static_step(running: list, waiting: deque, remaining: dict, max_num_seqs: int) -> list:
    """Static batching: a new batch forms only when every member of the current one is done."""
    admitted = []
    if all(remaining[r] == 0 for r in running):          # the batch is over: retire it whole
        running.clear()
        while waiting and len(running) < max_num_seqs:
            running.append(waiting.popleft())
        admitted = list(running)
    for r in running:
        if remaining[r] > 0:                             # a finished member idles in its slot
            remaining[r] -= 1
    return admitted


def continuous_step(running: list, waiting: deque, remaining: dict, max_num_seqs: int) -> list:
    """Continuous batching (Orca): retire the finished, fill free slots oldest first, run everyone."""
    running[:] = [r for r in running if remaining[r] > 0]   # retire first: frees slots for this step
    admitted = []
    while waiting and len(running) < max_num_seqs:
        admitted.append(waiting.popleft())
        running.append(admitted[-1])
    for r in running:                                    # admitted ones get their first token too
        remaining[r] -= 1
    return admitted


POLICIES: dict[str, StepFn] = {"static": static_step, "continuous": continuous_step}


def simulate(requests: Sequence[SimRequest], policy: str | StepFn, max_num_seqs: int,
             cost: StepCost = StepCost()) -> SimResult:
    """Run ``requests`` (ids = list positions) under ``policy`` until every one has all its tokens.

    A request is in ``waiting`` from the first step that starts at or after its arrival (ties in
    arrival keep list order). When nothing has arrived and nothing runs, the clock jumps to the next
    arrival. A step in which nothing ran still counts (and costs ``cost(0)``): a buggy policy shows
    up as wasted steps. A request the policy drops keeps ``finish_step`` None. Raises RuntimeError
    after ``2 * total output tokens + len(requests)`` steps (a policy that makes no progress).
    """
    if max_num_seqs < 1:
        raise ValueError(f"max_num_seqs must be >= 1, got {max_num_seqs}")
    step_fn = POLICIES[policy] if isinstance(policy, str) else policy
    reqs = list(requests)
    n = len(reqs)
    order = sorted(range(n), key=lambda i: (reqs[i].arrival, i))
    res = SimResult(reqs, max_num_seqs, [], [None] * n, [None] * n, [None] * n, [None] * n)
    running: list[int] = []
    waiting: deque[int] = deque()
    remaining: dict[int, int] = {}
    t, k, unfinished = 0.0, 0, n
    max_steps = 2 * sum(r.output_len for r in reqs) + n    # any sane policy needs fewer
    while unfinished:
        while k < n and reqs[order[k]].arrival <= t:
            waiting.append(order[k])
            remaining[order[k]] = reqs[order[k]].output_len
            k += 1
        if not waiting and all(remaining[r] == 0 for r in running):
            if k == n:
                break                                    # the policy dropped requests: left unfinished
            t = reqs[order[k]].arrival                   # idle until the next arrival
            continue
        if len(res.steps) >= max_steps:
            raise RuntimeError(f"{max_steps} steps and {unfinished} requests still unfinished: the policy "
                               f"is not making progress ({len(waiting)} waiting, running {running})")
        before = {r: remaining[r] for r in running}
        admitted = step_fn(running, waiting, remaining, max_num_seqs)
        ran = [r for r in running if remaining[r] < before.get(r, reqs[r].output_len)]
        new = set(admitted)
        tokens = sum(reqs[r].prompt_len if r in new else 1 for r in ran)
        end = t + cost(tokens)
        i = len(res.steps)
        for r in ran:
            if res.first_token_step[r] is None:
                res.first_token_step[r], res.first_token_time[r] = i, end
            if remaining[r] == 0:
                res.finish_step[r], res.finish_time[r] = i, end
                unfinished -= 1
        res.steps.append(SimStep(t, end, tuple(ran), tuple(admitted), tokens))
        t = end
    return res


def poisson_requests(num_requests: int, rate: float, *, prompt_len: int, mean_output: float,
                     cap: int, seed: int = 0) -> list[SimRequest]:
    """Anyscale's traffic: Poisson arrivals at ``rate`` requests per time unit, fixed prompts,
    exponential output lengths of mean ``mean_output`` clipped to [1, cap]. ``rate=math.inf``: all at 0.

    The lengths depend only on ``seed`` (not on the rate), so a rate sweep serves the same requests.
    """
    len_rng, gap_rng = random.Random(seed), random.Random(seed + 1)
    lengths = [min(cap, max(1, round(len_rng.expovariate(1 / mean_output)))) for _ in range(num_requests)]
    t, out = 0.0, []
    for n in lengths:
        out.append(SimRequest(prompt_len, n, t))
        if rate != math.inf:
            t += gap_rng.expovariate(rate)
    return out


def rate_sweep(rates: Sequence[float], policies: Sequence[str | StepFn], max_num_seqs: int,
               cost: StepCost, **workload) -> list[dict]:
    """One row per (rate, policy): the ``SimResult.summary()`` of the same requests at each rate."""
    rows = []
    for rate in rates:
        reqs = poisson_requests(rate=rate, **workload)
        for policy in policies:
            name = policy if isinstance(policy, str) else policy.__name__
            rows.append({"rate": rate, "policy": name, **simulate(reqs, policy, max_num_seqs, cost).summary()})
    return rows
