"""kernels/topk.py's top_candidates against its reference, a stable sort: the same values and the
same ids (ties lowest id first) on random rows, tied rows, rows the repair selects, -inf and NaN
rows, strided and half-precision input; and on the embedded model's real logits, few survivors.
On a CPU the kernels run under TRITON_INTERPRET=1 (conftest.py), so the vocabularies are small."""
import pytest
import torch

from course_lib.kernels import topk as T

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def rows(V: int, seed: int = 0) -> torch.Tensor:
    """Six rows of V logits, each a case: random, all tied, three finite, clustered, NaN, fp16-tied."""
    g = torch.Generator().manual_seed(seed)
    x = 3 * torch.randn(6, V, generator=g)
    x[1] = 0.5                                             # every logit tied: the repair selects
    x[2] = float("-inf")
    x[2, [7, 3, 11]] = torch.tensor([1.0, 2.0, 1.0])        # fewer than k logits: -inf slots, id 0
    x[3, V // 5: V // 5 + V // 4] += 20                     # the best quarter in one run of ids
    x[4, V // 2] = float("nan")                             # NaN counts as +inf
    x[5] = torch.randint(0, 6, (V,), generator=g).float()   # six values: ties at every boundary
    return x.to(DEVICE)


def check(x: torch.Tensor, k: int) -> torch.Tensor:
    values, ids, survivors = T._top_candidates(x, k)
    want_values, want_ids = T.top_candidates_ref(x, k)
    assert values.dtype == torch.float32 and ids.dtype == torch.long and values.shape == (len(x), k)
    assert torch.equal(values, want_values), (values, want_values)
    assert torch.equal(ids, want_ids), (ids, want_ids)
    return survivors


@pytest.mark.parametrize("V,k", [(3000, 50), (3000, 1), (3000, 1024), (777, 7), (9000, 20)])
def test_equals_a_stable_sort(V, k):
    survivors = check(rows(V), k)
    cap = T.capacity(k)
    if V > cap:                                           # (else every logit fits its slots)
        assert survivors[1] > cap                         # the tied row went through the repair
    assert survivors[0] <= cap                            # a random row did not


def test_strided_and_half_precision_input():
    wide = rows(5000, seed=1)
    check(wide[:, 1000:4000], 50)                          # row stride 5,000, 3,000 columns
    check(wide.half(), 64)                                 # fp16: ties from rounding


def test_batch_invariant():
    """A row's candidates are the same alone as in a batch (the appends' order does not matter)."""
    x = rows(3000, seed=2)
    together = T.top_candidates(x, 40)
    for r in range(len(x)):
        alone = T.top_candidates(x[r:r + 1], 40)
        assert torch.equal(alone[0][0], together[0][r]) and torch.equal(alone[1][0], together[1][r])


def test_chunk_size_gives_enough_chunks():
    for V, k in [(128_256, 50), (128_256, 1024), (49_152, 1), (3000, 50), (100, 100)]:
        S = T.chunk_size(V, k)
        assert S & (S - 1) == 0 and 1 <= S <= T.MAX_CHUNK and T.TILE % S == 0
        assert -(-V // S) >= k                               # the bound needs k chunk maxima
        assert S == 1 or V // S >= 8 * k


def test_rejects_bad_k_and_input():
    x = rows(100)
    for k in (0, 101, -1):
        with pytest.raises(ValueError, match="k must be in 1..100"):
            T.top_candidates(x, k)
    with pytest.raises(ValueError, match="logits must be"):
        T.top_candidates(x[0], 5)
    values, ids = T.top_candidates(x[:0], 5)
    assert values.shape == (0, 5) and ids.shape == (0, 5)


def test_few_survivors_on_the_embedded_models_logits(smol_model, smol_tokenizer):
    """The bound the design rests on, on real next-token logits: no row needs the repair."""
    prompts = ["The capital of France is", "def fibonacci(n):", "Once upon a time", "1, 2, 3, 4,",
               "The best way to learn", "In 1492, Columbus", "Water boils at", "My favourite colour is"]
    with torch.no_grad():
        logits = torch.stack([smol_model(torch.tensor([smol_tokenizer.encode(p)]))[0, -1] for p in prompts])
    logits = logits.float().to(DEVICE)                    # (8, 49,152)
    for k in (20, 50):
        survivors = check(logits, k)
        assert (survivors >= k).all() and (survivors <= T.capacity(k)).all(), survivors   # no repair
