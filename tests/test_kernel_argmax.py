"""Greedy sampling's two-pass Triton argmax (Day 14) == torch's argmax: the first index of the max.

On a CPU the kernel runs under TRITON_INTERPRET=1 (conftest.py); rows longer than one chunk (4096)
check the second pass, ties placed in different chunks check that both passes break ties left."""
import pytest
import torch

from course_lib.kernels.argmax import BLOCK, argmax

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
CUDA = DEVICE == "cuda"
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if CUDA else [])


def randn(*shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(device=DEVICE, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,V", [(1, 1), (3, 97), (2, BLOCK), (4, 2 * BLOCK + 5)])
def test_argmax_matches_torch(B, V, dtype):
    x = randn(B, V, dtype=dtype)
    got = argmax(x)
    assert got.dtype == torch.long and torch.equal(got, x.argmax(-1))


def test_ties_go_to_the_first_index_across_and_within_chunks():
    V = 3 * BLOCK
    x = randn(4, V).round()                        # many equal values
    x[0, [BLOCK + 7, 2 * BLOCK + 1]] = 50.0        # same max in two chunks: the earlier chunk wins
    x[1, [5, 9]] = 50.0                            # same max twice in one chunk
    x[2] = float("-inf")                           # nothing but -inf: index 0, as torch
    x[3, 2 * BLOCK + 3] = float("nan")             # NaN counts as the maximum, as torch
    assert argmax(x).tolist() == [BLOCK + 7, 5, 0, 2 * BLOCK + 3] == x.argmax(-1).tolist()


def test_strided_rows():
    x = randn(3, 2 * BLOCK + 10)[:, 5:]
    assert torch.equal(argmax(x), x.argmax(-1))


@pytest.mark.parametrize("bad,match", [(lambda: randn(5), "must be"), (lambda: randn(2, 0), "V > 0"),
                                       (lambda: randn(2, 3).long(), "dtype")])
def test_bad_inputs_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        argmax(bad())


@pytest.mark.skipif(not CUDA, reason="vocabularies of real models in bfloat16 need a CUDA GPU")
@pytest.mark.parametrize("V", [49152, 128256, 151936])
@pytest.mark.parametrize("B", [1, 7, 256])
def test_gpu_real_vocabularies(B, V):
    x = randn(B, V, dtype=torch.bfloat16) * 4      # bf16: frequent exact ties
    assert torch.equal(argmax(x), x.argmax(-1))
