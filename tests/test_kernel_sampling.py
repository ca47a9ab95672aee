"""The batched Sampler's Triton kernels (course_lib/kernels/sampling.py and penalties.py) against
their torch references.

On a CPU they run under TRITON_INTERPRET=1 (conftest.py), so the vocabularies are small (3,000, and
two chunks of 4,096 + 5 for the draw's second pass). The noise's hash must equal sampler.race_bits
bit for bit; the draws equal the references token for token (their E agree to the last bit of a
log, so only a near-tie could split them, and these seeds have none); the penalties equal
sampler.penalize_rows and apply_penalties to 1e-5; the top-k candidates allow exactly the tokens the
full sort of filter_probs allows, and draw what the full-vocabulary reference draws."""
import pytest
import torch

from course_lib.config import SamplingParams
from course_lib.kernels import sampling as k
from course_lib.kernels.argmax import BLOCK
from course_lib.kernels.penalties import penalize, penalize_ref
from course_lib.layers.batch_sampler import Sampler
from course_lib.layers.sampler import (apply_penalties, filter_probs, mask_stop_tokens, race_bits,
                                       race_noise, sample, seed_halves)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if DEVICE == "cuda" else [])
pytestmark = pytest.mark.filterwarnings("ignore:divide by zero encountered in log")   # log(min_p = 0)

SEEDS = [1, 2**64 - 1, 0, 12345678901234, 7, 2**63]


def randn(*shape, dtype=torch.float32, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=g)).to(device=DEVICE, dtype=dtype)


