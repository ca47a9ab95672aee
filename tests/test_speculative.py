"""Speculative decoding (Day 20): rejection sampling keeps the target's distribution (statistically,
on fixed distributions and through two tiny models), greedy speculation is the target's greedy output
token for token, and a draft equal to the target is always accepted."""
import itertools

import pytest
import torch

from course_lib import ModelConfig
from course_lib.generate import generate
from course_lib.models.llama import LlamaModel
from course_lib.models.loader import init_random_
from course_lib.speculative import probs_from_logits, rejection_sample, speculative_generate


def tv(a: torch.Tensor, b: torch.Tensor) -> float:
    return 0.5 * (a - b).abs().sum().item()


def test_rejection_sampling_emits_the_targets_distribution():
    g = torch.Generator().manual_seed(0)
    V, k, trials = 6, 3, 30_000
    q = torch.softmax(torch.randn(k, V, generator=g) * 1.5, -1)          # the draft's distributions
    p = torch.softmax(torch.randn(k + 1, V, generator=g) * 1.5, -1)      # the target's (context-free)
    first, pairs, lengths = torch.zeros(V), torch.zeros(V, V), torch.zeros(k + 2)
    for _ in range(trials):
        drafts = [int(torch.multinomial(q[i], 1, generator=g)) for i in range(k)]
        out = rejection_sample(drafts, q, p, g)
        assert 1 <= len(out) <= k + 1 and out[:-1] == drafts[:len(out) - 1], "an accepted prefix, then one token"
        first[out[0]] += 1
        lengths[len(out)] += 1
        if len(out) >= 2:
            pairs[out[0], out[1]] += 1
    # the first token is p_1's; the second, given any first, p_2's (this toy target ignores its context)
    assert tv(first / trials, p[0]) < 0.015, f"first token: TV {tv(first / trials, p[0]):.4f} from the target's"
    second = pairs.sum(0) / pairs.sum()
    assert tv(second, p[1]) < 0.02
    # acceptance of x_1 is sum_x min(p, q): the expected number of rounds of length 1 says so
    accept1 = torch.minimum(p[0], q[0]).sum().item()
    assert abs(lengths[1] / trials - (1 - accept1)) < 0.015


def test_identical_draft_and_target_are_always_accepted():
    g = torch.Generator().manual_seed(1)
    p = torch.softmax(torch.randn(4, 10, generator=g), -1)
    for _ in range(200):
        drafts = [int(torch.multinomial(p[i], 1, generator=g)) for i in range(3)]
        assert rejection_sample(drafts, p[:3], p, g)[:3] == drafts


def test_greedy_probabilities_are_one_hot_and_rejection_follows_the_argmax():
    logits = torch.tensor([[0.0, 3.0, 1.0], [2.0, 0.0, 5.0], [1.0, 0.0, 0.0]])
    p = probs_from_logits(logits, 0.0)
    assert p.tolist() == [[0, 1, 0], [0, 0, 1], [1, 0, 0]]
    q = probs_from_logits(torch.tensor([[0.0, 3.0, 1.0], [9.0, 0.0, 0.0]]), 0.0)
    assert rejection_sample([1, 0], q, p) == [1, 2], "keep the draft while it is the target's argmax, then the argmax"


def tiny(seed, vocab=64, layers=2):
    m = LlamaModel(ModelConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_layers=layers, num_heads=2,
                               num_kv_heads=1, head_dim=16, max_position_embeddings=256))
    init_random_(m, seed=seed)
    for p in m.parameters():                   # sharper distributions than init's: greedy decisions are clear
        p.data *= 3 if p.dim() == 2 else 1
    return m


@pytest.mark.parametrize("k", [1, 3, 5])
def test_greedy_speculation_is_the_targets_greedy_output(k):
    target, draft = tiny(0), tiny(1)
    prompt = [3, 14, 15, 9, 2, 6]
    want = generate(target, prompt, 30).token_ids
    got = speculative_generate(target, draft, prompt, 30, num_speculative_tokens=k)
    assert got.token_ids == want
    assert got.num_rounds < 30 or got.num_accepted == 0
    assert sum(got.round_sizes) >= 30 and got.num_draft_tokens > 0


def test_a_draft_equal_to_the_target_emits_k_plus_one_tokens_per_round():
    target = tiny(0)
    twin = tiny(0)
    res = speculative_generate(target, twin, [1, 2, 3], 24, num_speculative_tokens=3, temperature=1.0, seed=0)
    assert res.acceptance_rate == 1.0 and res.round_sizes == [4] * 6 and len(res.token_ids) == 24


