"""Acceptance tests of the serving engine.

- The real SmolLM2-135M in float32: 16 prompts run together through ``LLM.generate`` (continuous,
  static, and a KV pool so small that sequences are preempted) == HF ``generate`` on each prompt alone.
- A tiny random model (fast) for the rest: abort wherever a request is, rejection of requests that can
  never run, static vs continuous admission read from the step log, n > 1 and seeded sampling, and
  bad input at the ``LLM`` level. Every engine must end drained: all blocks free, no request left.
"""
import pytest
import torch

from course_lib.config import EngineConfig, ModelConfig, SamplingParams
from course_lib.engine.llm import LLM
from course_lib.engine.llm_engine import LLMEngine
from course_lib.engine.sequence import SequenceStatus
from course_lib.generate import generate
from course_lib.models.llama import LlamaModel
from course_lib.models.loader import init_random_

N = 24                      # new tokens per prompt in the SmolLM2 runs
PLAIN = [
    "Hi",
    "The capital of France is",
    "def fibonacci(n):",
    "1, 2, 3, 4, 5,",
    "Water boils at a temperature of",
    "Monday, Tuesday, Wednesday,",
    "Once upon a time, in a small village by the sea,",
    "import numpy as np\n\nx = np.arange(10)\n",
    "The quick brown fox jumps over the lazy dog. The quick brown fox",
    "In machine learning, a transformer is a neural network architecture that relies on "
    "self-attention instead of recurrence. It was introduced in 2017 in the paper 'Attention Is All "
    "You Need' and now underlies most large language models. Its key advantage over recurrent "
    "networks is",
]
CHAT = [                    # chat-templated; several end with EOS before N tokens
    "What is 2 + 2?",
    "What is the capital of Italy?",
    "Translate 'cat' into French.",
    "Give me one word that rhymes with 'moon'.",
    "Name a primary color.",
    "Write a haiku about the sea.",
]
MIN_MARGIN = 1e-3           # HF's top-1 minus top-2 logit at every greedy step of the references


def assert_drained(engine: LLMEngine) -> None:
    """Nothing left behind: every block free with a zero count (device and host pools), no request
    or sequence queued, nothing owned by any sequence."""
    kv = engine.kv_manager
    for pool in filter(None, (kv.pool, kv.swap_pool)):
        assert pool.num_free_blocks == pool.num_blocks
        assert sorted(pool.free_block_ids()) == list(range(pool.num_blocks))
        assert all(b.ref_cnt == 0 for b in pool.blocks), "a free block still has references"
    assert kv.tables == {} and kv.swapped == {}
    assert engine.requests == {} and engine.scheduler.live == {}
    s = engine.scheduler
    assert not s.waiting and not s.running and not s.swapped
    assert not engine.has_unfinished_requests()


def run_to_end(engine: LLMEngine, max_steps: int = 2000) -> dict:
    outs = {}
    for _ in range(max_steps):
        if not engine.has_unfinished_requests():
            return outs
        for o in engine.step():
            outs[o.request_id] = o
    raise AssertionError(f"the engine did not finish in {max_steps} steps: "
                         f"{len(engine.scheduler.waiting)} waiting, {len(engine.scheduler.running)} running")


# ---- the real model against HF transformers -----------------------------------------------------------

@pytest.fixture(scope="module")
def smol(smol_model, smol_tokenizer):
    return smol_model, smol_tokenizer                  # float32, CPU; loaded once (conftest.py)


@pytest.fixture(scope="module")
def prompts(smol):
    """(what LLM.generate gets, the token ids HF gets): text for plain prompts, ids for chat ones."""
    tok = smol[1]
    return ([(p, tok.encode(p)) for p in PLAIN] +
            [(tok.encode(p, chat=True),) * 2 for p in CHAT])


@pytest.fixture(scope="module")
def hf_greedy(prompts, hf_smol):
    """HF greedy tokens of each prompt run alone (up to and including EOS) and the smallest top-2
    logit margin over its steps."""
    hf = hf_smol
    refs = []
    for _, ids in prompts:
        x = torch.tensor([ids])
        with torch.inference_mode():
            out = hf.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=N,
                              output_scores=True, return_dict_in_generate=True)
        top2 = torch.stack(out.scores)[:, 0].topk(2, dim=-1).values          # (steps, 2)
        refs.append((out.sequences[0, len(ids):].tolist(), (top2[:, 0] - top2[:, 1]).tolist()))
    eos = hf.generation_config.eos_token_id
    return refs, eos


