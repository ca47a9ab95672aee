"""The roofline arithmetic against numbers worked out by hand for a tiny config, and the small helpers."""
import math
import time

import pytest
import torch

from course_lib.config import ModelConfig
from course_lib.perf import (DEVICE_SPECS, arithmetic_intensity, attainable_flops, decoder_bytes,
                             decoder_flops, detect_device, matmul_params, median_time,
                             pick_device_dtype, ridge_point, roofline_time)
from course_lib.perf.roofline import measure_rates

# vocab V=10, hidden d=4, MLP f=8, L=1 layer, H=2 heads, KVH=1, D=2  ->  q = H*D = 4, kv = KVH*D = 2
TINY = ModelConfig(vocab_size=10, hidden_size=4, intermediate_size=8, num_layers=1, num_heads=2,
                   num_kv_heads=1, head_dim=2)


def test_matmul_params_by_hand():
    # qkv 4*(4+2*2)=32, o 4*4=16, gate/up/down 3*4*8=96, LM head 10*4=40
    assert matmul_params(TINY) == 32 + 16 + 96 + 40 == 184


def test_flops_by_hand():
    # prefill T=3: matmuls 2*184*3 = 1104; attention 4*L*H*D * (1+2+3 keys) = 4*1*2*2*6 = 96
    assert decoder_flops(TINY, 3) == 1104 + 96
    # decode T=1 after 5 cached tokens, batch 2: matmuls 2*184*2 = 736; attention 4*4*2*(5+1) = 192
    assert decoder_flops(TINY, 1, context=5, batch=2) == 736 + 192


def test_bytes_by_hand():
    # w=2: weights 184*2 = 368; KV/token 2*1*1*2*2 = 8 bytes, times (0 + 2*3) = 48;
    # activations 3 tokens * 2 bytes * (1*(4*4 + 2*4 + 2*2 + 3*8) + 10) = 6 * 62 = 372
    assert decoder_bytes(TINY, 3, dtype_bytes=2) == 368 + 48 + 372
    # fp32 decode, context 5: weights 736; KV 16 bytes * (5 + 2) = 112; activations 1*4*62 = 248
    assert decoder_bytes(TINY, 1, context=5, dtype_bytes=4) == 736 + 112 + 248


def test_intensity_is_flops_over_bytes():
    assert arithmetic_intensity(TINY, 3, dtype_bytes=2) == pytest.approx(1200 / 788)


def test_decode_intensity_is_about_two_over_w_for_a_real_shape():
    # For a real model the weights dominate decode traffic: I ~ 2 FLOP / w bytes.
    cfg = ModelConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_layers=32,
                      num_heads=32, num_kv_heads=32, head_dim=128)
    assert arithmetic_intensity(cfg, 1, context=16, dtype_bytes=2) == pytest.approx(1.0, rel=0.01)
    assert arithmetic_intensity(cfg, 512, dtype_bytes=2) > 100 * arithmetic_intensity(cfg, 1, dtype_bytes=2)


def test_roofline_time_is_the_max_of_both_terms():
    assert roofline_time(1e12, 1e9, peak_flops=1e14, bandwidth=1e12) == pytest.approx(1e-2)   # compute
    assert roofline_time(1e9, 1e10, peak_flops=1e14, bandwidth=1e12) == pytest.approx(1e-2)   # memory
    assert roofline_time(2e9, 2e7, peak_flops=1e12, bandwidth=1e10) == pytest.approx(2e-3)    # both


def test_ridge_and_attainable():
    h100 = DEVICE_SPECS["H100 SXM"]
    ridge = ridge_point(h100.peak(torch.bfloat16), h100.bandwidth)
    assert 250 < ridge < 350
    assert attainable_flops(ridge / 10, h100.peak("bf16"), h100.bandwidth) == pytest.approx(
        h100.peak("bf16") / 10)
    assert attainable_flops(ridge * 10, h100.peak("bf16"), h100.bandwidth) == h100.peak("bf16")