def test_sampled_speculation_keeps_the_targets_two_token_distribution():
    V = 4
    target, draft = tiny(0, vocab=V, layers=1), tiny(5, vocab=V, layers=1)
    prompt = [1, 2, 3]
    with torch.inference_mode():                                     # the exact joint of two target tokens
        p1 = torch.softmax(target(torch.tensor([prompt]))[0, -1].float(), -1)
        joint = torch.stack([p1[a] * torch.softmax(target(torch.tensor([prompt + [a]]))[0, -1].float(), -1)
                             for a in range(V)])
    counts = torch.zeros(V, V)
    n = 1500
    rates = []
    for s in range(n):
        res = speculative_generate(target, draft, prompt, 2, num_speculative_tokens=3, temperature=1.0, seed=s)
        counts[res.token_ids[0], res.token_ids[1]] += 1
        rates.append(res.acceptance_rate)
    assert tv(counts / n, joint) < 0.06, f"TV {tv(counts / n, joint):.3f} between speculation and the target"
    assert 0 < sum(rates) / n < 1, "the draft is another model: some of its tokens are rejected"


def test_stop_tokens_and_the_token_budget_end_generation():
    target, draft = tiny(0), tiny(1)
    free = speculative_generate(target, draft, [5, 6], 20, num_speculative_tokens=4).token_ids
    stop = free[7]
    first = free.index(stop)
    got = speculative_generate(target, draft, [5, 6], 20, num_speculative_tokens=4, stop_token_ids=(stop,))
    assert got.token_ids == free[:first + 1]
    for n in (1, 2, 7):
        assert speculative_generate(target, draft, [5, 6], n, num_speculative_tokens=4).token_ids == free[:n]


def test_bad_arguments_name_the_field():
    target, draft = tiny(0), tiny(1)
    with pytest.raises(ValueError, match="num_speculative_tokens must be an integer >= 1"):
        speculative_generate(target, draft, [1], 4, num_speculative_tokens=0)
    with pytest.raises(ValueError, match="share a vocabulary"):
        speculative_generate(target, tiny(1, vocab=32), [1], 4)
    with pytest.raises(ValueError, match="context length"):
        speculative_generate(target, draft, [1] * 250, 4, num_speculative_tokens=4)
    with pytest.raises(ValueError, match="max_tokens must be"):
        speculative_generate(target, draft, [1], 0)


def test_ngram_proposer_finds_the_latest_longest_match():
    from course_lib.speculative import NgramProposer
    prop = NgramProposer(prompt_lookup_max=3, prompt_lookup_min=1)
    ctx = [1, 2, 3, 9, 9, 1, 2, 3, 7, 8, 5, 2, 3]
    assert prop.propose(ctx, 2) == [7, 8], "[5, 2, 3] never came before; the latest earlier [2, 3] is followed by 7, 8"
    assert prop.propose([4, 5, 6, 4, 5, 6, 4, 5], 3) == [6, 4, 5], "[6, 4, 5] follows the latest [4, 5]"
    assert prop.propose([1, 2, 3], 4) == [], "nothing repeats"
    assert NgramProposer(3, 3).propose(ctx, 2) == [], "no trigram match, and bigrams are not allowed"
    with pytest.raises(ValueError, match="prompt_lookup_min .* must be <= prompt_lookup_max"):
        NgramProposer(2, 3)


def test_ngram_speculation_keeps_the_target_and_saves_passes_on_repetitive_text():
    from course_lib.speculative import NgramProposer
    target = tiny(0)
    prompt = [7, 3, 9, 4, 1, 8, 2, 6] * 4                      # a loop the target's output may follow
    want = generate(target, prompt, 24).token_ids
    got = speculative_generate(target, NgramProposer(), prompt, 24, num_speculative_tokens=4)
    assert got.token_ids == want
    assert got.num_draft_tokens > 0
    V = 4
    t2 = tiny(0, vocab=V, layers=1)
    with torch.inference_mode():
        p1 = torch.softmax(t2(torch.tensor([[1, 2, 1, 2]]))[0, -1].float(), -1)
    first = torch.zeros(V)
    for s in range(1200):                                         # one-hot drafts under sampling too
        first[speculative_generate(t2, NgramProposer(), [1, 2, 1, 2], 1 + 1, num_speculative_tokens=2,
                                   temperature=1.0, seed=s).token_ids[0]] += 1
    assert tv(first / 1200, p1) < 0.05
