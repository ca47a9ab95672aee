"""The decode GEMV kernel (Day 14) against exact float64 matrix-vector products, and its use in the
model: a linear layer given one row runs it when the switch is on, anything else runs cuBLAS.

On a CPU the kernel runs under TRITON_INTERPRET=1 (conftest.py) on small irregular shapes; bfloat16
and real shapes (the projections and LM heads of llama-3.2-1b and qwen3-0.6b) run on CUDA only."""
import pytest
import torch
from torch.nn import functional as F

from course_lib.config import ModelConfig
from course_lib.kernels import gemv as gemv_mod
from course_lib.kernels.gemv import gemv, gemv_config
from course_lib.layers.linear import Linear
from course_lib.models.llama import LlamaModel
from course_lib.models.loader import init_random_

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
CUDA = DEVICE == "cuda"
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if CUDA else [])
cuda_only = pytest.mark.skipif(not CUDA, reason="real shapes and bfloat16 need a CUDA GPU")


def randn(*shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(device=DEVICE, dtype=dtype)


def check(x, w, b=None, **kw):
    """gemv(x, w, b) within one rounding to x's dtype (plus float32 summation error) of the exact
    product; a wrong row, a dropped K tile or a missed bias is off by far more."""
    y = gemv(x, w, b, **kw)
    assert y.shape == (*x.shape[:-1], w.shape[0]) and y.dtype == x.dtype
    exact = x.double().reshape(-1) @ w.double().T + (0 if b is None else b.double())
    mag = x.double().abs().reshape(-1) @ w.double().abs().T + (0 if b is None else b.double().abs())
    eps = torch.finfo(x.dtype).eps
    bound = eps * exact.abs() + w.shape[1] * 2.0 ** -23 * mag + 1e-30
    err = (y.double().reshape(-1) - exact).abs()
    assert (err <= bound).all(), f"max error {err.max().item():.3g} beyond one rounding"
    return y


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,K", [(1, 1), (37, 100), (130, 513), (9, 1030), (64, 2048)])
def test_gemv_matches_exact_product(N, K, dtype):
    check(randn(K, dtype=dtype), randn(N, K, dtype=dtype, seed=1))


@pytest.mark.parametrize("config", [dict(BLOCK_N=1, BLOCK_K=16), dict(BLOCK_N=8, BLOCK_K=32, num_warps=1)])
def test_gemv_tiles_that_do_not_divide_the_shape(config):
    """K and N both leave a partial last tile, whatever the tile sizes."""
    check(randn(1, 1, 100), randn(19, 100, seed=1), randn(19, seed=2), config=config)


def test_gemv_bias_strided_rows_and_views():
    w = randn(40, 96, seed=1)[:, :80]                       # rows of 80 with a row stride of 96
    x = randn(3, 160)[1, ::2]                              # one strided row
    check(x, w, randn(40, seed=2))
    assert w.stride() == (96, 1) and x.stride() == (2,)


@pytest.mark.parametrize("call,match", [
    (lambda: gemv(randn(2, 8), randn(4, 8)), "one row"),
    (lambda: gemv(randn(7), randn(4, 8)), "K = 8"),
    (lambda: gemv(randn(8, dtype=torch.float16), randn(4, 8)), "weight must be"),
    (lambda: gemv(randn(8), randn(8, 4).T), "contiguous rows"),
    (lambda: gemv(randn(8), randn(4, 8), randn(3)), "bias must be"),
    (lambda: gemv(randn(8).int(), randn(4, 8)), "x dtype"),
])
def test_gemv_bad_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_config_rule():
    """K tiles of up to 1024, and 16 elements per thread: fewer warps for short rows."""
    assert gemv_config(3072, 2048) == dict(BLOCK_N=2, BLOCK_K=1024, num_warps=4)
    assert gemv_config(10, 100) == dict(BLOCK_N=2, BLOCK_K=128, num_warps=1)


# ---- the layer and the model --------------------------------------------------------------------

@pytest.fixture
def gemv_calls(monkeypatch):
    calls = []

    def spy(x, w, *args, **kw):
        calls.append(tuple(w.shape))
        return real(x, w, *args, **kw)
    real = gemv_mod.gemv
    monkeypatch.setattr(gemv_mod, "gemv", spy)
    return calls


def test_linear_runs_gemv_for_one_row_only(gemv_calls):
    layer = Linear(24, 10, bias=True).to(DEVICE)
    x = randn(3, 24)
    want = F.linear(x, layer.weight, layer.bias)
    # (on a CPU the layer computes the same product in the other operand order: equal up to rounding)
    torch.testing.assert_close(layer(x), want, atol=1e-5, rtol=1e-5)
    assert not gemv_calls                                               # switch off: cuBLAS
    layer.gemv = True
    torch.testing.assert_close(layer(x), want, atol=1e-5, rtol=1e-5)
    assert not gemv_calls                                               # 3 rows: still cuBLAS
    torch.testing.assert_close(layer(x[1:2, None]), want[1:2, None], atol=1e-5, rtol=1e-5)
    assert gemv_calls == [(10, 24)]
    assert layer(x[:0]).shape == (0, 10) and len(gemv_calls) == 1       # no rows: no kernel


def tiny_model() -> LlamaModel:
    cfg = ModelConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4,
                      num_kv_heads=2, head_dim=16, max_position_embeddings=64, qkv_bias=True)
    model = LlamaModel(cfg)
    init_random_(model, seed=0)
    return model.to(DEVICE).eval()


