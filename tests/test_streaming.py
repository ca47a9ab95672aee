"""step() streams: a RequestOutput for every request that made progress, each step.

Requests join while others run; with output_kind="delta" every step's output holds only the new
tokens and text, and the pieces concatenate to exactly the final output, including characters whose
UTF-8 bytes are split across tokens (Chinese text and emoji from the real model, greedy)."""
import pytest

from course_lib.config import SamplingParams
from course_lib.engine.detokenizer import IncrementalDetokenizer
from course_lib.engine.llm import LLM

FIRST = ["Say hello in Chinese.", "The capital of France is"]
LATER = ["Reply with three emoji.", "What is 'thank you' in Korean?"]
GREEDY = SamplingParams(temperature=0, max_tokens=20)


@pytest.fixture(scope="module")
def smol(smol_model, smol_tokenizer):
    return smol_model, smol_tokenizer                  # loaded once (conftest.py)


def test_detokenizer_releases_whole_characters_only(smol):
    tok = smol[1]
    text = "héllo 你好 🎉 naïve — 日本語!"
    ids = tok.encode(text)
    assert sum("\ufffd" in tok.decode([i]) for i in ids) >= 5, "the text must split characters"
    d, pieces = IncrementalDetokenizer(tok), []
    for k in range(1, len(ids) + 1):
        pieces.append(d.step(ids[:k], final=k == len(ids)))
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) == text == d.text
    assert pieces.count("") >= 3, "some tokens completed no character and must release nothing"


@pytest.mark.parametrize("async_scheduling", [False, True])
def test_step_streams_deltas_that_concatenate_to_the_final_output(smol, async_scheduling):
    model, tok = smol
    llm = LLM(model, tokenizer=tok, attention_backend="torch", num_kv_blocks=64,
              async_scheduling=async_scheduling)
    engine = llm.engine
    chat = {q: tok.encode(q, chat=True) if "?" in q or q.endswith(".") else q for q in FIRST + LATER}
    ref = {q: o.outputs[0] for q, o in zip(chat, llm.generate(list(chat.values()), GREEDY, use_tqdm=False))}
    rids = {engine.add_request(chat[q], GREEDY, output_kind="delta"): q for q in FIRST}
    tokens, texts, finished, withheld = {}, {}, {}, 0
    for step in range(200):
        if step == 3:       # two more join while the first two are decoding
            rids |= {engine.add_request(chat[q], GREEDY, output_kind="delta"): q for q in LATER}
        if not engine.has_unfinished_requests():
            break
        for out in engine.step():
            q = rids[out.request_id]
            assert q not in finished, f"{q!r}: output after its finished one"
            c = out.outputs[0]
            assert len(c.token_ids) <= 1, "a decode step adds at most one token per request"
            tokens.setdefault(q, []).extend(c.token_ids)
            texts.setdefault(q, []).append(c.text)
            withheld += bool(c.token_ids) and c.text == "" and "\ufffd" in tok.decode(c.token_ids)
            if out.finished:
                finished[q] = c.finish_reason
            else:
                assert c.finish_reason is None
    assert set(finished) == set(chat)
    for q, r in ref.items():
        assert tokens[q] == r.token_ids, f"{q!r}: streamed tokens differ from generate's"
        assert "".join(texts[q]) == r.text == tok.decode(r.token_ids), f"{q!r}: deltas do not add up"
        assert finished[q] == r.finish_reason
    assert withheld >= 2, "no multi-byte character was split across tokens: the test proves nothing"
    assert engine.kv_manager.num_free_blocks == engine.kv_manager.num_blocks


def test_cumulative_outputs_grow_and_final_only_waits(smol):
    model, tok = smol
    llm = LLM(model, tokenizer=tok, attention_backend="torch", num_kv_blocks=64)
    engine = llm.engine
    a = engine.add_request("The capital of France is", GREEDY)                     # cumulative
    b = engine.add_request("Once upon a time", GREEDY, output_kind="final_only")
    seen = {a: [], b: []}
    while engine.has_unfinished_requests():
        for out in engine.step():
            seen[out.request_id].append(out)
    growth = [len(o.outputs[0].token_ids) for o in seen[a]]
    assert growth == list(range(1, len(growth) + 1)), "a cumulative output holds everything so far"
    assert all(o.outputs[0].text.startswith(p.outputs[0].text) for p, o in zip(seen[a], seen[a][1:]))
    assert len(seen[b]) == 1 and seen[b][0].finished and len(seen[b][0].outputs[0].token_ids) == 20
    with pytest.raises(ValueError, match="output_kind"):
        engine.add_request("x", GREEDY, output_kind="deltas")
