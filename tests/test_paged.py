"""Paged attention and the sampler.

- `paged_decode_torch` (the batched decode path) == `paged_attention_ref` == attention written out by
  hand, on shuffled caches with GQA and irregular lengths;
- the model over paged KV (batched prefill, then decode steps, through the ModelRunner) gives the same
  logits as the model with no cache and with the contiguous cache (paged == contiguous == uncached);
- the sampler: greedy, the filters on hand-made distributions, and seeded sampling against softmax.
"""
import itertools
import math
from collections import OrderedDict

import pytest
import torch

from course_lib.config import EngineConfig, ModelConfig, SamplingParams
from course_lib.engine.llm_engine import LLMEngine
from course_lib.kv.kv_cache_manager import KVCacheManager
from course_lib.kv.contiguous import ContiguousKVCache
from course_lib.kv.paged import (PagedAttentionContext, PagedKVCache, paged_attention_ref,
                                 paged_decode_torch)
from course_lib.layers.batch_sampler import Sampler
from course_lib.layers.sampler import apply_filters, sample
from course_lib.models.llama import LlamaModel
from course_lib.models.loader import init_random_

ATOL = RTOL = 1e-5      # float32 throughout


# ---- paged attention kernels in torch --------------------------------------------------------------

def random_paged_batch(q_lens, seq_lens, heads, kv_heads, head_dim, block_size, seed=0, junk=None):
    """Queries and a paged cache whose sequences own shuffled, non-contiguous blocks.

    Slots no sequence owns (the tail of each last block, spare blocks) hold random values, or ``junk``
    (e.g. NaN) when given; block-table padding points at spare blocks and at other sequences' blocks.
    """
    g = torch.Generator().manual_seed(seed)
    B = len(seq_lens)
    n_blocks = [math.ceil(L / block_size) for L in seq_lens]
    max_blocks = max(n_blocks) + 1                          # at least one padding entry per row
    num_blocks = sum(n_blocks) + 3                          # 3 spare blocks nobody owns
    shape = (num_blocks, block_size, kv_heads, head_dim)
    k_cache, v_cache = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    perm = torch.randperm(num_blocks, generator=g).tolist()
    tables = torch.empty(B, max_blocks, dtype=torch.int32)
    owned = torch.zeros(num_blocks * block_size, dtype=torch.bool)
    for i, n in enumerate(n_blocks):
        blocks = [perm.pop() for _ in range(n)]
        tables[i, :n] = torch.tensor(blocks, dtype=torch.int32)
        tables[i, n:] = torch.randint(0, num_blocks, (max_blocks - n,), generator=g, dtype=torch.int32)
        for p in range(seq_lens[i]):
            owned[blocks[p // block_size] * block_size + p % block_size] = True
    if junk is not None:
        for c in (k_cache, v_cache):
            c.view(-1, kv_heads, head_dim)[~owned] = junk
    qsl = torch.zeros(B + 1, dtype=torch.int32)
    qsl[1:] = torch.tensor(q_lens).cumsum(0)
    q = torch.randn(int(qsl[-1]), heads, head_dim, generator=g)
    return q, k_cache, v_cache, tables, torch.tensor(seq_lens, dtype=torch.int32), qsl


def attention_by_hand(q, k_cache, v_cache, tables, seq_lens, qsl, scale=None):
    """Slot by slot, head by head: gather each sequence's keys with the slot formula, then softmax."""
    bs, kvh, D = k_cache.shape[1], k_cache.shape[2], k_cache.shape[3]
    H = q.shape[1]
    scale = 1 / math.sqrt(D) if scale is None else scale
    flat_k, flat_v = k_cache.reshape(-1, kvh, D), v_cache.reshape(-1, kvh, D)
    out = torch.empty_like(q)
    for i, L in enumerate(seq_lens.tolist()):
        slots = [int(tables[i, p // bs]) * bs + p % bs for p in range(L)]
        k, v = flat_k[slots], flat_v[slots]                      # (L, KVH, D)
        start, end = int(qsl[i]), int(qsl[i + 1])
        for j in range(end - start):
            pos = L - (end - start) + j                          # this query's position
            for h in range(H):
                g = h // (H // kvh)                              # GQA: H/KVH query heads share one KV head
                scores = (k[:pos + 1, g] @ q[start + j, h]) * scale
                out[start + j, h] = scores.softmax(0) @ v[:pos + 1, g]
    return out


SHAPES = [  # (heads, kv_heads, head_dim, block_size)
    (4, 4, 16, 4),      # multi-head
    (4, 2, 16, 1),      # GQA, one token per block
    (6, 1, 8, 16),      # multi-query, contexts shorter than one block
    (8, 2, 32, 5),      # block size that is not a power of two
]
SEQ_LENS = [[1], [7, 1, 33, 16, 17], [64, 3]]


@pytest.mark.parametrize("heads, kv_heads, head_dim, block_size", SHAPES)
@pytest.mark.parametrize("seq_lens", SEQ_LENS, ids=str)
def test_paged_decode_torch_matches_reference(heads, kv_heads, head_dim, block_size, seq_lens):
    args = random_paged_batch([1] * len(seq_lens), seq_lens, heads, kv_heads, head_dim, block_size)
    ref = paged_attention_ref(*args)
    torch.testing.assert_close(paged_decode_torch(*args), ref, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(attention_by_hand(*args), ref, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("heads, kv_heads, head_dim, block_size", SHAPES[:2])
def test_paged_decode_torch_honours_scale(heads, kv_heads, head_dim, block_size):
    args = random_paged_batch([1, 1, 1], [9, 2, 20], heads, kv_heads, head_dim, block_size, seed=3)
    ref = attention_by_hand(*args, scale=0.3)
    torch.testing.assert_close(paged_attention_ref(*args, scale=0.3), ref, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(paged_decode_torch(*args, scale=0.3), ref, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("q_lens, seq_lens", [([5, 1, 3], [5, 9, 12]), ([16, 2], [40, 2])],
                         ids=["prefill+decode+chunk", "cached-prefix"])
def test_paged_reference_matches_hand_attention_for_several_queries(q_lens, seq_lens):
    # prefill (q_len == seq_len), decode (q_len 1), and a chunk after a cached prefix (q_len < seq_len)
    args = random_paged_batch(q_lens, seq_lens, heads=4, kv_heads=2, head_dim=16, block_size=4, seed=1)
    torch.testing.assert_close(paged_attention_ref(*args), attention_by_hand(*args), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("junk", [1e30, -1e30])
def test_paged_decode_torch_never_lets_unowned_slots_leak_in(junk):
    # Freed blocks keep whatever the last owner wrote (finite: see the next test); a sequence's last
    # block holds stale slots past its length, and table padding points at any block. None of it may
    # reach the output.
    args = random_paged_batch([1] * 4, [7, 1, 33, 16], 4, 2, 16, 4, seed=2, junk=junk)
    ref = paged_attention_ref(*args)
    assert torch.isfinite(ref).all()
    torch.testing.assert_close(paged_decode_torch(*args), ref, atol=ATOL, rtol=RTOL)


def test_cache_never_stores_nan_or_inf():
    """A request whose K/V overflow must not leave NaN/inf for the next owner of its blocks."""
    cfg = ModelConfig(vocab_size=11, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2,
                      num_kv_heads=1, head_dim=8)
    cache = PagedKVCache(cfg, num_blocks=4, block_size=2)
    ctx = PagedAttentionContext(cache, torch.tensor([0, 1, 2]), torch.tensor([[0, 1]], dtype=torch.int32),
                                torch.tensor([3], dtype=torch.int32), torch.tensor([0, 3], dtype=torch.int32),
                                max_query_len=3)
    bad = torch.tensor([float("nan"), float("inf"), -float("inf")]).repeat_interleave(8).view(1, 3, 1, 8)
    ctx.attend(0, torch.zeros(1, 3, 2, 8), bad, bad)
    assert torch.isfinite(cache.kv).all()


# ---- the model over paged KV == contiguous KV == no cache -------------------------------------------

@pytest.fixture(scope="module")
def model():
    """A 2-layer GQA Llama with weights large enough that the logits depend strongly on the context."""
    cfg = ModelConfig(vocab_size=97, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                      num_kv_heads=2, head_dim=16, max_position_embeddings=256)
    m = LlamaModel(cfg)
    init_random_(m, seed=0)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if not name.endswith("norm.weight"):
                p.mul_(5.0)           # std 0.1: logits O(1), changing one early token moves them by ~1
    return m.eval()


def uncached_logits(model, ids):
    with torch.inference_mode():
        return model(torch.tensor([ids]))[0]                     # (T, vocab)


def test_logits_depend_on_the_context_far_more_than_the_tolerance(model):
    # Guards the equality tests below against a model whose attention hardly matters.
    ids = list(range(3, 40))
    changed = [ids[0] + 1] + ids[1:]
    diff = (uncached_logits(model, ids)[-1] - uncached_logits(model, changed)[-1]).abs().max()
    assert diff > 1e-2, f"the last logits move by only {diff:.2e} when the first token changes"


def test_contiguous_cache_matches_no_cache(model):
    ids = torch.randint(0, 97, (3, 20), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = model(ids)                                         # (3, 20, vocab)
        cache = ContiguousKVCache(model.cfg, batch_size=3, max_len=20)
        chunks = [model(ids[:, :8], torch.arange(8)[None].expand(3, 8), cache)]
        for t in range(8, 20):                                   # then one token at a time
            chunks.append(model(ids[:, t:t + 1], torch.full((3, 1), t), cache))
    torch.testing.assert_close(torch.cat(chunks, dim=1), ref, atol=ATOL, rtol=RTOL)


def paged_step(model, cache, kv, batch, attention_fn):
    """One forward pass over paged KV built by hand from block tables.

    ``batch``: (sequence name, token ids, start, end) per sequence: compute positions start..end-1,
    attending to 0..end-1. Returns the logits of every computed position, (N, vocab)."""
    ids, positions, slots, seq_lens, starts = [], [], [], [], [0]
    bs = kv.block_size
    batch = [(kv.block_ids(name), seq, start, end) for name, seq, start, end in batch
             if kv.allocate_slots(name, end) is not None]
    for table, seq, start, end in batch:
        ids += seq[start:end]
        positions += range(start, end)
        slots += [table[p // bs] * bs + p % bs for p in range(start, end)]
        seq_lens.append(end)
        starts.append(starts[-1] + end - start)
    width = max(len(t) for t, *_ in batch)
    i32 = dict(dtype=torch.int32)
    ctx = PagedAttentionContext(
        cache=cache, slot_mapping=torch.tensor(slots),
        block_tables=torch.tensor([t + [0] * (width - len(t)) for t, *_ in batch], **i32),
        seq_lens=torch.tensor(seq_lens, **i32), query_start_loc=torch.tensor(starts, **i32),
        max_query_len=max(b - a for a, b in zip(starts, starts[1:])), attention_fn=attention_fn)
    with torch.inference_mode():
        return model(torch.tensor([ids]), torch.tensor([positions]), ctx)[0]


def test_paged_context_prefill_and_decode_match_no_cache(model):
    """Sequences over shuffled blocks: A and B prefilled together, decoded, C prefilled while they
    hold the cache, A extended by 3 tokens at once after its cached prefix, then all decoded."""
    gen = torch.Generator().manual_seed(0)
    block_size, num_blocks = 4, 40
    cache = PagedKVCache(model.cfg, num_blocks, block_size)
    kv = KVCacheManager(num_blocks, block_size)
    kv.pool.free_queue = OrderedDict.fromkeys(torch.randperm(num_blocks, generator=gen).tolist())
    seqs = {name: torch.randint(0, 97, (n,), generator=gen).tolist()
            for name, n in (("A", 20), ("B", 22), ("C", 19))}
    refs = {name: uncached_logits(model, ids) for name, ids in seqs.items()}
    done = {name: 0 for name in seqs}             # positions whose K/V are in the cache

    def step(plan, attention_fn):
        logits = paged_step(model, cache, kv, [(n, seqs[n], done[n], done[n] + q)
                                               for n, q in plan], attention_fn)
        row = 0
        for name, q in plan:
            torch.testing.assert_close(logits[row:row + q], refs[name][done[name]:done[name] + q],
                                       atol=ATOL, rtol=RTOL,
                                       msg=lambda m: f"{name} positions {done[name]}..: {m}")
            row += q
            done[name] += q

    step([("A", 5), ("B", 11)], paged_attention_ref)                  # batched prefill
    for _ in range(3):
        step([("A", 1), ("B", 1)], paged_decode_torch)
    step([("C", 14)], paged_attention_ref)                            # joins while A, B are cached
    step([("A", 3), ("C", 1)], paged_attention_ref)                   # 3 queries after a cached prefix
    for _ in range(4):
        step([("A", 1), ("B", 1), ("C", 1)], paged_decode_torch)
    assert done == {"A": 15, "B": 18, "C": 19}
    tables = [kv.block_ids(n) for n in seqs]
    assert any(t != list(range(t[0], t[0] + len(t))) for t in tables), \
        "the block tables should be non-contiguous"


def test_engine_step_logits_match_no_cache(model, monkeypatch):
    """Through LLMEngine and its ModelRunner, with a pool so small that sequences are preempted and
    recomputed: the logits every step hands to the sampler == the no-cache logits at that position."""
    captured = []

    original = Sampler.__call__

    def spy(self, logits, seq_ids):
        captured.append(logits.detach().clone())
        return original(self, logits, seq_ids)

    monkeypatch.setattr(Sampler, "__call__", spy)
    engine = LLMEngine(model, None, EngineConfig(block_size=4, num_kv_blocks=14, max_num_seqs=4,
                                                 attention_backend="torch"))
    gen = torch.Generator().manual_seed(1)
    engine.kv_manager.pool.free_queue = OrderedDict.fromkeys(torch.randperm(14, generator=gen).tolist())
    seqs = []
    for n in (3, 17, 8, 12):
        prompt = torch.randint(0, 97, (n,), generator=gen).tolist()
        rid = engine.add_request(prompt, SamplingParams(temperature=0, max_tokens=14))
        seqs += engine.requests[rid].seqs
    while engine.has_unfinished_requests():
        engine.step()
    assert sum(r.num_preempted for r in engine.step_log) > 0, "the pool should force preemption"
    assert len(captured) == len(engine.step_log)
    rows = {s.seq_id: [] for s in seqs}
    for record, logits in zip(engine.step_log, captured):
        assert logits.shape == (len(record.seq_ids), 97)
        for row, seq_id in enumerate(record.seq_ids):
            rows[seq_id].append(logits[row])
    for s in seqs:
        # every appearance in a step produced one output token, predicted from all tokens before it
        assert len(rows[s.seq_id]) == len(s.output_token_ids) == 14
        ref = uncached_logits(model, s.token_ids)[len(s.prompt_token_ids) - 1:-1]
        torch.testing.assert_close(torch.stack(rows[s.seq_id]), ref, atol=ATOL, rtol=RTOL)
        assert s.output_token_ids == ref.argmax(-1).tolist()


def test_engine_paged_logprobs_match_no_cache(model):
    """The logprob the engine reports for each token == log_softmax of the no-cache logits."""
    engine = LLMEngine(model, None, EngineConfig(block_size=4, num_kv_blocks=32, attention_backend="torch"))
    params = SamplingParams(temperature=0, max_tokens=10, logprobs=True)
    for p in ([5, 6, 7], list(range(10, 31)), [1]):
        engine.add_request(p, params)
    outs = []
    while engine.has_unfinished_requests():
        outs += [o for o in engine.step() if o.finished]    # step() streams; keep the final outputs
    assert len(outs) == 3
    for o in outs:
        c = o.outputs[0]
        ids = o.prompt_token_ids + c.token_ids
        ref = uncached_logits(model, ids).log_softmax(-1)[len(o.prompt_token_ids) - 1:-1]
        expected = ref.gather(-1, torch.tensor(c.token_ids)[:, None])[:, 0]
        assert c.token_ids == ref.argmax(-1).tolist()
        torch.testing.assert_close(torch.tensor(c.token_logprobs), expected, atol=ATOL, rtol=RTOL)


# ---- sampler --------------------------------------------------------------------------------------

PROBS = torch.tensor([0.15, 0.5, 0.05, 0.3])     # sorted: 0.5 (id 1), 0.3 (id 3), 0.15 (id 0), 0.05 (id 2)


def filtered(**kw) -> torch.Tensor:
    return apply_filters(PROBS.log()[None], [SamplingParams(**kw)])[0]


def test_greedy_is_argmax_and_logprobs_are_unfiltered():
    logits = torch.randn(5, 50, generator=torch.Generator().manual_seed(0))
    params = [SamplingParams(temperature=0, top_k=3, top_p=0.5, logprobs=True)] * 5   # no filters
    tokens, logprobs = sample(logits, params, [None] * 5)
    assert tokens.tolist() == logits.argmax(-1).tolist()
    torch.testing.assert_close(logprobs, logits.log_softmax(-1).max(-1).values)


def test_greedy_rows_stay_argmax_in_a_mixed_batch():
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(1))
    params = [SamplingParams(temperature=0), SamplingParams(temperature=1.0),
              SamplingParams(temperature=0), SamplingParams(temperature=2.0, seed=1)]
    tokens, _ = sample(logits, params, [p.seed for p in params])
    assert tokens[0] == logits[0].argmax() and tokens[2] == logits[2].argmax()


def test_temperature_scales_logits_before_softmax():
    logits = torch.randn(2, 30, generator=torch.Generator().manual_seed(2))
    probs = apply_filters(logits, [SamplingParams(temperature=0.5), SamplingParams(temperature=2.0)])
    torch.testing.assert_close(probs[0], (logits[0] / 0.5).softmax(-1))
    torch.testing.assert_close(probs[1], (logits[1] / 2.0).softmax(-1))


def test_top_k_1_is_one_hot_at_the_argmax():
    logits = torch.randn(3, 40, generator=torch.Generator().manual_seed(3))
    probs = apply_filters(logits, [SamplingParams(top_k=1, temperature=t) for t in (0.3, 1.0, 5.0)])
    expected = torch.nn.functional.one_hot(logits.argmax(-1), 40).float()
    torch.testing.assert_close(probs, expected)


def test_top_k_keeps_the_k_best_renormalised():
    torch.testing.assert_close(filtered(top_k=2), torch.tensor([0, 0.625, 0, 0.375]))


@pytest.mark.parametrize("top_p, expected", [
    (1.0, [0.15, 0.5, 0.05, 0.3]),                 # off
    (0.4, [0, 1.0, 0, 0]),                         # the best token alone covers 0.4
    (0.75, [0, 0.625, 0, 0.375]),                  # 0.5 + 0.3 = 0.8 >= 0.75: drop the tail 0.15, 0.05
    (0.85, [0.15 / 0.95, 0.5 / 0.95, 0, 0.3 / 0.95]),   # needs the third token too
    (0.99, [0.15, 0.5, 0.05, 0.3]),                # 0.95 < 0.99: everything stays
])
def test_top_p_masks_the_tail(top_p, expected):
    torch.testing.assert_close(filtered(top_p=top_p), torch.tensor(expected))


@pytest.mark.parametrize("min_p, support", [(0.0, [0, 1, 2, 3]), (0.2, [0, 1, 3]), (0.35, [1, 3]),
                                            (0.7, [1]), (1.0, [1])])
def test_min_p_drops_tokens_below_a_fraction_of_the_best(min_p, support):
    probs = filtered(min_p=min_p)        # threshold: min_p * 0.5
    assert probs.nonzero()[:, 0].tolist() == support
    kept = PROBS[support]
    torch.testing.assert_close(probs[support] / probs.sum(), kept / kept.sum())


def test_filters_apply_per_row():
    logits = PROBS.log()[None].repeat(3, 1)
    probs = apply_filters(logits, [SamplingParams(top_k=1), SamplingParams(), SamplingParams(top_p=0.75)])
    torch.testing.assert_close(probs[0], torch.tensor([0, 1.0, 0, 0]))
    torch.testing.assert_close(probs[1], PROBS)
    torch.testing.assert_close(probs[2], torch.tensor([0, 0.625, 0, 0.375]))


def chi_square_p_value(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Upper tail of the chi-square statistic (df = categories - 1), via the regularised gamma."""
    n = counts.sum()
    expected = probs * n
    stat = ((counts - expected) ** 2 / expected).sum()
    df = len(probs) - 1
    return float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64), stat.double() / 2))


def seeded_draws(logits, params, draws, seed):
    """`draws` samples of one distribution, as one batch of rows seeded seed, seed + 1, ... (a row's
    noise is a hash of its seed and position: rows sharing both would draw the same token)."""
    seeds = [seed * draws + i for i in range(draws)]
    tokens, _ = sample(logits[None].expand(draws, -1).contiguous(), [params] * draws, seeds)
    return torch.bincount(tokens, minlength=logits.numel()).double()


@pytest.mark.parametrize("params", [SamplingParams(temperature=0.7), SamplingParams(temperature=1.5),
                                    SamplingParams(temperature=1.0, top_k=3)],
                         ids=["T=0.7", "T=1.5", "top_k=3"])
def test_seeded_sampling_follows_the_filtered_softmax(params):
    logits = torch.tensor([1.0, 0.2, -0.5, 2.0, 0.0, -1.5])
    target = (logits / params.temperature).softmax(-1)
    if params.top_k != -1:
        keep = target.topk(params.top_k).indices
        target = torch.zeros_like(target).index_fill(0, keep, 1.0) * target
        target = target / target.sum()
    counts = seeded_draws(logits, params, draws=20_000, seed=0)
    support = target > 0
    assert counts[~support].sum() == 0, "a filtered-out token was sampled"
    p = chi_square_p_value(counts[support], target[support].double())
    assert p > 1e-4, f"counts {counts.tolist()} vs expected {(target * 20_000).tolist()}: p = {p:.1e}"
    # and the statistic really can reject: the same counts against the unscaled softmax
    if params.temperature != 1.0:
        assert chi_square_p_value(counts, logits.softmax(-1).double()) < 1e-6


def test_seeded_rows_do_not_depend_on_the_rest_of_the_batch():
    logits = torch.randn(60, 30, generator=torch.Generator().manual_seed(4))
    p = SamplingParams(temperature=1.0, seed=5)

    def draws(batch_with):
        out = []
        for step in range(60):              # one token per "engine step" (its position), the row at a varying place
            others = batch_with(step)
            rows = torch.stack([logits[step]] + [torch.randn(30) for _ in others])
            perm = list(range(len(others) + 1))
            k = step % len(perm)
            perm[0], perm[k] = perm[k], perm[0]
            params = [p] + others
            seeds = [p.seed] + [None] * len(others)
            positions = [step] + [0] * len(others)
            tokens, _ = sample(rows[perm], [params[i] for i in perm], [seeds[i] for i in perm],
                               [positions[i] for i in perm])
            out.append(int(tokens[perm.index(0)]))
        return out

    alone = draws(lambda step: [])
    crowded = draws(lambda step: [SamplingParams(temperature=0.8), SamplingParams(temperature=0),
                                  SamplingParams(top_k=2)][: step % 4])
    assert alone == crowded
    assert len(set(alone)) > 5                   # it really sampled


@pytest.mark.parametrize("q_lens,seq_lens", [([1, 7, 1, 3, 1], [9, 7, 1, 13, 22]),   # decode rows between prompts
                                             ([7, 3, 2], [7, 13, 22]),                # prompts only
                                             ([1, 1, 2], [5, 22, 2])])                # one short prompt last
def test_paged_attention_torch_mixed_step_equals_reference(q_lens, seq_lens):
    """The torch backend's mixed-step path (decode rows in one call, prompt rows padded in another)
    == the reference, whatever the order of decode and prompt rows."""
    from course_lib.kv.paged import paged_attention_ref, paged_attention_torch
    g = torch.Generator().manual_seed(5)
    bs, kvh, h, d = 4, 2, 6, 16
    k_cache, v_cache = torch.randn(40, bs, kvh, d, generator=g), torch.randn(40, bs, kvh, d, generator=g)
    B = len(q_lens)
    tables = torch.randperm(40, generator=g)[:6 * B].view(B, 6).to(torch.int32)
    qsl = torch.tensor([0] + list(itertools.accumulate(q_lens)), dtype=torch.int32)
    q = torch.randn(sum(q_lens), h, d, generator=g)
    args = (q, k_cache, v_cache, tables, torch.tensor(seq_lens, dtype=torch.int32), qsl)
    torch.testing.assert_close(paged_attention_torch(*args, max_query_len=max(q_lens)),
                               paged_attention_ref(*args))