def test_reference_prompts_have_no_near_ties(hf_greedy, smol):
    refs, eos = hf_greedy
    # Both stop on the same token, so the comparison below can include EOS.
    assert {eos} == set(smol[1].eos_token_ids)
    assert any(toks[-1] == eos for toks, _ in refs), "no prompt ends with EOS: pick others"
    assert any(len(toks) == N for toks, _ in refs)
    for text, (_, margins) in zip(PLAIN + CHAT, refs):
        assert min(margins) > MIN_MARGIN, f"{text!r}: a near-tie makes greedy ill-defined; pick another"


ENGINE_RUNS = {
    # max_num_seqs=8: the 16 prompts do not fit in one batch, so continuous and static differ
    "continuous": dict(scheduler="continuous", max_num_seqs=8, block_size=16, num_kv_blocks=64),
    "static": dict(scheduler="static", max_num_seqs=8, block_size=16, num_kv_blocks=64),
    # 56 blocks of 4 = 224 slots, while the 16 requests hold ~700 tokens (~180 blocks) at the end:
    # admission fills the pool and decode steps preempt
    "preempting": dict(scheduler="continuous", max_num_seqs=32, block_size=4, num_kv_blocks=56),
    # async scheduling (the CUDA default) on the CPU: one step in flight, its tokens filled in a step
    # later; EOS-stopped sequences have one extra token scheduled that must be dropped
    "continuous-async": dict(scheduler="continuous", max_num_seqs=8, block_size=16, num_kv_blocks=64,
                             async_scheduling=True),
    "preempting-async": dict(scheduler="continuous", max_num_seqs=32, block_size=4, num_kv_blocks=56,
                             async_scheduling=True),
}


@pytest.mark.parametrize("run", ENGINE_RUNS)
def test_batched_engine_greedy_equals_hf_alone(run, smol, prompts, hf_greedy):
    model, tok = smol
    refs, eos = hf_greedy
    llm = LLM(model, tokenizer=tok, attention_backend="torch", **ENGINE_RUNS[run])
    outs = llm.generate([p for p, _ in prompts], SamplingParams(temperature=0, max_tokens=N))
    assert len(outs) == len(prompts)
    for (p, ids), out, (ref, margins) in zip(prompts, outs, refs):
        got = out.outputs[0].token_ids
        if got != ref:
            i = next((j for j, (a, b) in enumerate(zip(got, ref)) if a != b), min(len(got), len(ref)))
            pytest.fail(f"{run}: {p!r} diverges at token {i} (HF margin there "
                        f"{margins[min(i, len(margins) - 1)]:.2e}):\nengine {got}\nHF     {ref}")
        assert out.prompt_token_ids == ids and out.finished
        assert out.outputs[0].finish_reason == ("stop" if ref[-1] == eos else "length")
        assert out.outputs[0].text == tok.decode(ref)
    assert_drained(llm.engine)
    preemptions = sum(o.metrics.num_preemptions for o in outs)
    logged = sum(r.num_preempted for r in llm.engine.step_log)
    assert preemptions == logged
    if run.startswith("preempting"):
        assert preemptions > 0, "the small pool should have forced preemption"
    else:
        assert preemptions == 0
    if run == "static":
        log = llm.engine.step_log
        assert all(alive_across(log, k) == [] for k, r in enumerate(log) if r.is_prefill)


# ---- a tiny random model --------------------------------------------------------------------------------

VOCAB = 101


