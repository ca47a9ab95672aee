"""The fused Day 9 kernels against their torch references, and the model with the switch on == off.

- `add_rmsnorm` (residual add + RMSNorm), `silu_mul` (SwiGLU activation) and `rope_write_kv` (RoPE + paged
  K/V write) == the unfused torch ops, on irregular shapes: rows not a multiple of a block, head_dim 6
  and 48 (not powers of two), strided inputs, NaN/inf/overflow sanitised as the unfused path does;
- a tiny random model through the engine (paged KV, torch attention) gives the same greedy tokens,
  logprobs and cache contents with ``use_fused_kernels(True)`` as without, and really ran the kernels.

On a CPU the kernels run under TRITON_INTERPRET=1 (set in conftest.py) in float32 and float16; the
interpreter casts to bfloat16 by truncation, so bfloat16 and real shapes (hidden 1024/2048,
intermediate 3072/8192, head_dim 128/64) run on CUDA only.
"""
import pytest
import torch

from course_lib.config import ModelConfig, SamplingParams
from course_lib.engine.llm import LLM
from course_lib.kernels import rmsnorm as rmsnorm_mod
from course_lib.kernels import rope_kv as rope_mod
from course_lib.kernels import swiglu as swiglu_mod
from course_lib.kernels.rmsnorm import add_rmsnorm, add_rmsnorm_ref
from course_lib.kernels.rope_kv import rope_write_kv, rope_write_kv_ref, rope_ref
from course_lib.kernels.swiglu import silu_mul, silu_mul_ref
from course_lib.kv.paged import PagedAttentionContext, PagedKVCache
from course_lib.layers.rotary import RotaryEmbedding, apply_rope
from course_lib.models.llama import LlamaModel
from course_lib.models.loader import init_random_

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
CUDA = DEVICE == "cuda"
TOL = {   # kernel vs the torch reference run in the same dtype: reduction order, exp, an ulp of rounding
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    torch.float16: dict(atol=5e-3, rtol=5e-3),
    torch.bfloat16: dict(atol=3e-2, rtol=3e-2),
}
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if CUDA else [])
cuda_only = pytest.mark.skipif(not CUDA, reason="real shapes and bfloat16 need a CUDA GPU")


def randn(*shape, dtype=torch.float32, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=g)).to(device=DEVICE, dtype=dtype)


# ---- fused residual add + RMSNorm ----------------------------------------------------------------

def check_rmsnorm(x, residual, weight, eps=1e-6):
    y, r = add_rmsnorm(x, residual, weight, eps)
    y_ref, r_ref = add_rmsnorm_ref(x, residual, weight, eps)
    assert y.shape == x.shape and y.dtype == y_ref.dtype and r.dtype == x.dtype
    assert torch.equal(r, r_ref), "the residual sum must be exactly x + residual in the input dtype"
    torch.testing.assert_close(y, y_ref, **TOL[x.dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 48), (7, 100), (2, 3, 64), (5, 576)])
@pytest.mark.parametrize("with_residual", [True, False])
def test_add_rmsnorm_matches_reference(shape, dtype, with_residual):
    d = shape[-1]
    x = randn(*shape, dtype=dtype, seed=1, scale=3.0)
    residual = randn(*shape, dtype=dtype, seed=2) if with_residual else None
    weight = randn(d, dtype=dtype, seed=3, scale=0.5) + 1           # not ones: the weight must matter
    check_rmsnorm(x, residual, weight)


def test_add_rmsnorm_strided_rows_and_no_residual_returns_x():
    wide = randn(6, 130, seed=4)
    x = wide[:, 3:103]                                             # row stride 130, not 100
    residual, weight = randn(6, 100, seed=5), randn(100, seed=6) + 1
    check_rmsnorm(x, residual, weight)
    y, r = add_rmsnorm(x, None, weight, 1e-5)
    assert r is x, "without a residual the sum is x itself (nothing to write)"
    torch.testing.assert_close(y, add_rmsnorm_ref(x, None, weight, 1e-5)[0], **TOL[torch.float32])


