"""Beam search on top of the engine, the way vLLM's ``LLM.beam_search`` does it (Day 17).

Beam search keeps the ``beam_width`` most likely continuations of a prompt, extending each by one
token per step:

    step t:   beams b1 .. bw                       (each: tokens, cumulative logprob)
              each beam -> its 2w most likely next tokens (one engine request per beam, max_tokens=1)
              candidates: w x 2w; one ending in EOS is set aside as finished
              keep the w best by score = cum_logprob / len(tokens) ** length_penalty
    at the end: finished + surviving beams, best w by score

The engine does not know about beams: each step sends every beam as a new one-token request. What
makes that cheap is the prefix cache (Day 15): a beam's tokens are its parent's plus one, so with
``enable_prefix_caching=True`` each request finds all of its parent's full blocks and computes only
the partial last block. Beams of one prompt share their common blocks through the pool's reference
counts, the memory sharing that PagedAttention's copy-on-write gave beam search in vLLM v0.
Without prefix caching every step recomputes every beam from its first token (correct, slow).

The candidate set is the same as HF transformers' (the global top w of beams x vocabulary is always
among each beam's top 2w tokens), so with no EOS in sight the beams equal ``generate(num_beams=w)``
(tests/test_beam_search.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..config import check, is_int, is_real


@dataclass(frozen=True)
class BeamSearchParams:
    """vLLM's BeamSearchParams: ``beam_width`` beams, ``max_tokens`` new tokens at most,
    ``length_penalty`` the exponent of the length in the score (1: mean logprob per token)."""
    beam_width: int
    max_tokens: int
    ignore_eos: bool = False
    temperature: float = 0.0
    length_penalty: float = 1.0

    def __post_init__(self):
        check(is_int(self.beam_width) and self.beam_width >= 1, "beam_width", self.beam_width, "an integer >= 1")
        check(is_int(self.max_tokens) and self.max_tokens >= 1, "max_tokens", self.max_tokens, "an integer >= 1")
        check(type(self.ignore_eos) is bool, "ignore_eos", self.ignore_eos, "True or False")
        check(is_real(self.temperature) and 0 <= self.temperature < math.inf, "temperature",
              self.temperature, "a number >= 0")
        check(is_real(self.length_penalty) and math.isfinite(self.length_penalty), "length_penalty",
              self.length_penalty, "a finite number")


@dataclass
class BeamSearchSequence:
    """One beam: ``tokens`` (the prompt's, then the generated ones), the logprob of each generated
    token and their sum."""
    tokens: list[int]
    logprobs: list[float] = field(default_factory=list)
    cum_logprob: float = 0.0
    text: str | None = None
    finish_reason: str | None = None      # "stop" (EOS) or "length"


@dataclass
class BeamSearchOutput:
    sequences: list[BeamSearchSequence]   # best first


def beam_score(seq: BeamSearchSequence, eos_token_ids, length_penalty: float) -> float:
    """vLLM's score: cum_logprob / len(tokens) ** length_penalty, the length counting the prompt and
    not a final EOS."""
    n = len(seq.tokens) - (bool(seq.tokens) and seq.tokens[-1] in eos_token_ids)
    return seq.cum_logprob / n ** length_penalty


def beam_search(llm, prompts, params: BeamSearchParams) -> list[BeamSearchOutput]:
    """The ``beam_width`` best continuations of each prompt (text or token ids), best first."""
    from ..config import SamplingParams
    from .llm import _as_prompt_list

    if not isinstance(params, BeamSearchParams):
        raise TypeError(f"params must be a BeamSearchParams, got {type(params).__name__}")
    engine = llm.engine
    k = 2 * params.beam_width
    limit = min(engine.cfg.max_logprobs, engine.model.cfg.vocab_size)
    if k > limit:
        raise ValueError(f"beam_width must be <= {limit // 2} (each beam asks for its 2 x beam_width most "
                         f"likely tokens; EngineConfig.max_logprobs={engine.cfg.max_logprobs}), "
                         f"got {params.beam_width}")
    eos = engine.eos_token_ids if not params.ignore_eos else set()
    step = SamplingParams(temperature=params.temperature, max_tokens=1, logprobs=k, ignore_eos=True)
    score = lambda s: beam_score(s, eos, params.length_penalty)
    prompts = _as_prompt_list(prompts)
    beams = [[BeamSearchSequence(engine._prompt_ids(p))] for p in prompts]
    for b in beams:       # the longest a beam gets must fit, checked before anything runs
        engine.validate(b[0].tokens, SamplingParams(max_tokens=params.max_tokens))
    finished: list[list[BeamSearchSequence]] = [[] for _ in prompts]
    for _ in range(params.max_tokens):
        flat = [(i, beam) for i, bs in enumerate(beams) for beam in bs]
        if not flat:
            break
        outs = llm.generate([beam.tokens for _, beam in flat], step, use_tqdm=False)
        candidates: list[list[BeamSearchSequence]] = [[] for _ in prompts]
        for (i, beam), out in zip(flat, outs):
            for token, lp in out.outputs[0].logprobs[0].items():
                new = BeamSearchSequence(beam.tokens + [token], beam.logprobs + [lp.logprob],
                                         beam.cum_logprob + lp.logprob)
                if token in eos:
                    new.finish_reason = "stop"
                    finished[i].append(new)
                else:
                    candidates[i].append(new)
        beams = [sorted(c, key=score, reverse=True)[:params.beam_width] for c in candidates]
    results = []
    for i, prompt_beams in enumerate(beams):
        for beam in prompt_beams:
            beam.finish_reason = "length"
        best = sorted(finished[i] + prompt_beams, key=score, reverse=True)[:params.beam_width]
        if llm.tokenizer is not None:
            for s in best:
                s.text = llm.tokenizer.decode(s.tokens[len(s.tokens) - len(s.logprobs):])
        results.append(BeamSearchOutput(best))
    return results
