"""Beam search (engine/beam_search.py) against HF transformers' generate(num_beams=...), with and
without the prefix cache, and its parameters' validation."""
import pytest
import torch

from course_lib.engine.beam_search import BeamSearchParams, BeamSearchSequence, beam_score
from course_lib.engine.llm import LLM

from test_engine_vs_hf_logprobs import TINY_QWEN3, make_pair


@pytest.fixture(scope="module")
def pair():
    return make_pair(TINY_QWEN3, "cpu", torch.float32)


@pytest.mark.parametrize("caching", [True, False])
def test_beams_equal_hf_beam_search(pair, caching):
    hf, ours = pair
    gen = torch.Generator().manual_seed(3)
    prompts = [torch.randint(0, 500, (n,), generator=gen).tolist() for n in (7, 20)]
    width, new = 3, 6
    llm = LLM(ours, block_size=4, num_kv_blocks=256, attention_backend="torch", enable_prefix_caching=caching)
    outs = llm.beam_search(prompts, BeamSearchParams(beam_width=width, max_tokens=new, ignore_eos=True))
    for prompt, out in zip(prompts, outs):
        ref = hf.generate(torch.tensor([prompt]), num_beams=width, num_return_sequences=width, do_sample=False,
                          max_new_tokens=new, min_new_tokens=new, length_penalty=1.0, early_stopping=False,
                          eos_token_id=None, pad_token_id=0, output_scores=True, return_dict_in_generate=True)
        assert [s.tokens for s in out.sequences] == ref.sequences.tolist(), "beams differ from HF's, best first"
        # HF's score is the sum over the generated length; ours keeps the sum itself
        hf_sums = (ref.sequences_scores * new).tolist()
        assert all(abs(s.cum_logprob - h) < 1e-4 for s, h in zip(out.sequences, hf_sums)), (out.sequences, hf_sums)
        assert all(abs(sum(s.logprobs) - s.cum_logprob) < 1e-5 and s.finish_reason == "length" for s in out.sequences)
    kv = llm.engine.kv_manager
    assert kv.num_free_blocks == kv.num_blocks
    if caching:          # each step's beams extend the last step's: most of every prompt is found
        assert kv.stats.hits > 0.5 * kv.stats.queries, kv.stats


def test_a_beam_ending_in_eos_is_set_aside_and_scored_without_it():
    eos = {2}
    done = BeamSearchSequence([5, 6, 2], [-0.5, -0.1], -0.6)
    assert beam_score(done, eos, 1.0) == pytest.approx(-0.6 / 2)     # the EOS is not counted
    assert beam_score(BeamSearchSequence([5, 6, 7], [-0.5, -0.1], -0.6), eos, 0.0) == pytest.approx(-0.6)


def test_beam_search_stops_a_beam_at_eos(pair):
    _, ours = pair
    llm = LLM(ours, block_size=4, num_kv_blocks=256, attention_backend="torch", enable_prefix_caching=True)
    prompt = [1, 2, 3, 4, 5]
    free = llm.beam_search([prompt], BeamSearchParams(beam_width=2, max_tokens=3, ignore_eos=True))[0]
    eos = free.sequences[0].tokens[len(prompt)]        # make the best first token the EOS
    llm.engine.eos_token_ids = {eos}
    out = llm.beam_search([prompt], BeamSearchParams(beam_width=2, max_tokens=3))[0]
    stopped = [s for s in out.sequences if s.finish_reason == "stop"]
    assert all(s.tokens[-1] == eos and eos not in s.tokens[len(prompt):-1] for s in stopped)
    assert all(eos not in s.tokens[len(prompt):] for s in out.sequences if s.finish_reason == "length")


@pytest.mark.parametrize("kwargs,field", [
    (dict(beam_width=0, max_tokens=4), "beam_width"), (dict(beam_width=2, max_tokens=0), "max_tokens"),
    (dict(beam_width=2, max_tokens=4, ignore_eos="no"), "ignore_eos"),
    (dict(beam_width=2, max_tokens=4, temperature=-1), "temperature"),
    (dict(beam_width=2, max_tokens=4, length_penalty=float("nan")), "length_penalty"),
])
def test_bad_beam_search_params_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        BeamSearchParams(**kwargs)


def test_too_wide_a_beam_is_refused_before_anything_runs(pair):
    _, ours = pair
    llm = LLM(ours, block_size=4, num_kv_blocks=64, attention_backend="torch")
    with pytest.raises(ValueError, match="beam_width must be <= 10"):
        llm.beam_search([[1, 2, 3]], BeamSearchParams(beam_width=11, max_tokens=2))
    with pytest.raises(TypeError, match="BeamSearchParams"):
        llm.beam_search([[1, 2, 3]], dict(beam_width=2, max_tokens=2))
    assert not llm.engine.has_unfinished_requests()
