"""A request and its sequences: the tokens known so far, how many of them are in the cache, timing.

The catch-up contract (what the scheduler works with, vLLM v1's design):

    prompt  p0 p1 p2 p3 p4 | outputs o0 o1 | placeholder ?
            <----- num_computed_tokens ---->                      K/V in the cache (or being written)
            <------------------ num_tokens ------------------->   every token the sequence has

Each step the scheduler gives a sequence some of its ``num_tokens - num_computed_tokens`` missing
tokens. A new prompt misses all of them (prefill, possibly in chunks); a decoding sequence misses one
(its newest token); a preempted one misses everything again (recompute). There is no prefill or
decode phase, only this difference. When a step computes a sequence's last missing token, its logits
give the next token: under async scheduling the host does not know it yet, so it is counted as a
*placeholder* (``num_output_placeholders``) until the step's result comes back.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ..config import SamplingParams


class SequenceStatus(enum.Enum):
    WAITING = "waiting"      # not in the cache: new, or preempted by recompute (its KV was dropped)
    RUNNING = "running"      # its KV is in the device cache
    SWAPPED = "swapped"      # preempted by swapping: its KV sits in the host pool
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    seq_id: int
    request_id: str
    index: int                              # which of the request's n samples
    prompt_token_ids: list[int]
    params: SamplingParams
    arrival_time: float
    output_token_ids: list[int] = field(default_factory=list)
    output_logprobs: list[dict] = field(default_factory=list)   # per token: {token id: Logprob}
    prompt_logprobs: list = field(default_factory=lambda: [None])   # [None, {id: Logprob}, ...]
    num_output_placeholders: int = 0        # sampled on the device, not yet read back (async)
    num_computed_tokens: int = 0
    status: SequenceStatus = SequenceStatus.WAITING
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    finish_time: float | None = None
    finish_reason: str | None = None        # "stop", "length", "abort" or "error"
    stop_reason: int | str | None = None    # the stop id or stop string that ended it (None: EOS)
    detokenizer: object = None              # its IncrementalDetokenizer (streaming, stop strings)
    num_preemptions: int = 0
    num_cached_tokens: int = 0              # prompt tokens found in the prefix cache at its admission (Day 15)
    token_times: list[float] = field(default_factory=list)
    seed: int | None = None                 # its sampling seed (seeded requests); None: the sampler picks one

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_tokens(self) -> int:
        """Every token of the sequence, placeholders included."""
        return len(self.prompt_token_ids) + len(self.output_token_ids) + self.num_output_placeholders

    @property
    def token_ids(self) -> list[int]:
        """The known tokens: prompt + outputs read back so far (a new list)."""
        return self.prompt_token_ids + self.output_token_ids

    @property
    def num_known_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def num_generated(self) -> int:
        """Outputs so far, the one in flight included (what max_tokens counts)."""
        return len(self.output_token_ids) + self.num_output_placeholders

    def token_slice(self, start: int, stop: int) -> list[int]:
        """Known token ids at positions [start, stop) (stop <= num_known_tokens)."""
        n = len(self.prompt_token_ids)
        if stop <= n:
            return self.prompt_token_ids[start:stop]
        if start >= n:
            return self.output_token_ids[start - n:stop - n]
        return self.prompt_token_ids[start:] + self.output_token_ids[:stop - n]

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED


@dataclass(eq=False)
class Request:
    """What a caller asked for: one prompt, its params, and its ``n`` sequences (one per sample).

    Each sample is scheduled as its own sequence. With ``enable_prefix_caching`` the samples, admitted
    in one step, share the prompt's full blocks through the pool's reference counts and each computes
    only the prompt's partial last block (vLLM v1's design; Day 17); without it each holds and
    computes its own copy of the prompt."""
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    params: SamplingParams
    arrival_time: float
    seqs: list[Sequence] = field(default_factory=list)
    error: str | None = None                # why the engine ended it with finish_reason "error"

    @property
    def is_finished(self) -> bool:
        return all(s.is_finished for s in self.seqs)
