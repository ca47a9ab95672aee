"""Our Llama-family model against HF transformers, the reference implementation.

Tiny random models of each family (Llama 3 with rope scaling, Qwen2 with qkv bias, Qwen3 with q/k norm)
must give the same logits; so must the real SmolLM2-135M, whose greedy generations must match HF's
token for token, with and without our KV cache.
"""
import dataclasses
import json

import pytest
import torch
from transformers import (LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config,
                          Qwen3ForCausalLM)

from course_lib.config import ModelConfig
from course_lib.generate import generate
from course_lib.layers.rotary import rope_inv_freq
from course_lib.models import LlamaModel, load_model, load_weights

RTOL = 1e-4          # fp32: ‖ours − hf‖ / ‖hf‖
SEQ_LEN = 200        # past original_max_position_embeddings=64, where llama3 scaling changes the angles
LLAMA3_ROPE = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                   original_max_position_embeddings=64)
TINY = dict(vocab_size=211, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024)   # GQA 4:2


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread while this module runs. Decoding a 135M model is memory-bound, so a second
    thread buys little; on a shared 2-core machine two OpenMP threads waiting on each other made
    every step 5-10x slower (measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def tiny_hf(family: str):
    """A tiny HF model of ``family`` with every parameter random (HF would init biases 0, norms 1)."""
    if family == "llama3":   # transformers 5 takes rope settings in rope_parameters (rope_theta inside)
        cfg = LlamaConfig(**TINY, rope_parameters=dict(LLAMA3_ROPE, rope_theta=10000.0),
                          tie_word_embeddings=False)
        model = LlamaForCausalLM(cfg)
    elif family == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**TINY, tie_word_embeddings=True))
    else:                    # head_dim 24 != hidden / heads = 16
        model = Qwen3ForCausalLM(Qwen3Config(**TINY, head_dim=24, tie_word_embeddings=False))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1 + 0.2 * noise if name.endswith("norm.weight") else 0.1 * noise)
    return model.eval()


def ours_from_hf(hf) -> LlamaModel:
    ours = LlamaModel(ModelConfig.from_hf(hf.config.to_dict()))
    load_weights(ours, hf.state_dict().items())
    # Built outside the meta device, the rotary buffer already holds rope_inv_freq(cfg); load_model
    # copies it explicitly. Copy it again so this test does not depend on how the module was built.
    ours.rotary.inv_freq.copy_(rope_inv_freq(ours.cfg))
    return ours.eval()


