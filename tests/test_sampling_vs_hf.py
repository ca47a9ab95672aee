"""Day 06 end to end on the embedded SmolLM2-135M (fp32, 8 prompts): the engine's repetition
penalty, min_tokens, stop strings and logprobs=k against HF transformers' generate and forward, and
the frequency/presence penalties against a plain replay of the same model with the reference
penalties. All greedy, so a difference is a bug, not sampling noise."""
import pytest
import torch

from course_lib import LLM, SamplingParams
from course_lib.layers.sampler import apply_penalties

PROMPTS = [("The capital of France is", False), ("Once upon a time, there was a little robot who", False),
           ("def fibonacci(n):", False), ("The three primary colors are", False),
           ("What is the capital of France?", True), ("Name three fruits.", True),
           ("Write a haiku about the sea.", True), ("What is 2 + 2?", True)]
NEW = 20


@pytest.fixture(scope="module")
def smol(smol_model, smol_tokenizer, hf_smol):
    before = torch.get_num_threads()
    torch.set_num_threads(1)          # a 135M model decodes no faster on 2 busy threads (test_models.py)
    tok = smol_tokenizer              # the model, tokenizer and HF model are loaded once (conftest.py)
    llm = LLM(smol_model, tokenizer=tok, num_kv_blocks=128, block_size=16)
    ids = [tok.encode(p, chat=chat) for p, chat in PROMPTS]
    yield llm, hf_smol, tok, ids, tok.hf      # tok.hf: AutoTokenizer.from_pretrained of the same folder
    torch.set_num_threads(before)


def hf_generate(hf, tok, ids, **kw) -> list[int]:
    with torch.no_grad():
        out = hf.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                          do_sample=False, max_new_tokens=NEW, eos_token_id=list(tok.eos_token_ids),
                          pad_token_id=tok.eos_token_ids[0], **kw)
    return out[0, len(ids):].tolist()


def ours(llm, ids, **kw):
    return [o.outputs[0] for o in llm.generate(ids, SamplingParams(temperature=0, max_tokens=NEW, **kw),
                                                use_tqdm=False)]


def test_repetition_penalty_matches_hf_generate(smol):
    llm, hf, tok, ids, _ = smol
    got = ours(llm, ids, repetition_penalty=1.3)
    for prompt, mine in zip(ids, got):
        assert mine.token_ids == hf_generate(hf, tok, prompt, repetition_penalty=1.3)
    plain = ours(llm, ids)
    assert sum(a.token_ids != b.token_ids for a, b in zip(got, plain)) >= 4, "the penalty must change outputs"


def test_min_tokens_matches_hf_generate(smol):
    llm, hf, tok, ids, _ = smol
    got = ours(llm, ids, min_tokens=NEW - 4)
    for prompt, mine in zip(ids, got):
        assert mine.token_ids == hf_generate(hf, tok, prompt, min_new_tokens=NEW - 4)
        assert len(mine.token_ids) >= NEW - 4
    # the chat answers end early without it: min_tokens is what kept them going
    assert any(len(o.token_ids) < NEW - 4 for o in ours(llm, ids[4:]))


def test_stop_strings_match_hf_generate(smol):
    llm, hf, tok, ids, hf_tok = smol
    stop = [" the", ".", "\n"]
    got = ours(llm, ids, stop=stop)
    kept = ours(llm, ids, stop=stop, include_stop_str_in_output=True)
    stopped = 0
    for prompt, mine, incl in zip(ids, got, kept):
        theirs = hf_generate(hf, tok, prompt, stop_strings=stop, tokenizer=hf_tok)
        assert mine.token_ids == theirs == incl.token_ids
        full = tok.decode(theirs)
        if mine.finish_reason == "stop" and mine.stop_reason in stop:
            stopped += 1
            cut = min(i for i in (full.find(s) for s in stop) if i != -1)
            assert mine.text == full[:cut] and incl.text == full[:cut + len(mine.stop_reason)]
            assert not any(s in mine.text for s in stop)
        else:
            assert mine.text == incl.text == full
    assert stopped >= 6, "most outputs must end on a stop string"


