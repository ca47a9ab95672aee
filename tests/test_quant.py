"""Weight-only quantization (Day 18): quantize/dequantize bounds, int4 packing, the Triton kernels
against the torch reference (under TRITON_INTERPRET=1 on a CPU, conftest.py), and the engine with
quantized weights against the same engine on the dequantized weights."""
import math

import pytest
import torch
from torch.nn import functional as F

from course_lib import LLM, ModelConfig, SamplingParams
from course_lib.kernels.quant_matmul import wq_linear, wq_linear_ref
from course_lib.layers.linear import Linear
from course_lib.layers.quant import QuantLinear, dequantize, linear_weight_bytes, quantize, quantize_model
from course_lib.models.llama import LlamaModel
from course_lib.models.loader import init_random_

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if DEVICE == "cuda" else [])


def randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(DEVICE, dtype)


@pytest.mark.parametrize("bits,group_size", [(8, None), (8, 32), (4, None), (4, 16), (4, 128)])
@pytest.mark.parametrize("K", [64, 70, 9])                   # 70, 9: a short last group, odd K for int4
def test_error_is_at_most_half_a_step(bits, group_size, K):
    w = randn(24, K) * torch.linspace(0.1, 3, K, device=DEVICE)       # columns of different ranges
    qw = quantize(w, bits, group_size)
    g = K if group_size is None else group_size
    assert qw.scales.shape == (24, -(-K // g)) and qw.group_size == g
    assert qw.qweight.shape == ((24, K) if bits == 8 else (24, -(-K // 2)))
    step = qw.scales.repeat_interleave(g, dim=1)[:, :K]
    err = (dequantize(qw) - w).abs()
    assert (err <= step / 2 * (1 + 1e-5)).all()
    assert err.max() > 0                                              # it did round something


def test_int4_values_and_packing():
    w = torch.tensor([[-8.0, -7, -1, 0, 1, 6, 7, 3.5, -3.5]], device=DEVICE)   # scale = 8 / 7... no: max |w| / 7
    qw = quantize(w, 4, None)
    assert qw.scales.item() == pytest.approx(8 / 7)
    q = torch.round(w / (8 / 7)).clamp(-8, 7)
    lo, hi = (qw.qweight & 15).int() - 8, (qw.qweight >> 4).int() - 8
    unpacked = torch.stack([lo, hi], -1).reshape(1, -1)[:, :9]
    assert unpacked.tolist() == q.int().tolist()                      # even k low nibble, odd k high
    assert torch.equal(dequantize(qw), q * (8 / 7))


def test_per_group_scales_follow_the_local_range():
    w = torch.cat([randn(4, 32) * 0.01, randn(4, 32, seed=1) * 10], dim=1)
    per_row, grouped = dequantize(quantize(w, 4, None)), dequantize(quantize(w, 4, 32))
    small = slice(0, 32)
    assert (grouped[:, small] - w[:, small]).abs().max() < 0.1 * (per_row[:, small] - w[:, small]).abs().max()


def test_bad_arguments_name_the_field():
    with pytest.raises(ValueError, match="bits must be one of"):
        quantize(randn(4, 8), bits=3)
    with pytest.raises(ValueError, match="group_size must be None"):
        quantize(randn(4, 8), bits=8, group_size=0)
    with pytest.raises(ValueError, match="w must be a 2-D float"):
        quantize(randn(8), bits=8)
    with pytest.raises(ValueError, match=r"quantization must be None or one of \['int4', 'int8'\], got 'fp8'"):
        LLM(tiny(), quantization="fp8")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bits,group_size", [(8, None), (4, 32), (4, 20)])
@pytest.mark.parametrize("M", [1, 3, 20])                            # the GEMV kernel, then the tiled one
def test_kernel_matches_the_reference(M, bits, group_size, dtype):
    N, K = 72, 100
    qw = quantize(randn(N, K), bits, group_size)
    x, bias = randn(M, K, seed=2, dtype=dtype), randn(N, seed=3, dtype=dtype)
    got = wq_linear(x, qw.qweight, qw.scales, bits, qw.group_size, K, bias)
    want = wq_linear_ref(x, qw.qweight, qw.scales, bits, qw.group_size, K, bias)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    assert got.dtype == dtype and got.shape == (M, N)
    torch.testing.assert_close(got.float(), want.float(), rtol=tol, atol=tol)


def test_quant_linear_is_the_float_layer_on_its_dequantized_weight():
    lin = Linear(40, 24, bias=True).to(DEVICE)
    q = QuantLinear.from_linear(lin, 4, 16)
    x = randn(5, 40)
    torch.testing.assert_close(q(x), F.linear(x, q.dequantized(torch.float32), lin.bias), rtol=1e-5, atol=1e-5)
    assert q.weight_bytes == 24 * 20 + 24 * 3 * 4                     # packed int4 + float32 scales


def tiny(layers=2):
    m = LlamaModel(ModelConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_layers=layers,
                               num_heads=4, num_kv_heads=2, head_dim=16, max_position_embeddings=512))
    return init_random_(m, seed=0) or m


def test_quantize_model_copies_and_shares():
    m = tiny()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    q = quantize_model(m, "int8")
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in before.items()), "the original is unchanged"
    assert isinstance(q.layers[0].attn.qkv, QuantLinear) and isinstance(q.layers[1].mlp.down, QuantLinear)
    assert isinstance(q.lm_head, Linear) and q.embed.weight is m.embed.weight, "embedding and LM head stay"
    shapes = [mod.weight.shape for name, mod in m.named_modules() if name.startswith("layers.") and isinstance(mod, Linear)]
    assert len(shapes) == 8 and linear_weight_bytes(m) == sum(4 * n * k for n, k in shapes)
    assert linear_weight_bytes(q) == sum(n * k + 4 * n for n, k in shapes), "one byte a weight, a float scale a row"


@pytest.mark.parametrize("method", ["int8", "int4"])
def test_engine_with_quantized_weights_equals_the_engine_on_their_dequantized_copy(method):
    m = tiny()
    q = quantize_model(m, method)
    ref = quantize_model(m, method)                  # the same weights, as float Linear layers
    for name, mod in list(ref.named_modules()):
        if isinstance(mod, QuantLinear):
            parent, _, attr = name.rpartition(".")
            lin = Linear(mod.in_features, mod.out_features, bias=mod.bias is not None)
            lin.weight.data = mod.dequantized(torch.float32)
            setattr(ref.get_submodule(parent), attr, lin)
    prompts = [[1, 2, 3, 4, 5], list(range(10, 40)), [7] * 17]
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True, logprobs=0)
    got = LLM(q).generate(prompts, params, use_tqdm=False)
    want = LLM(ref).generate(prompts, params, use_tqdm=False)
    via_llm = LLM(m, quantization=method).generate(prompts, params, use_tqdm=False)
    for g, w, v in zip(got, want, via_llm):
        assert g.outputs[0].token_ids == w.outputs[0].token_ids == v.outputs[0].token_ids
        lp_g = [next(iter(d.values())).logprob for d in g.outputs[0].logprobs]
        lp_w = [next(iter(d.values())).logprob for d in w.outputs[0].logprobs]
        assert max(abs(a - b) for a, b in zip(lp_g, lp_w)) < 1e-4


def test_perplexity_is_exp_of_the_mean_nll_per_window():
    from course_lib.perf.quality import load_text, perplexity
    m = tiny()
    ids = torch.randint(0, 256, (41,), generator=torch.Generator().manual_seed(0)).tolist()
    nll = []
    for start in (0, 16, 32):                                      # windows of 16 predictions: 16, 16, 8
        x = torch.tensor(ids[start:start + 17])[None]
        lp = m(x[:, :-1]).float().log_softmax(-1)[0]
        nll += (-lp.gather(1, x[0, 1:, None])[:, 0]).tolist()
    assert perplexity(m, ids, window=16) == pytest.approx(math.exp(sum(nll) / len(nll)), rel=1e-5)
    assert len(nll) == 40
    assert "Prospero" in load_text() or "PROSPERO" in load_text()
    with pytest.raises(ValueError, match="name must be one of"):
        load_text("nope.txt")
    with pytest.raises(ValueError, match="window must be an integer"):
        perplexity(m, ids, window=0)


def test_quantize_model_by_bits_and_group_size():
    q = quantize_model(tiny(), bits=4, group_size=32)
    layer = q.layers[0].mlp.down
    assert (layer.bits, layer.group_size, q.quantization) == (4, 32, "int4-g32")
    with pytest.raises(ValueError, match="not both"):
        quantize_model(tiny(), "int8", bits=8)
    with pytest.raises(ValueError, match="bits must be one of"):
        quantize_model(tiny(), bits=2)