def test_spec_table_rejects_a_missing_dtype():
    with pytest.raises(ValueError, match="dtype"):
        DEVICE_SPECS["T4"].peak(torch.bfloat16)


def test_pick_device_dtype_on_cpu():
    assert pick_device_dtype("cpu") == (torch.device("cpu"), torch.float32)
    if not torch.cuda.is_available():
        assert pick_device_dtype() == (torch.device("cpu"), torch.float32)
        with pytest.raises(ValueError, match="device"):
            pick_device_dtype("cuda")


def test_detect_cpu_default_without_measuring():
    spec = detect_device("cpu")
    assert spec.bandwidth > 0 and spec.peak(torch.float32) > 0


def test_measure_rates_on_cpu_is_quick_and_positive():
    t0 = time.perf_counter()
    rates = measure_rates(torch.device("cpu"), torch.float32)
    assert rates["copy_gb_per_s"] > 0 and rates["matmul_tflops"] > 0 and rates["matmul_dtype"] == "float32"
    assert time.perf_counter() - t0 < 5 and rates["measure_s"] < 5


def test_median_time_ignores_one_slow_call():
    calls = iter([0.0, 0.0, 0.05, 0.0, 0.0])
    import time
    t = median_time(lambda: time.sleep(next(calls)), repeats=5, warmup=0)
    assert t < 0.02 and not math.isnan(t)


# ---- model-shape arithmetic (perf/shapes.py): the one place every benchmark counts from ---------------
@pytest.mark.parametrize("tied", [True, False])
def test_weight_bytes_are_the_matrices_a_step_multiplies_by(tied):
    """P_mm*w equals the bytes of the model's matmul weights (per layer qkv, o, gate_up, down, and the
    LM head, which is the embedding when tied): norms and the embedding lookup are not read whole."""
    from course_lib.models.llama import LlamaModel
    from course_lib.perf import shapes
    cfg = ModelConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_layers=2, num_heads=4,
                      num_kv_heads=2, head_dim=4, tie_word_embeddings=tied)
    model = LlamaModel(cfg)
    layer = model.layers[0]
    per_layer = [layer.attn.qkv.weight, layer.attn.o.weight, layer.mlp.gate_up.weight, layer.mlp.down.weight]
    assert {k: v for k, v in shapes.weight_matrices(cfg).items() if k != "lm_head"} == dict(
        zip(["qkv", "o", "gate_up", "down"], [tuple(w.shape) for w in per_layer]))
    elements = cfg.num_layers * sum(w.numel() for w in per_layer) + model.lm_head.weight.numel()
    assert shapes.matmul_params(cfg) == elements and shapes.weight_bytes(cfg, 4) == 4 * elements
    assert matmul_params is shapes.matmul_params, "roofline re-exports the one definition"
    info = shapes.model_info(cfg, "tiny", torch.bfloat16, True)
    assert info["weight_bytes"] == 2 * elements and info["params"] == cfg.num_params and info["dtype"] == "bfloat16"


def test_fused_kernel_bytes_by_hand():
    from course_lib.perf.shapes import fused_kernel_bytes
    # TINY: d=4, f=8, H=2, KVH=1, D=2; n=3 tokens, 2 bytes: add_rmsnorm 2*(4*3*4 + 4), silu_mul 2*3*3*8,
    # rope 2*(2*3*2*2 + 4*3*1*2 + 2*3*2) + 8*3
    assert fused_kernel_bytes(TINY, 3, 2) == {"add_rmsnorm": 104, "silu_mul": 144, "rope_write_kv": 2 * 60 + 24}


def test_copy_bandwidth_reports_consistent_units():
    from course_lib.perf.roofline import copy_bandwidth
    c = copy_bandwidth("cpu", 1 << 24)
    assert c["bytes"] == 1 << 24 and c["gb_per_s"] > 0
    assert c["ms"] == pytest.approx(2 * c["bytes"] / (c["gb_per_s"] * 1e9) * 1e3)
