"""What the engine hands back (mirrors vLLM's RequestOutput / CompletionOutput).

``output_kind`` (vLLM's RequestOutputKind) says what each step's output of a request holds:
"cumulative" (everything so far), "delta" (only what this step added; concatenated, the deltas
are the final output) or "final_only" (nothing until the request finishes; ``LLM.generate`` uses it,
so a batch run pays for no per-step outputs)."""
from __future__ import annotations

from dataclasses import dataclass, field

OUTPUT_KINDS = ("cumulative", "delta", "final_only")


@dataclass
class Logprob:
    """One token's log-probability under the model, its rank among all tokens (1 = the most
    likely) and its text (vLLM's Logprob)."""
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    """One sample of a request. ``logprobs``: per generated token a {token id: Logprob} dict (the
    chosen token and the top ``SamplingParams.logprobs``); ``stop_reason``: the stop id or stop
    string that ended it (None for EOS or length)."""
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None
    logprobs: list[dict[int, Logprob]] | None = None
    stop_reason: int | str | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def token_logprobs(self) -> list[float] | None:
        """The chosen tokens' log-probabilities, one float per token (course_lib's shortcut)."""
        if self.logprobs is None:
            return None
        return [entry[t].logprob for t, entry in zip(self.token_ids, self.logprobs)]


@dataclass
class RequestMetrics:
    """Wall-clock times (time.perf_counter seconds) of one request's life."""
    arrival_time: float
    first_scheduled_time: float | None
    first_token_time: float | None
    finish_time: float | None
    num_preemptions: int = 0
    token_times: list[float] = field(default_factory=list)

    @property
    def ttft(self) -> float:
        """Time to first token."""
        return self.first_token_time - self.arrival_time

    @property
    def e2e(self) -> float:
        """End-to-end latency."""
        return self.finish_time - self.arrival_time

    @property
    def tpot(self) -> float:
        """Mean time per output token after the first."""
        n = len(self.token_times)
        return (self.finish_time - self.first_token_time) / (n - 1) if n > 1 else 0.0


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool
    metrics: RequestMetrics
    error: str | None = None            # set when the engine ended the request with finish_reason "error"
    # SamplingParams.prompt_logprobs: [None, then per prompt token after the first {id: Logprob}]
    prompt_logprobs: list | None = None
    num_cached_tokens: int = 0          # prompt tokens whose K/V the prefix cache had (Day 15; vLLM's name)


@dataclass
class StepRecord:
    """One engine step, for timelines: which sequences ran and how many tokens it processed."""
    start: float
    end: float
    is_prefill: bool                    # some sequence computed prompt tokens (not only its newest)
    seq_ids: list[int]
    num_tokens: int                     # tokens computed: prompt chunks + one per decoding sequence
    num_free_blocks: int
    num_preempted: int
    num_running: int = 0                # after the step was scheduled
    num_waiting: int = 0
    num_swapped: int = 0
    num_blocks_in_use: int = 0          # KV blocks held by sequences once the step was scheduled: its
                                        # footprint (num_free_blocks is counted after finished ones left)
