"""A sequence: one prompt and the tokens generated for it, plus where its KV lives and its timing."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch

from ..config import SamplingParams


PENDING = -1   # an output token the GPU is still computing (async scheduling fills it in a step later)


class SequenceStatus(enum.Enum):
    WAITING = "waiting"      # not in the cache: new, or preempted (its KV was dropped; it will recompute)
    RUNNING = "running"      # its KV is in the cache; it gets a token every decode step
    FINISHED = "finished"


@dataclass
class Sequence:
    seq_id: int
    request_id: str
    index: int                              # which of the request's n samples
    prompt_token_ids: list[int]
    params: SamplingParams
    arrival_time: float
    output_token_ids: list[int] = field(default_factory=list)
    output_logprobs: list[float] = field(default_factory=list)
    status: SequenceStatus = SequenceStatus.WAITING
    block_table: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0            # positions whose K/V are in the cache
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    finish_time: float | None = None
    finish_reason: str | None = None        # "stop", "length" or "abort"
    num_preemptions: int = 0
    token_times: list[float] = field(default_factory=list)
    generator: torch.Generator | None = None

    @property
    def token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

    @property
    def last_token_id(self) -> int:
        """The newest token: the one a decode step feeds in (PENDING while the GPU computes it)."""
        return self.output_token_ids[-1] if self.output_token_ids else self.prompt_token_ids[-1]

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED
