"""Day 06's sampler: the batched device sampler against the per-request reference, both against
transformers' logits processors, its device-side token history, seeded batch invariance (the draw's
noise is a hash of seed, position and token), re-adding a sequence mid-way, and a statistical test
of the draws. Each batched check runs the torch path and the Triton kernels' path (course_lib/
kernels/sampling.py; on a CPU under TRITON_INTERPRET=1). The engine-level checks against HF generate
are in test_sampling_vs_hf.py; the kernels alone in test_kernel_sampling.py."""
import pytest
import torch
from transformers import (MinNewTokensLengthLogitsProcessor, MinPLogitsWarper, RepetitionPenaltyLogitsProcessor,
                          TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)

from course_lib.config import SamplingParams
from course_lib.layers.batch_sampler import Sampler
from course_lib.layers.sampler import (apply_filters, apply_penalties, filter_probs, mask_stop_tokens,
                                       race_noise, sample, seed_halves)

V = 64
EOS = [3]
pytestmark = pytest.mark.filterwarnings("ignore:divide by zero encountered in log")   # the interpreter's log(0)
# The batched sampler's device paths (counts updated by a scatter-add, the parameter tables, the
# noise's positions) run on every device here: on a GPU machine, CUDA too. "cpu-kernels" is the CPU
# with the Triton kernels in the interpreter (slow: the vocabulary here is small), on a machine
# without CUDA (conftest.py sets TRITON_INTERPRET only there; with CUDA the kernels run for real).
CUDA = torch.cuda.is_available()
DEVICES = ["cpu"] + (["cuda"] if CUDA else ["cpu-kernels"])   # the interpreter only where CUDA is absent


def placed(device: str) -> tuple[str, bool]:
    """(torch device, whether the Sampler uses its kernels) of a DEVICES entry."""
    return ("cpu", True) if device == "cpu-kernels" else (device, device == "cuda")


def logits_for(batch: int, seed: int = 0, device="cpu") -> torch.Tensor:
    return (3 * torch.randn(batch, V, generator=torch.Generator().manual_seed(seed))).to(device)


def sampler_with(params: list[SamplingParams], prompts: list[list[int]], device="cpu") -> Sampler:
    """A Sampler holding sequences 0..n-1, seeded ones with their request's seed."""
    dev, kernels = placed(device)
    s = Sampler(V, dev, EOS, capacity=2, kernels=kernels, seed=0)   # small capacity: adding grows it
    for i, (p, prompt) in enumerate(zip(params, prompts)):
        s.add(i, p, prompt, p.seed)
    return s


def run_steps(s: Sampler, seq_ids, steps: int, seed: int = 1) -> list[list[int]]:
    """Sample ``steps`` tokens per sequence; returns the outputs per sequence."""
    outs = [[] for _ in seq_ids]
    for t in range(steps):
        tokens = s(logits_for(len(seq_ids), seed + t), list(seq_ids)).tokens.tolist()
        for o, tok in zip(outs, tokens):
            o.append(tok)
    return outs


# ---- penalties: reference vs HF, batched vs reference -------------------------------------------------

def test_repetition_penalty_equals_hf_processor():
    logits = logits_for(3)
    ids = [[1, 5, 5, 9], [0, 2, 2, 2], [7, 63, 8, 1]]
    for penalty in (0.7, 1.3, 2.0):
        params = [SamplingParams(repetition_penalty=penalty)] * 3
        ours = apply_penalties(logits, [i[:2] for i in ids], [i[2:] for i in ids], params)
        hf = RepetitionPenaltyLogitsProcessor(penalty)(torch.tensor(ids), logits.clone())
        torch.testing.assert_close(ours, hf, rtol=0, atol=0)


def test_frequency_and_presence_follow_openai_formula():
    logits = logits_for(1)
    output = [4, 4, 4, 9]
    p = SamplingParams(frequency_penalty=0.5, presence_penalty=1.5)
    got = apply_penalties(logits, [[1, 2]], [output], [p])[0]
    want = logits[0].clone()
    want[4] -= 0.5 * 3 + 1.5
    want[9] -= 0.5 * 1 + 1.5
    torch.testing.assert_close(got, want)                 # the prompt's tokens 1, 2 are not penalised


def test_min_tokens_equals_hf_processor():
    logits = logits_for(2)
    p = SamplingParams(min_tokens=3)
    for n in range(5):
        ours = mask_stop_tokens(logits, [n, n], [p, p], EOS)
        ids = torch.zeros(2, 7 + n, dtype=torch.long)          # a 7-token prompt and n outputs
        hf = MinNewTokensLengthLogitsProcessor(7, 3, EOS)(ids, logits.clone())
        assert torch.equal(ours, hf), n


MIXED = [SamplingParams(temperature=0, **kw) for kw in (
    dict(repetition_penalty=1.4), dict(frequency_penalty=0.8, presence_penalty=-0.5), dict(),
    dict(min_tokens=2, stop_token_ids=[5, 6]), dict(min_tokens=1, ignore_eos=True, repetition_penalty=0.8,
                                                    stop_token_ids=[7]))]
PROMPTS = [[1, 2, 2], [10, 11], [5], [20, 21, 22], [30]]


@pytest.mark.parametrize("device", DEVICES)
def test_batched_penalties_equal_the_reference_over_steps(device):
    """The device token counts, prompt masks and min_tokens counters reproduce the reference built
    from Python lists, step after step (greedy, so each step's token is the processed argmax)."""
    s = sampler_with(MIXED, PROMPTS, device=device)
    outputs = [[] for _ in MIXED]
    for t in range(6):
        logits = logits_for(len(MIXED), 10 + t, placed(device)[0])
        want = mask_stop_tokens(apply_penalties(logits, PROMPTS, outputs, MIXED),
                                [len(o) for o in outputs], MIXED, EOS)
        got = s.processed_logits(logits, list(range(len(MIXED))))
        torch.testing.assert_close(got, want)
        tokens = s(logits, list(range(len(MIXED)))).tokens.tolist()
        greedy = [SamplingParams(temperature=0)] * len(MIXED)
        assert tokens == sample(want, greedy)[0].tolist()
        for o, tok in zip(outputs, tokens):
            o.append(tok)
    assert s.counts[s.row_of[1]].sum() == 6 and s.num_generated[s.row_of[4]] == 6


def test_rows_are_reused_and_reset():
    s = sampler_with([SamplingParams(frequency_penalty=2.0)], [[1]])
    run_steps(s, [0], 3)
    row = s.row_of[0]
    s.remove(0)
    s.add(7, SamplingParams(frequency_penalty=2.0), [2])
    assert s.row_of[7] == row and s.counts[row].sum() == 0 and s.num_generated[row] == 0
    logits = logits_for(1)
    torch.testing.assert_close(s.processed_logits(logits, [7]), logits)   # no history: nothing to penalise


# ---- filters vs HF warpers ------------------------------------------------------------------------------

@pytest.mark.parametrize("kw", [dict(temperature=0.7), dict(top_k=5), dict(top_p=0.8), dict(min_p=0.1),
                                dict(temperature=1.3, top_k=10, top_p=0.9), dict(top_p=0.6, min_p=0.05)])
def test_filters_equal_hf_warpers(kw):
    logits = logits_for(4, 3)
    p = SamplingParams(**kw)
    x = TemperatureLogitsWarper(p.temperature)(None, logits.clone())
    if p.top_k != -1:
        x = TopKLogitsWarper(p.top_k)(None, x)
    if p.top_p < 1:
        x = TopPLogitsWarper(p.top_p)(None, x)
    if p.min_p > 0:
        x = MinPLogitsWarper(p.min_p)(None, x)
    torch.testing.assert_close(apply_filters(logits, [p] * 4), x.softmax(-1))


# ---- draws ------------------------------------------------------------------------------------------------

DRAWN = [SamplingParams(temperature=0.9, top_k=20, seed=1), SamplingParams(temperature=0),
         SamplingParams(temperature=1.2, top_p=0.7, min_p=0.02, seed=2), SamplingParams(temperature=0.5, seed=3)]


TOP_K = [SamplingParams(temperature=0.8, top_k=k, top_p=p, min_p=m, seed=6 + k)
         for k, p, m in [(5, 1.0, 0.0), (30, 0.8, 0.0), (12, 0.9, 0.05)]]
PATHS = {"sort": DRAWN,                                           # a top-p row without top-k
         "full": [SamplingParams(temperature=0.7, seed=4), SamplingParams(temperature=0),
                  SamplingParams(temperature=1.1, min_p=0.1, seed=5),
                  SamplingParams(temperature=0.9, top_k=V, seed=11)],       # top_k = V filters nothing
         "candidates": TOP_K + [SamplingParams(temperature=0.6, seed=9), SamplingParams(temperature=0)],
         "candidates-greedy": TOP_K + [SamplingParams(temperature=0)]}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("device", DEVICES)
def test_batched_draws_equal_the_reference_with_the_same_seeds(device, path):
    """Token for token, step after step: each row's seed and output position give the reference's
    noise. The kernels' three paths: a top-p row without top-k sorts; temperature and min-p draw over
    the whole vocabulary; top-k rows draw among candidates (beside a plain row and a greedy one, or
    a greedy one only)."""
    params = PATHS[path]
    s = sampler_with(params, [[1]] * len(params), device)
    ids = list(range(len(params)))
    for t in range(5):
        logits = logits_for(len(params), 40 + t, placed(device)[0])
        want = sample(logits, params, [p.seed for p in params], [t] * len(params))[0]
        assert s(logits, ids).tokens.tolist() == want.tolist()
    assert s.draw_path == path.split("-")[0]


@pytest.mark.parametrize("rows, path", [
    ([dict(temperature=0)], "full"), ([dict(min_p=0.1), dict(top_k=5000)], "full"),   # top_k >= V: off
    ([dict(top_k=50), dict(top_k=1024, top_p=0.9), dict()], "candidates"),
    ([dict(top_k=1025)], "sort"), ([dict(top_k=50), dict(top_p=0.9)], "sort"),
    ([dict(temperature=0, top_p=0.5), dict(top_k=3)], "candidates")])                   # greedy rows filter nothing
def test_the_draw_path_follows_the_live_rows(rows, path):
    s = Sampler(3000, "cpu", EOS)
    for i, kw in enumerate(rows):
        s.add(i, SamplingParams(**kw), [1])
    s._refresh()
    assert s.draw_path == path


@pytest.mark.parametrize("device", DEVICES)
def test_a_seeded_request_samples_the_same_alone_or_in_a_batch(device):
    """Sequence 3 is seeded; the others change order and number every step (some with penalties,
    some greedy). Its tokens equal those it draws alone."""
    dev, kernels = placed(device)
    p = SamplingParams(temperature=1.0, top_p=0.95, seed=1234)
    alone = Sampler(V, dev, EOS, kernels=kernels)
    alone.add(3, p, [1], p.seed)
    crowd = Sampler(V, dev, EOS, capacity=2, kernels=kernels)
    others = [SamplingParams(temperature=0.8, repetition_penalty=1.2), SamplingParams(temperature=0),
              SamplingParams(temperature=1.1, top_k=3)]
    for i in range(6):
        crowd.add(i, p if i == 3 else others[i % 3], [1], p.seed if i == 3 else None)
    mine, ref = [], []
    for t in range(8):
        ours = logits_for(1, 70 + t, dev)
        ref += alone(ours, [3]).tokens.tolist()
        order = [5, 3, 0] if t % 2 else [1, 2, 4, 3, 0]
        batch = logits_for(len(order), 90 + t, dev)
        batch[order.index(3)] = ours[0]
        mine.append(crowd(batch, order).tokens.tolist()[order.index(3)])
    assert mine == ref
    assert len(set(ref)) > 2                      # it really sampled


def test_unseeded_rows_differ_and_a_sampler_seed_reproduces_them():
    p = SamplingParams(temperature=1.0)
    logits = torch.zeros(8, V)                    # uniform: every token as likely

    def run(seed):
        s = Sampler(V, "cpu", EOS, capacity=8, seed=seed)
        for i in range(8):
            s.add(i, p, [1])
        return s(logits, list(range(8))).tokens.tolist()
    first = run(5)
    assert first == run(5) and first != run(6)
    assert len(set(first)) > 4, "unseeded rows must not share their noise"


@pytest.mark.parametrize("device", DEVICES)
def test_a_sequence_added_back_continues_where_it_was(device):
    """Preemption's contract at the sampler: a sequence that loses its row and is added back with
    its outputs so far draws the tokens it would have drawn (same position, same counts)."""
    dev, kernels = placed(device)
    p = SamplingParams(temperature=1.0, top_k=10, frequency_penalty=1.0, seed=77)
    steady = Sampler(V, dev, EOS, kernels=kernels)
    steady.add(0, p, [1, 2], p.seed)
    moved = Sampler(V, dev, EOS, kernels=kernels)
    moved.add(0, p, [1, 2], p.seed)
    want, got = [], []
    for t in range(8):
        logits = logits_for(1, 20 + t, dev)
        if t == 4:                                # preempted and re-added, with another row's seed between
            moved.remove(0)
            moved.add(9, SamplingParams(temperature=0.5), [3])
            moved.add(0, p, [1, 2], p.seed, output_ids=got)
        torch.testing.assert_close(moved.processed_logits(logits, [0]), steady.processed_logits(logits, [0]))
        want += steady(logits, [0]).tokens.tolist()
        got += moved(logits, [0]).tokens.tolist()
    assert got == want


def tv_distance(counts: torch.Tensor, probs: torch.Tensor) -> float:
    return 0.5 * (counts / counts.sum() - probs).abs().sum().item()


@pytest.mark.parametrize("kw", [dict(temperature=0.8), dict(temperature=1.0, top_p=0.8),
                                dict(temperature=1.5, top_k=4, min_p=0.05)])
def test_draws_follow_the_filtered_distribution(kw):
    """20,000 draws (one row each) of one distribution: total variation to the exact filtered
    probabilities below 0.02 (the sampling noise is about 0.005 here; a wrong filter order or a
    temperature applied twice is off by more than 0.05)."""
    p = SamplingParams(**kw)
    base = torch.tensor([1.0, 0.2, -0.5, 2.0, 0.0, -1.5, 0.7, -0.2])
    target = apply_filters(base[None], [p])[0]
    n = 20_000
    s = Sampler(len(base), "cpu", [], capacity=n, seed=0)   # every row an unseeded sequence
    for i in range(n):
        s.add(i, p, [])
    tokens = s(base[None].expand(n, -1).contiguous(), list(range(n))).tokens
    counts = torch.bincount(tokens, minlength=len(base)).float()
    assert counts[target == 0].sum() == 0, "a filtered-out token was drawn"
    assert tv_distance(counts, target) < 0.02


# ---- logprobs ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_logprobs_are_raw_with_ranks_and_top_k(device):
    logits = logits_for(3, 5, placed(device)[0])
    params = [SamplingParams(temperature=0, logprobs=4, repetition_penalty=1.5),
              SamplingParams(temperature=1.0, seed=0, logprobs=0), SamplingParams(temperature=0)]
    s = sampler_with(params, [[1, 2], [3], [4]], device)
    out = s(logits, [0, 1, 2])
    lp = logits.log_softmax(-1)
    torch.testing.assert_close(out.logprobs, lp.gather(1, out.tokens[:, None])[:, 0])
    want_rank = [(lp[i] > lp[i, t]).sum().item() + 1 for i, t in enumerate(out.tokens.tolist())]
    assert out.ranks.tolist() == want_rank
    top = lp.topk(4, dim=-1)
    torch.testing.assert_close(out.top_logprobs, top.values)
    assert torch.equal(out.top_ids, top.indices)


def test_no_logprobs_no_work():
    s = sampler_with([SamplingParams(temperature=0)], [[1]])
    out = s(logits_for(1), [0])
    assert out.logprobs is None and out.top_ids is None


def test_top_p_boundary_equals_hf():
    """Exactly at the boundary a token is dropped (HF and vLLM): 0.5 + 0.25 reach top_p=0.75, so the
    two 0.125s go; four tokens of 0.25 at top_p=0.5 keep two (which two is a tie)."""
    u = torch.tensor([[0.5, 0.125, 0.25, 0.125]]).log()
    hf = TopPLogitsWarper(0.75)(None, u.clone()).softmax(-1)
    torch.testing.assert_close(apply_filters(u, [SamplingParams(top_p=0.75)]), hf)
    torch.testing.assert_close(hf, torch.tensor([[2 / 3, 0, 1 / 3, 0]]))
    flat = torch.tensor([[0.25] * 4]).log()
    assert (apply_filters(flat, [SamplingParams(top_p=0.5)]) > 0).sum() == 2


def test_filter_probs_skips_are_exact():
    logits = logits_for(2)
    k, p, m = torch.tensor([V, V]), torch.tensor([1.0, 1.0]), torch.tensor([0.0, 0.0])
    torch.testing.assert_close(filter_probs(logits, k, p, m, sort=False, use_min_p=False), logits.softmax(-1))
    torch.testing.assert_close(filter_probs(logits, k, p, m), logits.softmax(-1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host-device synchronisation exists on CUDA only")
def test_batch_changes_do_not_make_the_host_wait():
    """Adding and removing rows and a changing batch queue their uploads without a host wait (under
    async scheduling a wait ends the overlap of the host with the step in flight). torch's sync
    debug mode raises on a blocking copy; a non-blocking copy from pageable memory waits inside the
    driver where it cannot see, which is why ``to_device`` pins first (the GPU suite measures it)."""
    s = Sampler(V, "cuda", EOS, capacity=4)
    logits = logits_for(3, 0, "cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for i, p in enumerate([SamplingParams(temperature=0), SamplingParams(temperature=0.8, top_p=0.9),
                               SamplingParams(repetition_penalty=1.2, min_tokens=2, stop_token_ids=[5])]):
            s.add(i, p, [1, 2, 3])
        s(logits, [0, 1, 2])
        s.remove(1)
        s.add(7, SamplingParams(frequency_penalty=0.5), [4])
        s(logits, [2, 7, 0])
    finally:
        torch.cuda.set_sync_debug_mode(0)
