"""One-byte K/V caches (EngineConfig.kv_cache_dtype = "fp8" | "fp8_e4m3" | "fp8_e5m2", Day 19): the
saturating write, every attention path reading fp8 against the reference on the same fp8 cache, the
fused RoPE + cache write, and the engine: 4x the blocks of an fp32 cache in the same memory, the torch
and Triton backends equal on fp8, and close to the model-dtype cache."""
import pytest
import torch

from course_lib import LLM, ModelConfig, SamplingParams
from course_lib.config import EngineConfig
from course_lib.kernels import paged_attention_triton
from course_lib.kernels.rope_kv import rope_write_kv, rope_write_kv_ref
from course_lib.kv.paged import paged_attention_ref, paged_attention_torch, to_cache
from course_lib.models.llama import LlamaModel
from course_lib.models.loader import init_random_

from test_paged import random_paged_batch

FP8 = [torch.float8_e4m3fn, torch.float8_e5m2]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def test_to_cache_saturates_and_clears_nan():
    x = torch.tensor([1.0, -3.3, 500.0, -1e6, float("inf"), float("-inf"), float("nan")])
    e4 = to_cache(x, torch.float8_e4m3fn).float()
    assert e4.tolist() == [1.0, -3.25, 448.0, -448.0, 448.0, -448.0, 0.0]     # e4m3: 3 mantissa bits
    e5 = to_cache(x, torch.float8_e5m2).float()
    assert e5.tolist() == [1.0, -3.5, 512.0, -57344.0, 57344.0, -57344.0, 0.0]  # e5m2: 2 bits, more range
    same = to_cache(x, torch.float32)
    assert same[:4].tolist() == pytest.approx(x[:4].tolist()) and same[6] == 0 and same[4] == torch.finfo(torch.float32).max


@pytest.mark.parametrize("cache_dtype", FP8)
@pytest.mark.parametrize("q_dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("q_lens,seq_lens", [([1, 1, 1], [5, 17, 33]), ([4, 1, 9], [4, 20, 30])])
def test_attention_on_an_fp8_cache_equals_the_reference_on_it(cache_dtype, q_dtype, q_lens, seq_lens):
    q, k, v, tables, lens, qsl = random_paged_batch(q_lens, seq_lens, 4, 2, 16, 8)
    k8, v8 = k.to(cache_dtype).to(DEVICE), v.to(cache_dtype).to(DEVICE)
    q, tables, lens, qsl = q.to(DEVICE, q_dtype), tables.to(DEVICE), lens.to(DEVICE), qsl.to(DEVICE)
    want = paged_attention_ref(q, k8.to(q_dtype), v8.to(q_dtype), tables, lens, qsl)   # the values the cache holds
    tol = 1e-5 if q_dtype == torch.float32 else 2e-3
    for fn in (paged_attention_ref, paged_attention_torch, paged_attention_triton):
        got = fn(q, k8, v8, tables, lens, qsl, max_query_len=max(q_lens))
        assert got.dtype == q_dtype
        torch.testing.assert_close(got.float(), want.float(), rtol=tol, atol=tol, msg=fn.__name__)


@pytest.mark.parametrize("cache_dtype", FP8)
def test_fused_rope_write_into_an_fp8_cache_equals_the_torch_ops(cache_dtype):
    g = torch.Generator().manual_seed(0)
    N, H, KVH, D = 5, 4, 2, 16
    q, k, v = (torch.randn(N, h, D, generator=g).to(DEVICE) * 100 for h in (H, KVH, KVH))   # some beyond 448
    ang = torch.randn(N, D // 2, generator=g).to(DEVICE)
    cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)
    caches = [torch.zeros(4, 8, KVH, D, dtype=cache_dtype, device=DEVICE) for _ in range(4)]
    slots = torch.tensor([3, 9, 10, 30, 17], device=DEVICE)
    q_ref = rope_write_kv_ref(q.clone(), k, v, cos, sin, caches[0], caches[1], slots)
    q_got = rope_write_kv(q.clone(), k, v, cos, sin, caches[2], caches[3], slots)
    torch.testing.assert_close(q_got, q_ref, rtol=1e-5, atol=1e-4)
    mantissa = 3 if cache_dtype == torch.float8_e4m3fn else 2
    for a, b in ((caches[0], caches[2]), (caches[1], caches[3])):
        a, b = a.float(), b.float()
        big = torch.maximum(a.abs(), b.abs()).clamp(min=2.0 ** -6)
        step = 2.0 ** (torch.floor(torch.log2(big)) - mantissa)      # the fp8 spacing at each value
        # a rotation rounded in another order can cross a rounding boundary: one step; and the CPU
        # interpreter rounds fp8 ties away from zero (torch: to even): one more. The interpreter
        # (triton 3.9) also drops the carry when rounding up to a power of two (124 -> 64, not 128):
        # on the CPU those elements are left out; a GPU converts in hardware.
        ok = (a - b).abs() <= 2 * step
        if DEVICE == "cpu":
            ok |= (a != 0) & (torch.log2(a.abs()) == torch.floor(torch.log2(a.abs())))
        assert ok.all(), "the fused write stores what the torch ops store"
        assert a.abs().max() <= torch.finfo(cache_dtype).max and (a != 0).sum() == N * KVH * D


def tiny():
    m = LlamaModel(ModelConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                               num_kv_heads=2, head_dim=16, max_position_embeddings=512))
    init_random_(m, seed=0)
    return m


