"""Bad input at the engine's doors (LLM(...), generate, add_request) is rejected before anything is
queued, naming the field, and leaves the engine giving the clean-run output with every block free.
The reproducers of the input-hardening issue, then a Hypothesis property over every entry point."""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from course_lib.config import ModelConfig, SamplingParams
from course_lib.engine.llm import LLM
from course_lib.engine.llm_engine import sample_seed
from course_lib.models.llama import LlamaModel
from course_lib.models.loader import init_random_

GREEDY = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
PROMPT = [5, 6, 7, 8]


@pytest.fixture(scope="module")
def llm():
    cfg = ModelConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                      num_kv_heads=2, head_dim=8, max_position_embeddings=128)
    m = LlamaModel(cfg)
    init_random_(m, 0)
    return LLM(m.eval(), attention_backend="torch", block_size=4, num_kv_blocks=32)


@pytest.fixture(scope="module")
def clean(llm):
    return llm.generate([PROMPT], GREEDY, use_tqdm=False)[0].outputs[0].token_ids


def assert_clean(llm, clean):
    """The engine is as new: nothing queued, every block free, and a fixed request gives its output."""
    e = llm.engine
    assert not e.has_unfinished_requests() and e.requests == {}
    assert e.kv_manager.num_free_blocks == e.kv_manager.num_blocks
    assert llm.generate([PROMPT], GREEDY, use_tqdm=False)[0].outputs[0].token_ids == clean


@pytest.mark.parametrize("call, error, field", [
    (lambda: SamplingParams(stop_token_ids=[1, "x"]), TypeError, "stop_token_ids"),
    (lambda: SamplingParams(top_k=2**63), ValueError, "top_k"),
    (lambda: SamplingParams(temperature=1, seed=1.5), TypeError, "seed"),
    (lambda: SamplingParams(temperature=float("inf")), ValueError, "temperature"),
    (lambda: SamplingParams(n=True), TypeError, "n"),
    (lambda: SamplingParams(top_p="0.5"), TypeError, "top_p"),
    (lambda: SamplingParams(logprobs="yes"), TypeError, "logprobs"),
    (lambda: SamplingParams(ignore_eos="no"), TypeError, "ignore_eos"),
])
def test_bad_sampling_params_name_the_field(call, error, field):
    with pytest.raises(error, match=field):
        call()


@pytest.mark.parametrize("prompts, params, error, match", [
    ([PROMPT, [1, 2]], [GREEDY, "not params"], TypeError, "sampling_params"),  # the first must not stay queued
    ([PROMPT], [], ValueError, "sampling_params"),                              # [] is not "defaults"
    ([PROMPT], [{"temperature": 0}], TypeError, "sampling_params"),
    ([PROMPT, [1, 2, 97]], GREEDY, ValueError, r"\[0, 97\)"),
    (np.array(PROMPT), GREEDY, TypeError, "prompts"),
    ([1.5], GREEDY, TypeError, "prompt"),
    ([torch.tensor(PROMPT)], GREEDY, TypeError, "prompt"),
    (None, GREEDY, TypeError, "prompts"),
    ([PROMPT], SamplingParams(stop_token_ids=[1000]), ValueError, "stop_token_ids"),
    ([PROMPT * 40], GREEDY, ValueError, "max_model_len"),
])
def test_bad_generate_calls_queue_nothing(llm, clean, prompts, params, error, match):
    with pytest.raises(error, match=match):
        llm.generate(prompts, params, use_tqdm=False)
    assert_clean(llm, clean)


def test_automatic_request_ids_never_collide_with_chosen_ones(llm, clean):
    e = llm.engine
    auto = e.add_request(PROMPT, GREEDY)
    chosen = e.add_request(PROMPT, GREEDY, request_id=str(int(auto) + 1))      # the next automatic id
    third = e.add_request(PROMPT, GREEDY)
    assert len({auto, chosen, third}) == 3
    with pytest.raises(ValueError, match="request_id must be unique"):
        e.add_request(PROMPT, GREEDY, request_id=chosen)
    with pytest.raises(TypeError, match="request_id"):
        e.add_request(PROMPT, GREEDY, request_id=7)
    while e.has_unfinished_requests():
        e.step()
    assert_clean(llm, clean)


@pytest.mark.parametrize("kwargs, error, field", [
    (dict(dtype="float8"), ValueError, "dtype"),
    (dict(max_num_seqs="4"), ValueError, "max_num_seqs"),
    (dict(block_size=2.5), ValueError, "block_size"),
    (dict(num_kv_blocks=1.5), ValueError, "num_kv_blocks"),
    (dict(max_model_len=-5), ValueError, "max_model_len"),
    (dict(max_model_len=10**6), ValueError, "max_model_len"),
    (dict(preemption_mode="drop"), ValueError, "preemption_mode"),
    (dict(enable_chunked_prefill="yes"), ValueError, "enable_chunked_prefill"),
    (dict(max_cudagraph_capture_size=8), ValueError, "max_cudagraph_capture_size"),
    (dict(max_num_batched_token=8), TypeError, "max_num_batched_token"),        # a typo is named
])
def test_bad_constructor_arguments_name_the_field(llm, kwargs, error, field):
    model = llm.engine.model
    with pytest.raises(error, match=field):
        LLM(model, attention_backend="torch", **({"num_kv_blocks": 8} | kwargs))


def test_vllm_dtype_names():
    from course_lib.engine.llm import resolve_dtype
    assert resolve_dtype("float16", torch.float32) is torch.float16
    assert resolve_dtype("half", torch.float32) is torch.float16
    assert resolve_dtype("float32", torch.bfloat16) is torch.float32
    assert resolve_dtype("auto", torch.bfloat16) is torch.bfloat16
    assert resolve_dtype(torch.bfloat16, torch.float32) is torch.bfloat16
    with pytest.raises(ValueError, match="dtype"):
        resolve_dtype(torch.int8, torch.float32)


def test_sample_seeds_of_nearby_requests_do_not_collide():
    streams = {sample_seed(s, i) for s in range(50) for i in range(8)}
    assert len(streams) == 50 * 8
    assert sample_seed(7, 0) == 7 and sample_seed(2**64 - 1, 3) < 2**64


def test_step_log_stays_bounded(llm):
    model = llm.engine.model
    small = LLM(model, attention_backend="torch", block_size=4, num_kv_blocks=32, step_log_size=5)
    small.generate([PROMPT] * 3, SamplingParams(temperature=0, max_tokens=30, ignore_eos=True), use_tqdm=False)
    assert 5 <= len(small.engine.step_log) < 10
    assert small.engine.step_log[-1].num_free_blocks == 32


JUNK = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                 st.text(max_size=5), st.lists(st.integers(-5, 200), max_size=6),
                 st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=JUNK, params=st.one_of(JUNK, st.just(GREEDY)), request_id=st.one_of(st.none(), JUNK),
       arrival=st.one_of(st.none(), JUNK))
def test_any_input_is_rejected_cleanly_or_runs(llm, clean, prompt, params, request_id, arrival):
    e = llm.engine
    try:
        rid = e.add_request(prompt, params, request_id=request_id, arrival_time=arrival)
    except (ValueError, TypeError) as err:
        assert str(err), "an error must say what is wrong"
    else:
        while e.has_unfinished_requests():
            e.step()
        assert rid not in e.requests
    assert_clean(llm, clean)