def tiny_model(seed: int = 0) -> LlamaModel:
    """2-layer GQA Llama, no EOS (requests end on max_tokens). Weights scaled to std 0.1 so logits are
    O(1) and greedy choices are not decided by rounding."""
    cfg = ModelConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_layers=2,
                      num_heads=4, num_kv_heads=2, head_dim=8, max_position_embeddings=128)
    m = LlamaModel(cfg)
    init_random_(m, seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if not name.endswith("norm.weight"):
                p.mul_(5.0)
    return m.eval()


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


def tiny_engine(model, **kw) -> LLMEngine:
    max_model_len = kw.pop("max_model_len", None)
    cfg = dict(block_size=4, num_kv_blocks=64, attention_backend="torch")
    return LLMEngine(model, None, EngineConfig(**(cfg | kw)), max_model_len)


def prompt_ids(n: int, seed: int) -> list[int]:
    return torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def alone(model, ids, max_tokens) -> list[int]:
    """The single-sequence reference loop (contiguous KV cache), greedy."""
    return generate(model, ids, max_tokens).token_ids


# -- abort

@pytest.mark.parametrize("async_scheduling", [False, True])
def test_abort_waiting_running_and_preempted_requests(tiny, async_scheduling):
    # 12 blocks of 4 and at most 3 running: the first three admitted fill the pool as they decode
    engine = tiny_engine(tiny, num_kv_blocks=12, max_num_seqs=3, async_scheduling=async_scheduling)
    greedy = SamplingParams(temperature=0, max_tokens=16)
    prompts = {str(i): prompt_ids(n, seed=i) for i, n in enumerate([6, 9, 5, 7, 8, 4])}
    seqs = {}
    for rid, ids in prompts.items():
        engine.add_request(ids, greedy, request_id=rid)
        seqs[rid] = engine.requests[rid].seqs[0]
    refs = {rid: alone(tiny, ids, 16) for rid, ids in prompts.items()}
    engine.step()
    aborted = {}

    def abort(rid, expect_status):
        seq = seqs[rid]
        assert seq.status is expect_status
        kv = engine.kv_manager
        free_before, held = kv.num_free_blocks, len(kv.block_ids(seq.seq_id))
        out = engine.abort_request(rid)
        assert out.finished and out.request_id == rid
        assert [c.finish_reason for c in out.outputs] == ["abort"]
        assert kv.num_free_blocks == free_before + held
        assert seq not in engine.scheduler.waiting and seq not in engine.scheduler.running
        assert rid not in engine.requests
        assert engine.abort_request(rid) is None          # already gone
        aborted[rid] = out.outputs[0].token_ids

    # waiting, never scheduled
    never = next(r for r, s in seqs.items() if s.first_scheduled_time is None)
    abort(never, SequenceStatus.WAITING)
    assert aborted[never] == []
    # preempted: back in the waiting queue, tokens kept, blocks dropped
    for _ in range(60):
        engine.step()
        preempted = [r for r, s in seqs.items()
                     if s.status is SequenceStatus.WAITING and s.num_preemptions > 0]
        if preempted:
            break
    else:
        pytest.fail("no request was preempted: the pool is too large for this test")
    assert seqs[preempted[0]].output_token_ids
    assert not engine.kv_manager.block_ids(seqs[preempted[0]].seq_id)
    abort(preempted[0], SequenceStatus.WAITING)
    # running, with blocks in the cache
    running = next(r for r, s in seqs.items() if s.status is SequenceStatus.RUNNING)
    assert engine.kv_manager.block_ids(seqs[running].seq_id)
    abort(running, SequenceStatus.RUNNING)

    outs = run_to_end(engine)
    assert set(outs) == set(prompts) - set(aborted)
    for rid, out in outs.items():
        assert out.outputs[0].token_ids == refs[rid], f"request {rid} changed when others were aborted"
        assert out.outputs[0].finish_reason == "length"
    for rid, tokens in aborted.items():                     # what was generated before the abort
        assert tokens == refs[rid][:len(tokens)]
    assert engine.abort_request("no-such-request") is None
    assert_drained(engine)


# -- rejection

def engine_state(engine):
    kv, s = engine.kv_manager, engine.scheduler
    return (len(s.waiting), len(s.running), [q.seq_id for q in s.waiting], kv.pool.free_block_ids(),
            [b.ref_cnt for b in kv.pool.blocks], sorted(engine.requests), sorted(s.live))


@pytest.mark.parametrize("prompt_len, max_tokens, field, chunked", [
    (10, 23, "num_kv_blocks", True),        # 33 tokens > 8 blocks * 4 slots (but <= max_model_len 40)
    (10, 31, "max_model_len", True),        # 41 > 40
    # unchunked, a prompt must fit one step's token budget (chunked, it runs: the next test)
    (21, 1, "max_num_batched_tokens", False),
])
def test_request_that_can_never_run_is_rejected_and_the_queue_is_untouched(tiny, prompt_len,
                                                                           max_tokens, field, chunked):
    engine = tiny_engine(tiny, num_kv_blocks=8, max_num_batched_tokens=20, max_model_len=40,
                         enable_chunked_prefill=chunked)
    greedy = SamplingParams(temperature=0, max_tokens=5)
    good = {engine.add_request(prompt_ids(n, seed=n), greedy): prompt_ids(n, seed=n) for n in (6, 8)}
    engine.step()                                           # two running
    rid = engine.add_request(prompt_ids(5, seed=5), greedy)  # one waiting
    good[rid] = prompt_ids(5, seed=5)
    before = engine_state(engine)
    with pytest.raises(ValueError, match=field):
        engine.add_request(prompt_ids(prompt_len, seed=99), SamplingParams(max_tokens=max_tokens))
    assert engine_state(engine) == before
    outs = run_to_end(engine)
    assert {r: o.outputs[0].token_ids for r, o in outs.items()} == {
        r: alone(tiny, ids, 5) for r, ids in good.items()}
    assert_drained(engine)


def test_prompt_longer_than_the_token_budget_runs_in_chunks(tiny):
    engine = tiny_engine(tiny, num_kv_blocks=8, max_num_batched_tokens=20, max_model_len=40)
    engine.add_request(prompt_ids(27, seed=3), SamplingParams(temperature=0, max_tokens=4))
    out = run_to_end(engine)["0"]
    assert out.outputs[0].token_ids == alone(tiny, prompt_ids(27, seed=3), 4)
    assert [r.num_tokens for r in engine.step_log] == [20, 7, 1, 1, 1]   # 27 = a chunk of 20 + 7
    assert_drained(engine)


def test_requests_exactly_at_the_limits_are_accepted_and_run(tiny):
    engine = tiny_engine(tiny, num_kv_blocks=8, max_num_batched_tokens=20, max_model_len=32)
    engine.add_request(prompt_ids(20, seed=1), SamplingParams(temperature=0, max_tokens=12))  # 32 = all
    assert run_to_end(engine)["0"].outputs[0].token_ids == alone(tiny, prompt_ids(20, seed=1), 12)
    assert_drained(engine)


def test_preempted_sequence_longer_than_the_token_budget_still_finishes(tiny):
    # A preempted sequence is recomputed as one prefill of prompt + outputs so far. If that can exceed
    # max_num_batched_tokens, the request must be refused up front, or admitted anyway: never left
    # waiting forever with nothing running.
    engine = tiny_engine(tiny, block_size=2, num_kv_blocks=14, max_num_batched_tokens=8,
                         enable_chunked_prefill=False)
    try:
        for seed in (1, 2):
            engine.add_request(prompt_ids(6, seed), SamplingParams(temperature=0, max_tokens=20))
    except ValueError as e:
        assert "max_num_batched_tokens" in str(e)
        return
    outs = run_to_end(engine, max_steps=300)
    assert sum(o.metrics.num_preemptions for o in outs.values()) > 0
    assert_drained(engine)


# -- static vs continuous, read from the step log

def seq_spans(step_log):
    """seq_id -> (first step, last step) it appeared in."""
    spans = {}
    for k, rec in enumerate(step_log):
        for s in rec.seq_ids:
            spans[s] = (spans.get(s, (k, k))[0], k)
    return spans


def alive_across(step_log, k):
    """Sequences that ran before step k and run again after it: in the cache during step k."""
    return [s for s, (first, last) in seq_spans(step_log).items() if first < k < last]


def test_step_log_counts_the_tokens_each_step_ran(tiny):
    engine = tiny_engine(tiny)
    for n in (3, 8, 5):
        engine.add_request(prompt_ids(n, seed=n), SamplingParams(temperature=0, max_tokens=4))
    run_to_end(engine)
    log = engine.step_log
    assert [r.is_prefill for r in log] == [True, False, False, False]
    assert [len(r.seq_ids) for r in log] == [3, 3, 3, 3]
    assert [r.num_tokens for r in log] == [3 + 8 + 5, 3, 3, 3], "prefill: every prompt token"


MAX_TOKENS = [2, 9, 3, 7, 4, 5]


def run_policy(model, scheduler, **kw):
    engine = tiny_engine(model, scheduler=scheduler, max_num_seqs=2, **kw)
    ids = {}
    for i, m in enumerate(MAX_TOKENS):
        ids[engine.add_request(prompt_ids(3 + i, seed=i), SamplingParams(temperature=0, max_tokens=m))] = i
    outs = run_to_end(engine)
    assert_drained(engine)
    return engine, {ids[r]: o.outputs[0].token_ids for r, o in outs.items()}


def test_static_admits_only_when_the_batch_has_finished(tiny):
    engine, tokens = run_policy(tiny, "static")
    log = engine.step_log
    assert all(r.num_preempted == 0 for r in log)
    prefills = [k for k, r in enumerate(log) if r.is_prefill]
    assert len(prefills) == 3                                   # 6 requests, batches of 2
    for k in prefills:
        assert alive_across(log, k) == [], f"step {k} admitted while a batch was running"
        assert k == 0 or not log[k - 1].is_prefill
    # slots freed by the short member stay empty: some decode steps run a single sequence
    assert any(len(r.seq_ids) == 1 for r in log if not r.is_prefill)
    assert tokens == {i: alone(tiny, prompt_ids(3 + i, seed=i), m) for i, m in enumerate(MAX_TOKENS)}


def test_static_batch_formed_over_several_prefills_still_waits_for_the_whole_batch(tiny):
    # A token budget of 8 admits one 3-7 token prompt per prefill step, so a batch of 2 is formed over
    # two prefill steps; once it has decoded, nobody joins until both members are done.
    engine, tokens = run_policy(tiny, "static", max_num_batched_tokens=8)
    log = engine.step_log
    spans = seq_spans(log)
    for k, rec in enumerate(log):
        if rec.is_prefill and k > 0 and not log[k - 1].is_prefill:   # first prefill after decoding
            assert alive_across(log, k) == [], f"step {k} admitted while a batch was running"
    assert max(sum(1 for f, l in spans.values() if f <= k <= l) for k in range(len(log))) <= 2
    assert tokens == {i: alone(tiny, prompt_ids(3 + i, seed=i), m) for i, m in enumerate(MAX_TOKENS)}


def test_continuous_admits_as_soon_as_a_slot_frees(tiny):
    engine, tokens = run_policy(tiny, "continuous")
    log = engine.step_log
    spans = seq_spans(log)
    joined_mid_flight = 0
    for k in range(len(log) - 1):
        finished_here = any(last == k for _, last in spans.values())
        still_to_start = any(first > k for first, _ in spans.values())
        if finished_here and still_to_start:
            assert log[k + 1].is_prefill, f"a slot freed at step {k} but step {k + 1} did not admit"
            joined_mid_flight += bool(alive_across(log, k + 1))
    assert joined_mid_flight > 0, "no sequence joined while another was running"
    static_engine, static_tokens = run_policy(tiny, "static")
    assert tokens == static_tokens
    assert len(log) < len(static_engine.step_log)


# -- n > 1 and seeded sampling

SEEDED = SamplingParams(n=3, temperature=0.8, seed=7, max_tokens=12)


def tiny_llm(model, **kw) -> LLM:
    return LLM(model, attention_backend="torch", **(dict(block_size=4, num_kv_blocks=64) | kw))


def test_n_samples_are_three_different_completions(tiny):
    llm = tiny_llm(tiny)
    [out] = llm.generate([prompt_ids(5, seed=0)], SEEDED)
    assert [c.index for c in out.outputs] == [0, 1, 2]
    assert all(len(c.token_ids) == 12 and c.finish_reason == "length" for c in out.outputs)
    assert len({tuple(c.token_ids) for c in out.outputs}) == 3
    assert_drained(llm.engine)


@pytest.mark.parametrize("pool", [dict(), dict(num_kv_blocks=12)], ids=["roomy", "preempting"])
def test_seeded_request_does_not_depend_on_its_batch(tiny, pool):
    prompt, other = prompt_ids(5, seed=0), prompt_ids(9, seed=1)
    other_seeded = SamplingParams(temperature=1.0, top_k=20, seed=123, max_tokens=10)
    alone_llm = tiny_llm(tiny)
    ref = [c.token_ids for c in alone_llm.generate([prompt], SEEDED)[0].outputs]
    ref_other = alone_llm.generate([other], other_seeded)[0].outputs[0].token_ids
    again = [c.token_ids for c in alone_llm.generate([prompt], SEEDED)[0].outputs]
    assert again == ref, "the same seed gave different tokens"

    llm = tiny_llm(tiny, **pool)
    batch = [prompt_ids(7, seed=2), prompt, prompt_ids(3, seed=3), other, prompt_ids(11, seed=4)]
    params = [SamplingParams(temperature=1.0, max_tokens=9), SEEDED, SamplingParams(temperature=0,
              max_tokens=6), other_seeded, SamplingParams(temperature=0.5, top_p=0.9, max_tokens=12)]
    outs = llm.generate(batch, params)
    assert [c.token_ids for c in outs[1].outputs] == ref
    assert outs[3].outputs[0].token_ids == ref_other
    if pool:
        assert sum(o.metrics.num_preemptions for o in outs) > 0
    assert_drained(llm.engine)


# -- bad input at the LLM level

@pytest.mark.parametrize("prompt, params, message", [
    ("", None, "prompt must be a non-empty"),
    ([[]], None, "prompt must be a non-empty"),
    ([[1, 2, VOCAB]], None, rf"prompt token ids must be integers in \[0, {VOCAB}\), got \[{VOCAB}\]"),
    ([[-1, 3]], None, r"prompt token ids .* got \[-1\]"),
    ([[1, 2.5]], None, r"prompt token ids .* got \[2.5\]"),
    ([list(range(20))], SamplingParams(max_tokens=13), r"max_tokens \(13\) must be <= max_model_len=32"),
    ([[1, 2]], [SamplingParams(), SamplingParams()], "sampling_params"),
])
def test_llm_rejects_bad_input_naming_the_field(tiny, prompt, params, message):
    llm = tiny_llm(tiny, max_model_len=32)
    with pytest.raises(ValueError, match=message):
        llm.generate(prompt, params)
    assert_drained(llm.engine)


def test_one_bad_prompt_rejects_the_whole_call(tiny):
    llm = tiny_llm(tiny, max_model_len=32)
    good = [[1, 2, 3], [4, 5]]
    for bad in ([], [VOCAB + 5], list(range(40))):
        with pytest.raises(ValueError, match="prompt|max_model_len"):
            llm.generate([*good, bad], SamplingParams(temperature=0, max_tokens=4))
        assert_drained(llm.engine)
        assert llm.engine.step_log == []                    # nothing ran
    outs = llm.generate(good, SamplingParams(temperature=0, max_tokens=4))
    assert [o.outputs[0].token_ids for o in outs] == [alone(tiny, g, 4) for g in good]


def test_one_bad_text_prompt_rejects_the_whole_call(smol):
    model, tok = smol
    llm = LLM(model, tokenizer=tok, attention_backend="torch", num_kv_blocks=16, max_model_len=64)
    for bad in (["Hello", ""], ["Hello", "word " * 70]):
        with pytest.raises(ValueError, match="prompt"):
            llm.generate(bad, SamplingParams(max_tokens=4))
        assert_drained(llm.engine)
        assert llm.engine.step_log == []


def test_swap_copies_happen_in_a_step_that_schedules_nothing():
    """Under async scheduling a step can schedule no sequence (every token in flight) while it swaps
    blocks out: those copies must still run (found by the Day 12 notebook's fuzzing)."""
    import random
    cfg = ModelConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2,
                      num_kv_heads=1, head_dim=32, max_position_embeddings=512)
    m = LlamaModel(cfg)
    init_random_(m, seed=0)
    m.eval()
    rng = random.Random(0)
    prompts = [[rng.randrange(512) for _ in range(n)] for n in [49, 56, 49, 9, 47, 25, 41]]
    params = [SamplingParams(temperature=0, max_tokens=t, ignore_eos=True) for t in [4, 8, 18, 14, 18, 10, 26]]
    kw = dict(attention_backend="torch", block_size=4, num_kv_blocks=20, preemption_mode="swap",
              max_num_batched_tokens=16, max_num_seqs=4)
    ref = [o.outputs[0].token_ids for o in LLM(m, attention_backend="torch", block_size=4, num_kv_blocks=200)
           .generate(prompts, params, use_tqdm=False)]
    for async_scheduling in (False, True):
        llm = LLM(m, async_scheduling=async_scheduling, **kw)
        got = [o.outputs[0].token_ids for o in llm.generate(prompts, params, use_tqdm=False)]
        assert got == ref, f"async_scheduling={async_scheduling}"
        assert max(r.num_swapped for r in llm.engine.step_log) > 0
        assert_drained(llm.engine)