def test_an_fp8_cache_holds_four_times_the_blocks_of_fp32_in_the_same_memory():
    m = tiny()
    full, fp8 = (LLM(m, kv_memory_gb=0.01, kv_cache_dtype=d).engine for d in ("auto", "fp8"))
    assert full.cache.kv.dtype == torch.float32 and fp8.cache.kv.dtype == torch.float8_e4m3fn
    assert fp8.kv_manager.num_blocks // 4 == full.kv_manager.num_blocks
    assert fp8.cache.nbytes <= 0.01 * 2**30 * 1.01


def test_the_engine_on_fp8_is_the_same_on_both_backends_and_close_to_fp32():
    m = tiny()
    prompts = [list(range(1, 30)), [5, 6, 7] * 8, list(range(100, 140))]
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True, prompt_logprobs=0)
    runs = {}
    for name, kw in {"fp32": dict(kv_cache_dtype="auto", attention_backend="torch"),
                     "fp8 torch": dict(kv_cache_dtype="fp8", attention_backend="torch"),
                     "fp8 triton": dict(kv_cache_dtype="fp8", attention_backend="triton")}.items():
        outs = LLM(m, **kw).generate(prompts, params, use_tqdm=False)
        runs[name] = [[next(iter(d.values())).logprob for d in o.prompt_logprobs[1:]] for o in outs]
    flat = lambda r: torch.tensor([x for row in r for x in row])                      # noqa: E731
    torch.testing.assert_close(flat(runs["fp8 triton"]), flat(runs["fp8 torch"]), rtol=1e-4, atol=1e-4)
    diff = (flat(runs["fp8 torch"]) - flat(runs["fp32"])).abs()
    assert 0 < diff.max() < 0.1, f"fp8 K/V move prompt logprobs by at most {diff.max():.4f}"


def test_swap_and_prefix_caching_work_on_an_fp8_cache():
    m = tiny()
    prompts = [list(range(1, 40)), list(range(1, 40)) + [7, 8], list(range(60, 100))]
    params = SamplingParams(temperature=0, max_tokens=20, ignore_eos=True)
    want = [o.outputs[0].token_ids for o in LLM(m, kv_cache_dtype="fp8").generate(prompts, params, use_tqdm=False)]
    llm = LLM(m, kv_cache_dtype="fp8", num_kv_blocks=9, preemption_mode="swap", enable_prefix_caching=True)
    got = [o.outputs[0].token_ids for o in llm.generate(prompts, params, use_tqdm=False)]
    assert got == want
    assert sum(r.num_preempted for r in llm.engine.step_log) > 0, "the small pool made it swap"
    assert llm.engine.kv_manager.num_free_blocks == 9


def test_bad_kv_cache_dtype_names_the_field():
    with pytest.raises(ValueError, match=r"kv_cache_dtype must be one of \('auto', 'fp8', 'fp8_e4m3', 'fp8_e5m2'\)"):
        EngineConfig(kv_cache_dtype="int8")