def tables(n: int, seed: int = 0):
    """Per-entry tables of n sequences: seeds (n, 2), positions (n,) int32, temperatures with a
    greedy entry, min-p with a 0 entry."""
    g = torch.Generator().manual_seed(seed)
    seeds = seed_halves([SEEDS[i % len(SEEDS)] + i // len(SEEDS) for i in range(n)], DEVICE)
    positions = torch.randint(0, 2**31 - 1, (n,), generator=g, dtype=torch.int32).to(DEVICE)
    temperature = (0.3 + 1.5 * torch.rand(n, generator=g)).to(DEVICE)
    temperature[1 % n] = 0.0
    min_p = (0.3 * torch.rand(n, generator=g)).to(DEVICE)
    min_p[0] = 0.0
    return seeds, positions, temperature, min_p


# ---- the noise ------------------------------------------------------------------------------------------

def test_noise_hash_equals_torch_bit_for_bit():
    seeds, positions, _, _ = tables(6)
    positions[0] = 0
    bits, e = k.race_noise_triton(seeds, positions, 3000)
    ids = torch.arange(3000, device=DEVICE)
    assert torch.equal(bits, race_bits(seeds, positions, ids))
    torch.testing.assert_close(e, race_noise(seeds, positions, ids), rtol=3e-7, atol=0)   # one ulp of a log
    # pinned: a change of the hash changes every seeded request's output
    assert race_bits(seed_halves([42]), torch.tensor([3]), torch.tensor([0, 1, 128255])).tolist() == \
        [[3586082986, 3510226469, 1457590090]]


def test_noise_is_exponential_and_independent():
    seeds, positions, _, _ = tables(4)
    e = race_noise(seeds, positions, torch.arange(20_000, device=DEVICE)).double()
    assert abs(e.mean() - 1) < 0.02 and abs(e.var() - 1) < 0.05           # Exp(1): mean 1, variance 1
    assert e.min() > 0 and e.isfinite().all()
    c = torch.corrcoef(torch.stack([e[0], e[1], e[0].roll(1)]))           # rows, neighbours
    assert c[0, 1].abs() < 0.05 and c[0, 2].abs() < 0.05


# ---- the draw over the whole vocabulary ---------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,V", [(1, 3000), (4, 3000), (3, 2 * BLOCK + 5)])
@pytest.mark.parametrize("use_min_p", [False, True], ids=["temperature", "min-p"])
def test_draw_equals_the_reference(B, V, dtype, use_min_p):
    x = randn(B, V, dtype=dtype)
    seeds, positions, temperature, min_p = tables(B)
    min_p = min_p if use_min_p else None
    got = k.draw(x, seeds, positions, None, temperature, min_p)
    assert got.dtype == torch.long and torch.equal(got, k.draw_ref(x, seeds, positions, None, temperature, min_p))
    if B > 1:
        assert got[1] == x[1].argmax(), "a greedy row is the argmax"


def test_draw_indexes_the_tables_through_rows_and_strided_columns():
    """The Sampler passes its whole tables (columns of a (N, 6) float table) and the step's rows."""
    x = randn(5, 3000)
    seeds, positions, temperature, min_p = tables(9, seed=1)
    table = torch.stack([temperature, min_p, torch.zeros_like(min_p)], dim=1)   # (9, 3)
    rows = torch.tensor([7, 1, 4, 0, 8], device=DEVICE)
    got = k.draw(x, seeds, positions, rows, table[:, 0], table[:, 1])
    assert torch.equal(got, k.draw_ref(x, seeds, positions, rows, temperature, min_p))
    alone = [k.draw(x[i:i + 1], seeds, positions, rows[i:i + 1], table[:, 0], table[:, 1]) for i in range(5)]
    assert torch.equal(got, torch.cat(alone)), "a row's draw depends on its own row only"


@pytest.mark.parametrize("with_counts", [False, True], ids=["positions", "positions+counts"])
def test_draw_and_argmax_record_what_the_sampler_records(with_counts):
    """``record=`` (draw, argmax_record, draw_candidates): the tokens are the same as without it,
    and the tables change exactly as the Sampler's _record changes them (one more position per row,
    one more count of its token), at the rows' entries only; the positions the draw read are the
    ones before the step."""
    x = randn(4, 2 * BLOCK + 5)
    seeds, positions, temperature, min_p = tables(9, seed=3)
    positions = positions % 1000
    rows = torch.tensor([6, 2, 0, 8], device=DEVICE)
    counts = torch.randint(0, 3, (9, x.shape[1]), dtype=torch.int32, device=DEVICE) if with_counts else None
    values, ids = x.topk(20, dim=-1)
    top_k = torch.full((9,), 20, device=DEVICE)
    for fn in (lambda rec: k.draw(x, seeds, positions, rows, temperature, min_p, record=rec),
               lambda rec: k.argmax_record(x, rows, *rec) if rec else k.draw(x, seeds, positions, rows,
                                                                           torch.zeros(9, device=DEVICE)),
               lambda rec: k.draw_candidates(values, ids, seeds, rec[0] if rec else positions, rows,
                                             temperature, top_k, None, min_p, rec and rec[1], record=bool(rec))):
        want = fn(None)
        pos, cnt = positions.clone(), None if counts is None else counts.clone()
        got = fn((pos, cnt))
        assert torch.equal(got, want)
        more = torch.zeros_like(positions)
        more[rows] = 1
        assert torch.equal(pos, positions + more)
        if with_counts:
            added = torch.zeros_like(counts)
            added[rows, want] = 1
            assert torch.equal(cnt, counts + added)


def test_reused_work_buffers_are_left_ready_for_the_next_call():
    """The Sampler hands one set of `work_buffers` to every step: each row's finished-chunk counter
    must be back at 0 after a call (else the next call's last program is never found and its
    tokens are never written), for any batch up to the buffers' rows, draw and greedy alike."""
    V = 3 * BLOCK + 7
    seeds, positions, temperature, _ = tables(9, seed=5)
    work = k.work_buffers(9, V, DEVICE)
    for step, B in enumerate([4, 9, 1, 9]):
        x = randn(B, V, seed=step)
        rows = torch.randperm(9, generator=torch.Generator().manual_seed(step))[:B].to(DEVICE)
        got = k.draw(x, seeds, positions, rows, temperature, work=work)
        assert torch.equal(got, k.draw_ref(x, seeds, positions, rows, temperature)), step
        assert torch.equal(k.argmax_record(x, rows, positions.clone(), work=work), x.argmax(-1)), step
        assert not work[2].any(), "every row's counter back at 0"
    with pytest.raises(ValueError, match="work buffers hold 9 rows"):
        k.draw(randn(10, V), seeds, positions, torch.arange(9, device=DEVICE).repeat(2)[:10], work=work)


def test_draw_follows_the_reference_sampler_over_many_positions():
    """The kernel (logit - log E) and the reference sampler (p / E) are the same race: over 40
    positions of one row, the same tokens, and more than one of them."""
    x = randn(1, 3000, seed=2, scale=1.0)
    p = SamplingParams(temperature=0.7, min_p=0.05, seed=99)
    seeds = seed_halves([p.seed] * 40, DEVICE)
    positions = torch.arange(40, device=DEVICE)
    xs = x.expand(40, -1).contiguous()
    got = k.draw(xs, seeds, positions, None, torch.full((40,), 0.7, device=DEVICE), torch.full((40,), 0.05, device=DEVICE))
    ref = sample(xs, [p] * 40, [p.seed] * 40, list(range(40)))[0]
    assert torch.equal(got, ref) and len(set(got.tolist())) > 5


def test_draw_from_filtered_probabilities():
    """The sort path: probabilities from filter_probs, drawn with log_input (0 never wins)."""
    x = randn(3, 3000, seed=3)
    seeds, positions, _, _ = tables(3)
    probs = filter_probs(x / 0.8, torch.tensor([50, 3000, 7], device=DEVICE), torch.tensor([0.9, 0.5, 1.0], device=DEVICE),
                         torch.zeros(3, device=DEVICE))
    got = k.draw(probs, seeds, positions, log_input=True)
    assert torch.equal(got, k.draw_ref(probs, seeds, positions, log_input=True))
    assert torch.equal(got, (probs / race_noise(seeds, positions, torch.arange(3000, device=DEVICE))).argmax(-1))
    assert (probs.gather(1, got[:, None]) > 0).all()


@pytest.mark.parametrize("bad,match", [(lambda: randn(3000), "must be"), (lambda: randn(2, 3000).long(), "dtype")])
def test_draw_rejects_bad_inputs(bad, match):
    seeds, positions, temperature, _ = tables(2)
    with pytest.raises(ValueError, match=match):
        k.draw(bad(), seeds, positions, None, temperature)


# ---- top-k candidates ----------------------------------------------------------------------------------

CANDIDATE_ROWS = [dict(top_k=5), dict(top_k=40, top_p=0.8), dict(top_k=64, top_p=0.95, min_p=0.02),
                  dict(top_k=1), dict(top_k=30, min_p=0.2), dict(top_k=64, top_p=0.3)]


def candidate_inputs(seed=0, dtype=torch.float32):
    B = len(CANDIDATE_ROWS)
    x = randn(B, 3000, seed=seed, scale=1.0, dtype=dtype)
    params = [SamplingParams(temperature=0.5 + 0.2 * i, **kw) for i, kw in enumerate(CANDIDATE_ROWS)]
    col = lambda name: torch.tensor([float(getattr(p, name)) for p in params], device=DEVICE)   # noqa: E731
    return x, params, col("temperature"), torch.tensor([p.top_k for p in params], device=DEVICE), \
        col("top_p"), col("min_p")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_candidates_allow_exactly_what_the_sort_path_allows(dtype):
    x, params, temperature, top_k, top_p, min_p = candidate_inputs(dtype=dtype)
    values, ids = x.topk(64, dim=-1)
    kept = k.candidate_logits_ref(values, temperature, top_k, top_p, min_p).isfinite()
    allowed = torch.zeros(x.shape, dtype=torch.bool, device=DEVICE).scatter(1, ids, kept)
    want = filter_probs(x.float() / temperature[:, None], top_k, top_p, min_p) > 0
    assert torch.equal(allowed, want), (allowed.sum(-1), want.sum(-1))
    assert want.sum(-1).tolist()[3] == 1 and (want.sum(-1) > 1).sum() >= 4   # the filters really cut


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_candidate_draws_equal_the_full_vocabulary_reference(dtype):
    """The kernel == its torch reference == the reference sampler over the whole vocabulary with the
    same (seed, position), token for token, at 8 positions of every row."""
    x, params, temperature, top_k, top_p, min_p = candidate_inputs(seed=1, dtype=dtype)
    B = len(params)
    values, ids = x.topk(64, dim=-1)
    rows = torch.arange(B, device=DEVICE)
    drawn = set()
    for step in range(8):
        seeds = seed_halves([100 + i for i in range(B)], DEVICE)
        positions = torch.full((B,), step, device=DEVICE)
        got = k.draw_candidates(values, ids, seeds, positions, rows, temperature, top_k, top_p, min_p)
        assert torch.equal(got, k.draw_candidates_ref(values, ids, seeds, positions, rows, temperature, top_k,
                                                      top_p, min_p))
        ref = sample(x, params, [100 + i for i in range(B)], [step] * B)[0]
        assert got.tolist() == ref.tolist(), step
        drawn |= {(i, t) for i, t in enumerate(got.tolist())}
    assert len(drawn) > 2 * B                         # it really sampled


def test_candidates_top_p_boundary_drops_the_token_at_exactly_top_p():
    """Four candidates of 0.25 (exact in binary): at top_p=0.5 the third has exactly 0.5 above it and
    goes (>=, as filter_probs, HF and vLLM), so 40 draws see the first two only, both of them."""
    n = 40
    values, ids = torch.zeros(n, 4, device=DEVICE), torch.tensor([[10, 20, 30, 40]] * n, device=DEVICE)
    seeds = seed_halves([5] * n, DEVICE)
    one = lambda v: torch.full((n,), v, device=DEVICE)   # noqa: E731
    for top_p, allowed in [(0.5, {10, 20}), (0.51, {10, 20, 30}), (1.0, {10, 20, 30, 40})]:
        got = k.draw_candidates(values, ids, seeds, torch.arange(n, device=DEVICE), torch.arange(n, device=DEVICE),
                                one(1.0), torch.full((n,), 4, device=DEVICE), one(top_p))
        assert set(got.tolist()) == allowed, top_p


def test_candidates_reject_too_many():
    v = randn(2, k.MAX_CANDIDATES + 1)
    seeds, positions, temperature, _ = tables(2)
    with pytest.raises(ValueError, match="K <="):
        k.draw_candidates(v, v.long(), seeds, positions, torch.arange(2), temperature, torch.tensor([5, 5]))


# ---- penalties and min_tokens ------------------------------------------------------------------------

PENALISED = [SamplingParams(repetition_penalty=1.4), SamplingParams(frequency_penalty=0.8, presence_penalty=-0.5),
             SamplingParams(), SamplingParams(min_tokens=2, stop_token_ids=[5, 6], repetition_penalty=0.7),
             SamplingParams(min_tokens=1, ignore_eos=True, frequency_penalty=-1.2, stop_token_ids=[7])]
EOS = [3]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_penalties_kernel_equals_the_sampler_and_the_reference(dtype):
    """Two samplers with the same history, one through the kernel, one through torch, over steps;
    both equal apply_penalties + mask_stop_tokens from Python lists."""
    V = 3000
    prompts = [[1, 2, 2, 2999], [10, 11], [5], [20, 21, 22], [30]]
    fast = Sampler(V, DEVICE, EOS, capacity=2, kernels=True)
    slow = Sampler(V, DEVICE, EOS, capacity=2, kernels=False)
    for s in (fast, slow):
        for i, (p, prompt) in enumerate(zip(PENALISED, prompts)):
            s.add(i, p, prompt)
    order = [4, 0, 3, 1, 2]                     # rows are looked up, not assumed in order
    outputs = {i: [] for i in order}
    for t in range(3):
        logits = randn(5, V, dtype=dtype, seed=10 + t)
        got = fast.processed_logits(logits, order)
        torch.testing.assert_close(got, slow.processed_logits(logits, order), rtol=1e-5, atol=1e-5)
        params = [PENALISED[i] for i in order]
        want = mask_stop_tokens(apply_penalties(logits, [prompts[i] for i in order], [outputs[i] for i in order],
                                                params), [len(outputs[i]) for i in order], params, EOS)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        if t == 0:                              # min_tokens masks stop ids; ignore_eos keeps EOS
            assert got[order.index(3), 5] == float("-inf") and got[order.index(4), 3].isfinite()
        tokens = torch.tensor([[7, 5, 2999, 5, 7], [0, 2, 2, 6, 7], [1, 1, 1, 1, 1]][t], device=DEVICE)
        fast._record(fast._step_rows(order), tokens)
        slow._record(slow._step_rows(order), tokens)
        for i, tok in zip(order, tokens.tolist()):
            outputs[i].append(tok)
    assert got[order.index(3), 5].isfinite(), "two tokens generated: min_tokens=2 no longer masks"


def test_penalties_kernel_equals_its_reference_alone():
    """Penalties only, stops only, both: against penalize_ref on hand-made tables."""
    V, N = 3000, 4
    g = torch.Generator().manual_seed(0)
    x = randn(3, V, seed=5)
    rows = torch.tensor([2, 0, 3], device=DEVICE)
    counts = torch.randint(0, 3, (N, V), generator=g, dtype=torch.int32).to(DEVICE)
    mask = (torch.rand(N, V, generator=g) < 0.1).to(DEVICE)
    f = torch.tensor([[1.3, 0.5, 0.2], [0.8, -0.4, 1.0], [1.0, 0.0, 0.0], [2.0, 1.5, -1.0]], device=DEVICE)
    pen = dict(counts=counts, prompt_mask=mask, repetition=f[:, 0], frequency=f[:, 1], presence=f[:, 2])
    stops = dict(num_generated=torch.tensor([0, 5, 1, 3], dtype=torch.int32, device=DEVICE),
                 min_tokens=torch.tensor([1, 1, 3, 3], device=DEVICE),
                 stop_ids=torch.tensor([[3, 3], [4, 9], [2999, 0], [8, 8]], device=DEVICE))
    for kw in (pen, stops, pen | stops):
        torch.testing.assert_close(penalize(x, rows, **kw), penalize_ref(x, rows, **kw), rtol=1e-5, atol=1e-5)
    out = penalize(x, rows, **stops)
    assert out[0, 2999] == out[0, 0] == float("-inf") and out[2, 8].isfinite()   # entry 3 has its 3 tokens: unmasked
