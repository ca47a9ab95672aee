"""Chunked prefill and preemption keep greedy outputs exact (the engine-core acceptance).

The embedded SmolLM2-135M in float32 on the CPU: prompts of 1 to 2,000 tokens, run together under
continuous and static scheduling with token budgets of 16, 64 and 4,096 (chunked and unchunked), and
with KV pools so small that preemption is forced, by recompute and by swap. Every run must give each
prompt exactly the tokens HF transformers gives it alone (so chunked == unchunked token for token),
and leave every block free.
"""
import pytest
import torch

from course_lib.config import SamplingParams
from course_lib.engine.llm import LLM

N = 16                       # new tokens per prompt
MIN_MARGIN = 1e-3            # HF's top-1 minus top-2 logit at every greedy step of the references


def counting(n_tokens: int, tok) -> list[int]:
    """A prompt of exactly ``n_tokens`` tokens that the model continues with confidence."""
    text = ", ".join(str(i) for i in range(1, 2000))
    return tok.encode(text)[:n_tokens]


@pytest.fixture(scope="module")
def smol(smol_model, smol_tokenizer):
    return smol_model, smol_tokenizer                  # loaded once (conftest.py)


@pytest.fixture(scope="module")
def prompts(smol):
    tok = smol[1]
    story = tok.encode("Once upon a time, in a small village by the sea, there lived an old "
                       "fisherman who every morning ") * 12
    return {
        "one": tok.encode("The")[:1],
        "short": tok.encode("The capital of France is"),
        "story-300": story[:300],
        "count-301": counting(301, tok),
        "count-2000": counting(2000, tok),
    }


@pytest.fixture(scope="module")
def hf_refs(prompts, hf_smol):
    hf = hf_smol
    refs = {}
    for name, ids in prompts.items():
        x = torch.tensor([ids])
        with torch.inference_mode():
            out = hf.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=N,
                              min_new_tokens=N, output_scores=True, return_dict_in_generate=True)
        top2 = torch.stack(out.scores)[:, 0].topk(2, dim=-1).values
        refs[name] = (out.sequences[0, len(ids):].tolist(), float((top2[:, 0] - top2[:, 1]).min()))
    return refs


def test_reference_prompts_have_no_near_ties(hf_refs, prompts):
    assert max(len(p) for p in prompts.values()) == 2000 and min(len(p) for p in prompts.values()) == 1
    for name, (_, margin) in hf_refs.items():
        assert margin > MIN_MARGIN, f"{name}: a near-tie makes greedy ill-defined; pick another prompt"


LONG = ["one", "short", "count-2000"]                    # every length, roomy pool
PRESSED = ["one", "short", "story-300", "count-301"]     # small pool: preemption forced
RUNS = {
    # budget 16 runs in the pressed runs below; the 2,000-token prompt at 16 would be 125 slow steps
    "continuous-64": (LONG, dict(max_num_batched_tokens=64)),
    "static-64": (LONG, dict(scheduler="static", max_num_batched_tokens=64)),
    "unchunked-4096": (LONG, dict(enable_chunked_prefill=False)),
    # Small pools of 16-token blocks (the longest request alone needs 20). Sized with the scheduler's
    # arithmetic, which does not depend on the weights: a 16-token budget admits the long prompts a
    # chunk at a time, so only 24 blocks make them collide; static admits only what fits, so it
    # preempts at 40 (when both long prompts were admitted together) and not at 24.
    "continuous-16-recompute": (PRESSED, dict(max_num_batched_tokens=16, num_kv_blocks=24)),
    "continuous-64-swap": (PRESSED, dict(max_num_batched_tokens=64, num_kv_blocks=24,
                                         preemption_mode="swap")),
    "static-16-swap": (PRESSED, dict(scheduler="static", max_num_batched_tokens=16, num_kv_blocks=24,
                                     preemption_mode="swap")),
    "static-4096-recompute": (PRESSED, dict(scheduler="static", num_kv_blocks=40)),
}


@pytest.mark.parametrize("run", RUNS)
def test_chunked_and_preempted_greedy_equals_hf_alone(run, smol, prompts, hf_refs):
    names, kw = RUNS[run]
    model, tok = smol
    llm = LLM(model, tokenizer=tok, attention_backend="torch", **(dict(num_kv_blocks=256) | kw))
    params = SamplingParams(temperature=0, max_tokens=N, ignore_eos=True)
    outs = llm.generate([prompts[n] for n in names], params, use_tqdm=False)
    for name, out in zip(names, outs):
        assert out.outputs[0].token_ids == hf_refs[name][0], f"{run}: {name} differs from HF alone"
    log = llm.engine.step_log
    budget = llm.engine.cfg.max_num_batched_tokens
    if llm.engine.cfg.enable_chunked_prefill:
        assert max(r.num_tokens for r in log) <= budget
    if "count-2000" in names and budget < 2000:
        assert sum(r.is_prefill for r in log) >= 2000 // budget, "the long prompt must take many steps"
    preempted = sum(o.metrics.num_preemptions for o in outs)
    assert (preempted > 0) == ("recompute" in run or "swap" in run), f"{run}: {preempted} preemptions"
    if "swap" in run:
        assert max(r.num_swapped for r in log) > 0, "swap mode never swapped"
    kv = llm.engine.kv_manager
    assert kv.num_free_blocks == kv.num_blocks and kv.tables == {} and kv.swapped == {}