def test_model_one_row_through_gemv_equals_cublas(gemv_calls):
    """Every linear layer of a decode step at batch 1 runs the kernel (qkv with a bias, o, gate_up,
    down, LM head), and the logits match the unfused model; gemv=False keeps cuBLAS."""
    model = tiny_model()
    ids, pos = torch.tensor([[5]], device=DEVICE), torch.tensor([[3]], device=DEVICE)
    with torch.inference_mode():
        ref = model(ids, pos)
        out = model.use_fused_kernels(True)(ids, pos)
        assert len(gemv_calls) == 4 * model.cfg.num_layers + 1
        assert model(torch.tensor([[5, 6]], device=DEVICE)).shape[1] == 2
        assert len(gemv_calls) == 4 * model.cfg.num_layers + 1          # two rows: cuBLAS
        model.use_fused_kernels(True, gemv=False)(ids, pos)
        assert len(gemv_calls) == 4 * model.cfg.num_layers + 1
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    model.use_fused_kernels(False)
    assert not any(m.gemv for m in model.modules() if isinstance(m, Linear))


# ---- real shapes on CUDA ----------------------------------------------------------------------------

@cuda_only
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("N,K", [(3072, 2048), (2048, 2048), (16384, 2048), (2048, 8192), (128256, 2048),
                                 (4096, 1024), (1024, 2048), (151936, 1024)])
def test_gpu_real_shapes(N, K, dtype):
    w = randn(N, K, dtype=dtype, seed=1) / K ** 0.5
    y = check(randn(K, dtype=dtype), w)
    # and within an ulp or two of what cuBLAS returns for the same inputs
    torch.testing.assert_close(y, F.linear(randn(K, dtype=dtype), w), atol=2e-2, rtol=2e-2)


def test_bench_matrices_are_every_weight_of_a_step():
    """bench_gemv times each distinct matrix; over the layers plus the LM head they are all the
    model's linear weights (a wrong shape would miscount the bytes it reports)."""
    from course_lib.perf.shapes import weight_matrices as matrices
    model = tiny_model()
    shapes = matrices(model.cfg)
    layer = model.layers[0]
    assert shapes == {"qkv": tuple(layer.attn.qkv.weight.shape), "o": tuple(layer.attn.o.weight.shape),
                      "gate_up": tuple(layer.mlp.gate_up.weight.shape),
                      "down": tuple(layer.mlp.down.weight.shape), "lm_head": tuple(model.lm_head.weight.shape)}