def test_logprobs_k_match_hf_forward(smol):
    llm, hf, tok, ids, _ = smol
    k = 5
    for prompt, out in zip(ids, ours(llm, ids, logprobs=k, ignore_eos=True)):
        with torch.no_grad():
            logits = hf(torch.tensor([prompt + out.token_ids])).logits[0, len(prompt) - 1:-1]   # (NEW, V)
        lp = logits.log_softmax(-1)
        assert len(out.logprobs) == len(out.token_ids) == NEW
        for t, (token, entry) in enumerate(zip(out.token_ids, out.logprobs)):
            assert abs(entry[token].logprob - lp[t, token].item()) < 1e-4
            assert entry[token].rank == (lp[t] > lp[t, token]).sum().item() + 1
            top = lp[t].topk(k)
            ranked = {tid: e for tid, e in entry.items() if tid != token or e.rank <= k}
            assert sorted(ranked) == sorted(top.indices.tolist())
            for tid, value in zip(top.indices.tolist(), top.values.tolist()):
                assert abs(entry[tid].logprob - value) < 1e-4
            assert entry[token].decoded_token == tok.decode([token], skip_special_tokens=False)


def test_frequency_and_presence_penalties_replay(smol):
    """The engine (device-side token counts) against a greedy replay of the same model that
    penalises from the Python list of tokens so far (the reference formula)."""
    llm, _, tok, ids, _ = smol
    model = llm.engine.model
    params = SamplingParams(temperature=0, max_tokens=12, frequency_penalty=1.2, presence_penalty=0.6,
                            ignore_eos=True)
    for prompt, out in zip(ids[:4], llm.generate(ids[:4], params, use_tqdm=False)):
        seq = []
        with torch.no_grad():
            for _ in range(12):
                logits = model(torch.tensor([prompt + seq]))[0, -1:]
                seq.append(int(apply_penalties(logits, [prompt], [seq], [params]).argmax()))
        assert out.outputs[0].token_ids == seq


def test_prompt_logprobs_match_hf_forward_across_chunks(smol):
    """prompt_logprobs=3 with an 8-token budget: every prompt is scored over several chunks."""
    llm, hf, tok, ids, _ = smol
    chunked = LLM(llm.engine.model, tokenizer=tok, num_kv_blocks=128, block_size=16, max_num_batched_tokens=8)
    outs = chunked.generate(ids, SamplingParams(temperature=0, max_tokens=2, prompt_logprobs=3), use_tqdm=False)
    assert max(len(p) for p in ids) > 8
    for prompt, out in zip(ids, outs):
        with torch.no_grad():
            lp = hf(torch.tensor([prompt])).logits[0].log_softmax(-1)          # (P, V): row p predicts p + 1
        scores = out.prompt_logprobs
        assert len(scores) == len(prompt) and scores[0] is None
        for p in range(1, len(prompt)):
            token, entry = prompt[p], scores[p]
            assert abs(entry[token].logprob - lp[p - 1, token].item()) < 1e-4
            assert entry[token].rank == (lp[p - 1] > lp[p - 1, token]).sum().item() + 1
            assert set(lp[p - 1].topk(3).indices.tolist()) <= set(entry)
    plain = llm.generate(ids[:1], SamplingParams(temperature=0, max_tokens=2), use_tqdm=False)
    assert plain[0].prompt_logprobs is None


def test_streamed_deltas_add_up_and_never_show_a_stop_string(smol):
    llm, _, _, ids, _ = smol
    stop = [" the", "."]
    params = SamplingParams(temperature=0, max_tokens=NEW, stop=stop)
    for prompt, want in zip(ids[:4], ours(llm, ids[:4], stop=stop)):
        llm.engine.add_request(prompt, params, output_kind="delta")
        text = ""
        while llm.engine.has_unfinished_requests():
            for o in llm.engine.step():
                text += o.outputs[0].text
                assert not any(s in text for s in stop), text
        assert text == want.text