def random_ids(vocab: int, length: int = SEQ_LEN, batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


# --- tiny random models of each family -------------------------------------------------------------

@pytest.fixture(scope="module", params=["llama3", "qwen2", "qwen3"])
def tiny_pair(request):
    hf = tiny_hf(request.param)
    return request.param, hf, ours_from_hf(hf)


@torch.no_grad()
def test_tiny_logits_match_hf(tiny_pair):
    family, hf, ours = tiny_pair
    ids = random_ids(hf.config.vocab_size)
    err = rel_err(ours(ids), hf(ids).logits)
    assert err < RTOL, f"{family}: relative logits error {err:.2e}"


@torch.no_grad()
def test_llama3_rope_scaling_is_applied_and_matters():
    hf = tiny_hf("llama3")
    cfg = ModelConfig.from_hf(hf.config.to_dict())
    unscaled = rope_inv_freq(dataclasses.replace(cfg, rope_scaling=None))
    # HF really scales: its low frequencies are divided by `factor`, the high ones kept.
    hf_inv = hf.model.rotary_emb.inv_freq.float()
    assert not torch.allclose(hf_inv, unscaled), "HF ignored the llama3 rope settings"
    assert torch.allclose(hf_inv[-1], unscaled[-1] / LLAMA3_ROPE["factor"])
    assert torch.allclose(hf_inv[0], unscaled[0])
    # Our model without the scaling disagrees with HF at these lengths, so the match above means something.
    ours = ours_from_hf(hf)
    ours.rotary.inv_freq.copy_(unscaled)
    ids = random_ids(hf.config.vocab_size)
    assert rel_err(ours(ids), hf(ids).logits) > 100 * RTOL


@pytest.mark.parametrize("family,shard", [("qwen2", None), ("qwen3", None), ("llama3", "40KB")])
@torch.no_grad()
def test_load_model_from_saved_folder(tmp_path, family, shard):
    hf = tiny_hf(family)
    kwargs = {"max_shard_size": shard} if shard else {}
    hf.save_pretrained(tmp_path, **kwargs)
    if shard:   # the checkpoint really is split, with an index naming each tensor's file
        index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
        assert len(set(index["weight_map"].values())) > 1
        assert not (tmp_path / "model.safetensors").exists()
    ours = load_model(str(tmp_path))
    assert ours.cfg == ModelConfig.from_hf(hf.config.to_dict())
    ids = random_ids(hf.config.vocab_size)
    err = rel_err(ours(ids), hf(ids).logits)
    assert err < RTOL, f"{family} loaded from {tmp_path}: relative logits error {err:.2e}"


# --- ModelConfig.from_hf reads each family's flags --------------------------------------------------

@pytest.mark.parametrize("family,qkv_bias,qk_norm,scaled,head_dim,tied", [
    ("llama3", False, False, True, 16, False),
    ("qwen2", True, False, False, 16, True),
    ("qwen3", False, True, False, 24, False),
])
def test_from_hf_reads_family_flags(family, qkv_bias, qk_norm, scaled, head_dim, tied):
    cfg = ModelConfig.from_hf(tiny_hf(family).config.to_dict())
    assert (cfg.qkv_bias, cfg.o_bias, cfg.qk_norm) == (qkv_bias, False, qk_norm)
    assert (cfg.head_dim, cfg.tie_word_embeddings, cfg.num_kv_heads) == (head_dim, tied, 2)
    assert cfg.rope_theta == 10000.0
    if scaled:
        assert cfg.rope_scaling == LLAMA3_ROPE
    else:
        assert cfg.rope_scaling is None


def test_from_hf_reads_transformers4_rope_scaling():
    """Older config.json files keep rope_theta at the top and the scaling dict in rope_scaling."""
    d = dict(TINY, model_type="llama", rope_theta=500000.0, rope_scaling=dict(LLAMA3_ROPE))
    cfg = ModelConfig.from_hf(d)
    assert cfg.rope_theta == 500000.0 and cfg.rope_scaling == LLAMA3_ROPE


# --- the real SmolLM2-135M ------------------------------------------------------------------------

PLAIN = ["The capital of France is", "Once upon a time, there was a little robot who",
         "def fibonacci(n):", "The three primary colors are"]
CHAT = ["What is the capital of France?", "Name three fruits.", "Write a haiku about the sea.",
        "What is 2 + 2?"]
PROMPTS = [(p, False) for p in PLAIN] + [(p, True) for p in CHAT]
MAX_NEW = 64
NO_CACHE_NEW = 12    # the no-cache loop costs O(length) per step: a shorter run says the same


@pytest.fixture(scope="module")
def smol(smol_model, hf_smol, smol_tokenizer):
    return smol_model, hf_smol, smol_tokenizer          # loaded once (conftest.py)


def until_eos(ids: list[int], eos: tuple[int, ...]) -> list[int]:
    """``ids`` up to and including the first EOS (HF pads a finished row after it in a batch)."""
    for i, t in enumerate(ids):
        if t in eos:
            return ids[:i + 1]
    return ids


def first_difference(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


@pytest.fixture(scope="module")
def smol_runs(smol):
    """For each prompt: (prompt ids, our cached greedy output, HF's greedy output), stopping at EOS."""
    ours, hf, tok = smol
    runs = {}
    for prompt, chat in PROMPTS:
        ids = tok.encode(prompt, chat=chat)
        mine = generate(ours, ids, MAX_NEW, stop_token_ids=tok.eos_token_ids).token_ids
        with torch.no_grad():
            out = hf.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                              do_sample=False, max_new_tokens=MAX_NEW, eos_token_id=list(tok.eos_token_ids),
                              pad_token_id=tok.eos_token_ids[0])
        runs[prompt] = (ids, mine, until_eos(out[0, len(ids):].tolist(), tok.eos_token_ids))
    return runs


@torch.no_grad()
def test_smollm2_logits_match_hf(smol):
    ours, hf, tok = smol
    text = tok.encode("The quick brown fox jumps over the lazy dog. " * 4)
    ids = torch.cat([torch.tensor([text]), random_ids(ours.cfg.vocab_size, 64, batch=1)], dim=1)
    err = rel_err(ours(ids), hf(ids).logits)
    assert err < RTOL, f"relative logits error {err:.2e}"


@pytest.mark.parametrize("prompt,chat", PROMPTS)
def test_smollm2_greedy_matches_hf(smol_runs, prompt, chat):
    ids, mine, theirs = smol_runs[prompt]
    assert mine == theirs, f"first difference at new token {first_difference(mine, theirs)}"


def test_smollm2_runs_cover_both_endings(smol, smol_runs):
    """The prompts exercise both ways to finish: all MAX_NEW tokens, and stopping at EOS (inclusive)."""
    eos = smol[2].eos_token_ids
    endings = {"full" if len(mine) == MAX_NEW else "eos" for _, mine, _ in smol_runs.values()}
    assert endings == {"full", "eos"}
    for _, mine, _ in smol_runs.values():
        assert all(t not in eos for t in mine[:-1])
        assert len(mine) == MAX_NEW or mine[-1] in eos


@pytest.mark.parametrize("prompt,chat", PROMPTS)
def test_smollm2_no_cache_loop_matches_cached(smol, smol_runs, prompt, chat):
    ours, _, tok = smol
    ids, cached, _ = smol_runs[prompt]
    uncached = generate(ours, ids, NO_CACHE_NEW, use_cache=False, stop_token_ids=tok.eos_token_ids)
    assert uncached.token_ids == cached[:NO_CACHE_NEW]