def test_add_rmsnorm_eps_and_zero_rows():
    """An all-zero row normalises to 0 (eps keeps it finite); eps itself reaches the result."""
    x, weight = torch.zeros(3, 40, device=DEVICE), randn(40, seed=7)
    x[1] = 1e-3
    check_rmsnorm(x, None, weight, eps=1e-6)
    check_rmsnorm(x, None, weight, eps=1e-2)
    small_eps, big_eps = (add_rmsnorm(x, None, weight, eps)[0].abs().max() for eps in (1e-6, 1e-2))
    assert small_eps > 2 * big_eps, "eps must reach the kernel"


# ---- fused SwiGLU activation ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 2), (4, 74), (2, 3, 48), (3, 2200)])   # 2200: two column tiles
def test_silu_mul_matches_reference(shape, dtype):
    gate_up = randn(*shape, dtype=dtype, seed=8, scale=4.0)          # silu's curved part and both tails
    out = silu_mul(gate_up)
    assert out.shape == (*shape[:-1], shape[-1] // 2) and out.dtype == dtype
    torch.testing.assert_close(out, silu_mul_ref(gate_up), **TOL[dtype])


def test_silu_mul_strided_rows():
    wide = randn(5, 90, seed=9)
    gate_up = wide[:, :74]                                          # row stride 90
    torch.testing.assert_close(silu_mul(gate_up), silu_mul_ref(gate_up), **TOL[torch.float32])


# ---- fused RoPE + paged KV write -------------------------------------------------------------------

def rope_case(n, heads, kv_heads, head_dim, dtype=torch.float32, block_size=4, seed=0):
    """q, k, v as views of one qkv buffer (as the attention layer makes them), cos/sin of random
    positions from the model's RotaryEmbedding, random caches and n distinct shuffled slots."""
    g = torch.Generator().manual_seed(seed)
    q_size, kv_size = heads * head_dim, kv_heads * head_dim
    qkv = torch.randn(n, q_size + 2 * kv_size, generator=g).to(device=DEVICE, dtype=dtype)
    q, k, v = qkv.split([q_size, kv_size, kv_size], dim=-1)
    q, k, v = q.view(n, heads, head_dim), k.view(n, kv_heads, head_dim), v.view(n, kv_heads, head_dim)
    rotary = RotaryEmbedding(ModelConfig(vocab_size=1, hidden_size=8, intermediate_size=8, num_layers=1,
                                         num_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim))
    positions = torch.randint(0, 5000, (n,), generator=g).to(DEVICE)
    cos, sin = rotary(positions, dtype)                              # (N, D) each
    num_blocks = -(-2 * n // block_size) + 1                         # about half the slots get written
    k_cache = torch.randn(num_blocks, block_size, kv_heads, head_dim, generator=g).to(DEVICE, dtype)
    v_cache = torch.randn(k_cache.shape, generator=g).to(DEVICE, dtype)
    slots = torch.randperm(num_blocks * block_size, generator=g)[:n].to(DEVICE)
    return q, k, v, cos, sin, k_cache, v_cache, slots


def check_rope_kv(case):
    q, k, v, cos, sin, k_cache, v_cache, slots = case
    k_in, v_in = k.clone(), v.clone()
    kc_ref, vc_ref = k_cache.clone(), v_cache.clone()
    q_ref = rope_write_kv_ref(q.clone(), k, v, cos, sin, kc_ref, vc_ref, slots)
    got = rope_write_kv(q, k, v, cos, sin, k_cache, v_cache, slots)
    assert got.data_ptr() == q.data_ptr(), "q is rotated in place"
    tol = TOL[q.dtype]
    torch.testing.assert_close(q, q_ref, **tol)
    torch.testing.assert_close(k_cache, kc_ref, **tol)              # whole cache: other slots untouched
    torch.testing.assert_close(v_cache, vc_ref, atol=0, rtol=0)     # v is copied, not computed
    for t, before in ((k, k_in), (v, v_in)):                       # k and v themselves stay as they were
        torch.testing.assert_close(t, before, atol=0, rtol=0, equal_nan=True)


def test_rope_reference_is_the_layers_rope():
    q, _, _, cos, sin, *_ = rope_case(5, 4, 2, 16)
    assert torch.equal(rope_ref(q, cos, sin), apply_rope(q[None], cos[None], sin[None])[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, heads, kv_heads, head_dim", [
    (5, 4, 2, 16), (1, 6, 2, 48), (7, 3, 3, 6), (3, 8, 1, 64)])     # GQA, odd head counts, D 6 and 48
def test_rope_kv_matches_reference(n, heads, kv_heads, head_dim, dtype):
    check_rope_kv(rope_case(n, heads, kv_heads, head_dim, dtype))


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")   # numpy, under the interpreter
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_rope_kv_sanitises_nan_inf_and_overflow(dtype):
    """NaN -> 0 and +-inf -> +-max in the cache, as attend()'s nan_to_num; in float16 a rotation of
    large values overflows to inf after rounding, which must also arrive as 65504."""
    case = rope_case(4, 2, 2, 8, dtype)
    q, k, v = case[:3]
    k[0, 0, 1], k[1, 1, 6], v[2, 0, 3], v[3, 1, 0] = float("nan"), float("inf"), -float("inf"), float("nan")
    if dtype == torch.float16:
        k[2, 0] = 60000.0                                          # |x1 c + x2 s| can reach 84,000
    check_rope_kv(case)
    assert torch.isfinite(case[5]).all() and torch.isfinite(case[6]).all()


def test_rope_kv_int32_slots_and_empty_batch():
    case = list(rope_case(5, 4, 2, 16))
    case[7] = case[7].int()
    check_rope_kv(case)
    empty = rope_case(0, 4, 2, 16)
    assert rope_write_kv(*empty).shape == (0, 4, 16)


# ---- contracts --------------------------------------------------------------------------------------

def rope_args(**change):
    """rope_write_kv's arguments for a small case, with some replaced by bad ones."""
    names = ("q", "k", "v", "cos", "sin", "k_cache", "v_cache", "slot_mapping")
    args = dict(zip(names, rope_case(3, 4, 2, 16)))
    return [change[n](args[n]) if n in change else args[n] for n in names]


@pytest.mark.parametrize("call, match", [
    (lambda: add_rmsnorm(randn(3, 8), randn(3, 9), randn(8), 1e-6), "residual"),
    (lambda: add_rmsnorm(randn(3, 8), None, randn(9), 1e-6), "weight"),
    (lambda: add_rmsnorm(randn(3, 8).double(), None, randn(8).double(), 1e-6), "dtype"),
    (lambda: silu_mul(randn(3, 7)), "even"),
    (lambda: rope_write_kv(*rope_args(cos=lambda t: t[:2])), "cos"),
    (lambda: rope_write_kv(*rope_args(sin=lambda t: t.double())), "sin"),
    (lambda: rope_write_kv(*rope_args(slot_mapping=lambda t: t.float())), "slot_mapping"),
    (lambda: rope_write_kv(*rope_args(k_cache=lambda t: t[..., :8], v_cache=lambda t: t[..., :8])),
     "k_cache"),
    (lambda: rope_write_kv(*rope_args(q=lambda t: t[..., :8])), "head_dim"),
])
def test_bad_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.skipif(CUDA, reason="the interpreter's limitation only")
def test_bfloat16_refused_by_interpreter():
    x = randn(2, 8, dtype=torch.bfloat16)
    for call in (lambda: add_rmsnorm(x, None, x[0], 1e-6), lambda: silu_mul(x),
                 lambda: rope_write_kv(*rope_case(2, 2, 1, 8, torch.bfloat16))):
        with pytest.raises(ValueError, match="bfloat16"):
            call()


@pytest.mark.skipif(CUDA, reason="CPU only")
def test_switch_refuses_cpu_without_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        LlamaModel(ModelConfig(vocab_size=5, hidden_size=8, intermediate_size=8, num_layers=1,
                               num_heads=1, num_kv_heads=1, head_dim=8)).use_fused_kernels(True)


# ---- the model: switch on == switch off -------------------------------------------------------------

def tiny_model(qk_norm: bool) -> LlamaModel:
    """2 layers, GQA 4:2, head_dim 24 (not a power of two); weights large enough that the logits
    depend strongly on the context (as in test_paged.py)."""
    cfg = ModelConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4,
                      num_kv_heads=2, head_dim=24, max_position_embeddings=256, qk_norm=qk_norm)
    m = LlamaModel(cfg)
    init_random_(m, seed=0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("norm.weight"):                       # not ones: the weights must matter
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.mul_(5.0)
    return m.to(DEVICE).eval()


def test_switch_sets_every_flag_and_starts_unchosen():
    """None until chosen (an engine may then pick), and one call sets the model and all its layers."""
    model = tiny_model(qk_norm=False)

    def flags():
        return {type(m).__name__: m.fused for m in model.modules() if hasattr(m, "fused")}
    assert model.fused is None and not any(flags().values())
    assert set(flags()) == {"LlamaModel", "Attention", "SwiGLU"}
    model.use_fused_kernels(True)
    assert all(f is True for f in flags().values())
    model.use_fused_kernels(False)
    assert all(f is False for f in flags().values())


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts calls of each fused kernel (the layers import them at call time, so the spies are seen)."""
    calls = {"add_rmsnorm": 0, "silu_mul": 0, "rope_write_kv": 0}
    for mod, name in ((rmsnorm_mod, "add_rmsnorm"), (swiglu_mod, "silu_mul"), (rope_mod, "rope_write_kv")):
        def spy(*args, _fn=getattr(mod, name), _name=name):
            calls[_name] += 1
            return _fn(*args)
        monkeypatch.setattr(mod, name, spy)
    return calls


@pytest.mark.parametrize("qk_norm", [False, True], ids=["llama", "qwen3"])
def test_fused_engine_equals_unfused(qk_norm, kernel_calls):
    """Greedy tokens, logprobs and the final KV cache through LLM (paged KV, mixed prefill/decode)."""
    model = tiny_model(qk_norm)
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, 97, (n,), generator=g).tolist() for n in (3, 13, 6)]
    params = SamplingParams(temperature=0, max_tokens=6, logprobs=True, ignore_eos=True)
    runs = {}
    for flag in (False, True):
        model.use_fused_kernels(flag)
        llm = LLM(model, attention_backend="torch", block_size=4, num_kv_blocks=24, max_num_seqs=2,
                  random_weights=True)
        runs[flag] = llm.generate(prompts, params), llm.engine.cache.kv
        if not flag:
            assert sum(kernel_calls.values()) == 0, "the switch is off: no kernel may run"
    model.use_fused_kernels(False)
    layers = model.cfg.num_layers
    rope_calls = kernel_calls["rope_write_kv"]           # one per layer per forward pass
    assert rope_calls >= 2 * layers and kernel_calls["silu_mul"] == rope_calls
    norms = 2 * layers + 1 + (2 * layers if qk_norm else 0)   # Qwen3's per-head q/k norms too
    assert kernel_calls["add_rmsnorm"] == norms * rope_calls // layers
    (off, cache_off), (on, cache_on) = runs[False], runs[True]
    for a, b in zip(off, on):
        assert a.outputs[0].token_ids == b.outputs[0].token_ids
        torch.testing.assert_close(torch.tensor(b.outputs[0].token_logprobs),
                                   torch.tensor(a.outputs[0].token_logprobs), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cache_on, cache_off, atol=1e-5, rtol=1e-5)
    assert len({tuple(o.outputs[0].token_ids) for o in off}) > 1, "degenerate model: all outputs equal"


def prefill_logits(model, ids, fused, block_size=16):
    """Logits of one prompt prefilled over a fresh paged cache (blocks 0, 1, ...), and that cache."""
    T = len(ids)
    cache = PagedKVCache(model.cfg, num_blocks=-(-T // block_size), block_size=block_size,
                         device=DEVICE, dtype=model.dtype)
    i32 = dict(dtype=torch.int32, device=DEVICE)
    ctx = PagedAttentionContext(cache, torch.arange(T, device=DEVICE),
                                torch.arange(cache.num_blocks, **i32)[None], torch.tensor([T], **i32),
                                torch.tensor([0, T], **i32), max_query_len=T)
    if CUDA:
        from course_lib.kernels import paged_attention_triton
        ctx.attention_fn = paged_attention_triton
    model.use_fused_kernels(fused)
    with torch.inference_mode():
        logits = model(torch.tensor([ids], device=DEVICE), torch.arange(T, device=DEVICE)[None], ctx)[0]
    model.use_fused_kernels(False)
    return logits, cache.kv


def test_fused_forward_without_kv_and_over_paged_kv(kernel_calls):
    """kv=None fuses the norms and SwiGLU only (no attend_rope to call); paged KV fuses RoPE too."""
    model = tiny_model(qk_norm=True)
    ids = torch.randint(0, 97, (2, 11), generator=torch.Generator().manual_seed(2)).to(DEVICE)
    with torch.inference_mode():
        ref = model(ids)
        logits = model.use_fused_kernels(True)(ids)
    model.use_fused_kernels(False)
    assert kernel_calls["rope_write_kv"] == 0 and kernel_calls["silu_mul"] == 2
    torch.testing.assert_close(logits, ref, atol=1e-5, rtol=1e-5)
    (off, kv_off), (on, kv_on) = (prefill_logits(model, ids[0].tolist(), f) for f in (False, True))
    torch.testing.assert_close(on, off, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(on, ref[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(kv_on, kv_off, atol=1e-5, rtol=1e-5)


# ---- real shapes on CUDA ----------------------------------------------------------------------------

@cuda_only
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("hidden", [1024, 2048])
@pytest.mark.parametrize("n", [1, 257, 4096])
def test_gpu_add_rmsnorm_real_shapes(n, hidden, dtype):
    x, residual = randn(n, hidden, dtype=dtype, seed=1, scale=3.0), randn(n, hidden, dtype=dtype, seed=2)
    check_rmsnorm(x, residual, randn(hidden, dtype=dtype, seed=3, scale=0.1) + 1)


@cuda_only
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("inter", [3072, 8192])
@pytest.mark.parametrize("n", [1, 257, 4096])
def test_gpu_silu_mul_real_shapes(n, inter, dtype):
    gate_up = randn(n, 2 * inter, dtype=dtype, seed=8, scale=4.0)
    torch.testing.assert_close(silu_mul(gate_up), silu_mul_ref(gate_up), **TOL[dtype])


@cuda_only
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("heads, kv_heads, head_dim", [(16, 8, 128), (32, 8, 64)])
@pytest.mark.parametrize("n", [1, 257, 4096])
def test_gpu_rope_kv_real_shapes(n, heads, kv_heads, head_dim, dtype):
    check_rope_kv(rope_case(n, heads, kv_heads, head_dim, dtype, block_size=16))


@cuda_only
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_gpu_fused_prefill_logits(dtype):
    """Qwen3-like tiny model in bf16 on the GPU with Triton attention: switch on ~= switch off."""
    model = tiny_model(qk_norm=True).to(dtype)
    ids = torch.randint(0, 97, (200,), generator=torch.Generator().manual_seed(3)).tolist()
    off, _ = prefill_logits(model, ids, False)
    on, _ = prefill_logits(model, ids, True)
    rel = ((on.float() - off.float()).norm() / off.float().norm()).item()
    assert rel < (2e-2 if dtype == torch.bfloat16 else 1e-5), f"relative error {rel:.2e}"
