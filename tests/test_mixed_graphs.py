"""The mixed-step graphs' padded inputs (engine/cuda_graphs.py MixedGraphs) compute what the eager
step computes: same logits for every sampled row, whatever the padding. On a CPU the padded step runs
without capture through the Triton kernel under the interpreter (the inputs a graph would replay);
on a GPU through captured graphs."""
import pytest
import torch

from course_lib.config import ModelConfig
from course_lib.engine.cuda_graphs import MixedGraphs
from course_lib.engine.inputs import StepInputs
from course_lib.engine.model_runner import ModelRunner
from course_lib.kernels.paged_attention import paged_attention_triton
from course_lib.kv.paged import PagedKVCache
from course_lib.models.llama import LlamaModel
from course_lib.models.loader import init_random_

CUDA = torch.cuda.is_available()
DEV = "cuda" if CUDA else "cpu"


@pytest.fixture(scope="module")
def model():
    cfg = ModelConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=6,
                      num_kv_heads=2, head_dim=16, max_position_embeddings=512)
    m = LlamaModel(cfg).to(DEV)
    init_random_(m, 0)
    return m.eval()


NUM_BLOCKS = 2400


def step_inputs(seqs, bs, gen):
    """(context before, new tokens) per sequence -> StepInputs over shuffled blocks, logits rows."""
    inp = StepInputs([], [], [], [], [], [0])
    free = torch.randperm(NUM_BLOCKS, generator=gen).tolist()
    rows = []
    for before, n in seqs:
        table = [free.pop() for _ in range(-(-(before + n) // bs))]
        pos = range(before, before + n)
        inp.ids += torch.randint(0, 97, (n,), generator=gen).tolist()
        inp.positions += pos
        inp.slots += [table[p // bs] * bs + p % bs for p in pos]
        inp.tables.append(table)
        inp.seq_lens.append(before + n)
        inp.starts.append(inp.starts[-1] + n)
        rows.append(inp.starts[-1] - 1)
    return inp, rows


# bench_mixed's decodes have 515 tokens of context; under the CPU's Triton interpreter that one case
# took 34 s, and 35 tokens (three blocks each) exercise the same 65-sequence bucket.
LONG = 515 if CUDA else 35


@pytest.mark.parametrize("seqs, bs", [
    ([(20, 1), (3, 1), (0, 9)], 4),            # two decodes and a prompt: 11 tokens in the 16-bucket
    ([(0, 16), (0, 16)], 4),                   # a pure prefill filling its token bucket exactly
    ([(40, 1)] * 9 + [(17, 5)], 4),            # 9 decodes and a chunk after a cached prefix
    ([(2, 1)] * 5 + [(0, 30)], 4),             # 35 tokens: 29 spare tokens on the padding sequence
    ([(LONG, 1)] * 64 + [(0, 16)], 16),        # 64 long decodes + a prompt: the shape of bench_mixed
], ids=["decodes+prompt", "exact-bucket", "chunk-after-prefix", "big-padding", "64-decodes+16"])
def test_padded_mixed_step_equals_the_eager_step(model, seqs, bs):
    gen = torch.Generator().manual_seed(len(seqs))
    cache = PagedKVCache(model.cfg, NUM_BLOCKS, bs, DEV)
    cache.kv.normal_(generator=torch.Generator(DEV).manual_seed(0))     # earlier context, random
    before = cache.kv.clone()
    inp, rows = step_inputs(seqs, bs, gen)
    runner = ModelRunner(model, cache, "triton")
    with torch.inference_mode():
        eager = runner._eager_logits(inp, rows)
        after_eager = cache.kv.clone()
        cache.kv.copy_(before)
        graphs = MixedGraphs(model, cache, paged_attention_triton, max_batch=72, max_blocks_per_seq=40,
                             max_tokens=128, capture=CUDA)
        padded = graphs.run(inp, rows)
    torch.testing.assert_close(padded, eager, atol=1e-4, rtol=1e-4)
    real = torch.ones(cache.kv.shape[2], dtype=torch.bool)
    real[cache.scratch_block] = False                                    # padding writes only here
    torch.testing.assert_close(cache.kv[:, :, real], after_eager[:, :, real], atol=1e-5, rtol=1e-5)


def test_one_graph_set_serves_steps_of_every_shape_in_any_order(model):
    """Largest first, then smaller: each new graph's warm-up must run on its own step's inputs (on
    the last step's larger offsets it read out of bounds on a GPU)."""
    bs = 4
    cache = PagedKVCache(model.cfg, NUM_BLOCKS, bs, DEV)
    graphs = MixedGraphs(model, cache, paged_attention_triton, max_batch=16, max_blocks_per_seq=40,
                         max_tokens=128, capture=CUDA)
    runner = ModelRunner(model, cache, "triton")
    gen = torch.Generator().manual_seed(3)
    for seqs in ([(0, 100)], [(30, 1)] * 3 + [(0, 9)], [(0, 40), (5, 1)], [(30, 1)] * 3 + [(0, 9)]):
        inp, rows = step_inputs(seqs, bs, gen)
        cache.kv.normal_(generator=torch.Generator(DEV).manual_seed(1))
        with torch.inference_mode():
            eager = runner._eager_logits(inp, rows)
            padded = graphs.run(inp, rows)
        torch.testing.assert_close(padded, eager, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("max_batch, max_tokens", [(40, 512), (300, 2048), (5, 100)])
def test_keys_are_exactly_the_buckets_steps_can_reach(model, max_batch, max_tokens):
    """capture_all captures keys(): every bucket a step of num_seqs <= max_batch sequences and
    num_tokens in [num_seqs, max_tokens] can land in, and no other (a (257, 16) graph would hold
    1,000 logits rows no step uses). Token buckets above 512 go up by half powers of two."""
    cache = PagedKVCache(model.cfg, 64, 4, DEV)
    graphs = MixedGraphs(model, cache, paged_attention_triton, max_batch=max_batch, max_blocks_per_seq=8,
                         max_tokens=max_tokens, capture=False)
    reached = {graphs.bucket(n, t) for n in range(1, max_batch + 1) for t in range(n, max_tokens + 1)}
    assert None not in reached and reached == set(graphs.keys())
    assert graphs.bucket(3, max_tokens + 1) is None            # past the largest bucket: eager
    assert graphs.token_buckets[-1] == max_tokens
    if max_tokens == 2048:
        assert graphs.token_buckets[5:] == [512, 768, 1024, 1536, 2048]
        assert graphs.bucket(64, 64 + 512) == (65 if 65 in graphs.seq_buckets else 128, 768)


def test_capture_all_captures_every_bucket_on_padding_only(model):
    """The warm-up's capture of every bucket (no capture inside a timed run) runs on an all-padding
    step: every (b > 1, t) bucket once, and no block but the scratch block is written. On a CPU the
    capture is replaced by the eager pass a capture would record."""
    bs = 4
    cache = PagedKVCache(model.cfg, 64, bs, DEV)
    cache.kv.normal_(generator=torch.Generator(DEV).manual_seed(2))
    before = cache.kv.clone()
    graphs = MixedGraphs(model, cache, paged_attention_triton, max_batch=5, max_blocks_per_seq=40,
                         max_tokens=64, capture=True)
    if not CUDA:
        graphs._capture = lambda key: graphs.graphs.setdefault(key, graphs._forward(*key))
    with torch.inference_mode():
        assert graphs.capture_all() == 3 * 3          # seq buckets 2, 4, 6 (1 is padding only) x 16, 32, 64
        assert graphs.capture_all() == 0              # captured once
    assert sorted(graphs.graphs) == [(b, t) for b in (2, 4, 6) for t in (16, 32, 64)]
    real = torch.ones(cache.kv.shape[2], dtype=torch.bool)
    real[cache.scratch_block] = False
    assert torch.equal(cache.kv[:, :, real], before[:, :, real])
    assert not torch.equal(cache.kv[:, :, cache.scratch_block], before[:, :, cache.scratch_block])
