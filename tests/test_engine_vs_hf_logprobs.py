"""The engine's greedy tokens and logprobs against HF transformers on the same random weights.

Random weights make near-ties common, so comparing argmax alone would be flaky. Instead HF scores the
engine's own output (teacher forcing): for every generated token, HF's logprob of it must match the
engine's, and it must be HF's top choice up to that tolerance. On CPU this runs a tiny Qwen3-shaped
model in float32 through both attention backends (Triton via the interpreter); on a GPU it runs the
qwen3-0.6b shape in bfloat16, and the qwen3-0.6b and llama-3.2-1b shapes in float16 (the Colab T4
profile), through the Triton kernel.
"""
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from course_lib import LLM, SamplingParams
from course_lib.config import ModelConfig
from course_lib.models.llama import LlamaModel
from course_lib.models.loader import load_weights
from course_lib.models.registry import KNOWN_MODELS

CUDA = torch.cuda.is_available()
TINY_QWEN3 = dict(model_type="qwen3", vocab_size=512, hidden_size=64, intermediate_size=128,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                  max_position_embeddings=512, rms_norm_eps=1e-6, rope_theta=10000.0,
                  tie_word_embeddings=True)
# (HF config, device, dtype, logprob tolerance, attention backends)
# On a CUDA machine the interpreter is off (conftest), so CPU tensors cannot go through Triton there.
CPU_BACKENDS = ("torch",) if CUDA else ("torch", "triton")
CASES = [pytest.param(TINY_QWEN3, "cpu", torch.float32, 1e-4, CPU_BACKENDS, id="cpu-tiny-fp32")]
if CUDA:
    CASES.append(pytest.param(KNOWN_MODELS["qwen3-0.6b"][0], "cuda", torch.bfloat16, 0.05, ("triton",),
                              id="cuda-qwen3-0.6b-bf16"))
    # float16 is the Colab T4 profile (no bfloat16): the same engine paths, graphs and chunking
    for name in ("qwen3-0.6b", "llama-3.2-1b"):
        CASES.append(pytest.param(KNOWN_MODELS[name][0], "cuda", torch.float16, 0.05, ("triton",),
                                  id=f"cuda-{name}-fp16"))


def make_pair(hf_cfg: dict, device, dtype):
    d = dict(hf_cfg)
    config = AutoConfig.for_model(d.pop("model_type"), **d)
    torch.manual_seed(0)
    with torch.device(device):
        hf = AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
        # HF's init (std 0.02) gives almost flat next-token distributions; a larger embedding
        # (tied to the LM head) spreads the logits so greedy choices are not decided by rounding.
        torch.nn.init.normal_(hf.get_input_embeddings().weight, std=1.0)
        ours = LlamaModel(ModelConfig.from_hf(config.to_dict())).to(device=device, dtype=dtype)
    load_weights(ours, hf.state_dict().items())
    return hf, ours.eval()


@pytest.mark.parametrize("hf_cfg,device,dtype,tol,backends", CASES)
def test_greedy_logprobs_match_hf(hf_cfg, device, dtype, tol, backends):
    hf, ours = make_pair(hf_cfg, device, dtype)
    gen = torch.Generator().manual_seed(1)
    rand = lambda n: torch.randint(0, 500, (n,), generator=gen).tolist()
    base = rand(32)
    # 5, 17, 33 and 64 tokens; the last two start with the second's first block, which prefix
    # caching (Day 15) finds: filed when the 17-token prompt is scheduled, in the same step
    prompts = [rand(5), base[:17], base[:16] + rand(17), base[:16] + rand(48)]
    params = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True, logprobs=True)
    # (backend, graphs, token budget, prefix caching): a budget of 16 chunks the prompts, so most
    # steps mix prompt chunks with decodes (on a GPU with graphs: the mixed-step graphs of
    # engine/cuda_graphs.py)
    runs = [(b, graphs, budget, caching) for b in backends
            for graphs in ((True, False) if device == "cuda" else (False,))
            for budget, caching in ((4096, False), (16, False), (4096, True))]
    outputs = {}
    for backend, graphs, budget, caching in runs:
        llm = LLM(ours, scheduler="continuous", block_size=16, num_kv_blocks=64, attention_backend=backend,
                  cuda_graphs=graphs, max_num_batched_tokens=budget, enable_prefix_caching=caching)
        outs = llm.generate(prompts, params, use_tqdm=False)
        assert [o.num_cached_tokens for o in outs] == ([0, 0, 16, 16] if caching else [0] * 4)
        outputs[backend, graphs, budget, caching] = [o.outputs[0].token_ids for o in outs]
        for prompt, out in zip(prompts, outs):
            tokens, ours_lp = out.outputs[0].token_ids, torch.tensor(out.outputs[0].token_logprobs)
            full = torch.tensor([prompt + tokens], device=device)
            with torch.no_grad():
                hf_lp = hf(full).logits[0, len(prompt) - 1:-1].float().log_softmax(-1)   # (32, vocab)
            hf_tok_lp = hf_lp.gather(-1, torch.tensor(tokens, device=device)[:, None])[:, 0].cpu()
            assert (hf_tok_lp - ours_lp).abs().max() < tol, (backend, hf_tok_lp - ours_lp)
            # each engine token is HF's greedy choice, up to the tolerance (ties in bf16)
            assert (hf_lp.max(-1).values.cpu() - hf_tok_lp).max() < tol, backend
        assert llm.engine.kv_manager.num_free_blocks == 64
        if budget == 16:
            assert max(r.num_tokens for r in llm.engine.step_log) <= 16
            assert sum(r.is_prefill and len(r.seq_ids) > 1 for r in llm.engine.step_log) > 0, "no mixed step"
    if device == "cuda":   # replaying captured graphs computes exactly what eager launches compute
        assert outputs["triton", True, 4096, False] == outputs["triton", False, 4096, False]
