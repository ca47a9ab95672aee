"""The Triton paged attention kernels against the torch reference `paged_attention_ref`.

On a CPU these run under TRITON_INTERPRET=1 (set in conftest.py), which is slow: shapes are tiny and
mostly head_dim 16/32. Real shapes (batch 64, context 4096, head_dim 128, bf16/fp16) run only on CUDA.
bfloat16 is GPU-only: the interpreter's tl.dot multiplies raw bf16 bits (triton-lang/triton#11584).
"""
import pytest
import torch

from course_lib.kernels import num_kv_splits, paged_attention_triton, paged_decode_split_kv
from course_lib.kernels import paged_attention as pa
from course_lib.kv.paged import paged_attention_ref

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: dict(atol=1e-4, rtol=1e-4),
       torch.float16: dict(atol=2e-2, rtol=2e-2),
       torch.bfloat16: dict(atol=2e-2, rtol=2e-2)}
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="real shapes need a CUDA GPU")


def make_batch(q_lens, seq_lens, heads=4, kv_heads=2, head_dim=16, block_size=4,
               dtype=torch.float32, seed=0, device=DEVICE):
    """Random varlen batch over a shuffled paged cache. Every slot no sequence owns holds NaN, and
    block-table padding points at an all-NaN block, so a kernel reading past a context shows up."""
    g = torch.Generator().manual_seed(seed)
    B = len(q_lens)
    max_blocks = max(-(-L // block_size) for L in seq_lens) + 1     # +1: some padding in every row
    num_blocks = B * max_blocks + 1                                 # last block: the NaN padding one
    shape = (num_blocks, block_size, kv_heads, head_dim)
    k_cache = torch.full(shape, float("nan"))
    v_cache = torch.full(shape, float("nan"))
    block_tables = torch.full((B, max_blocks), num_blocks - 1, dtype=torch.int32)
    ids = torch.randperm(num_blocks - 1, generator=g).tolist()      # non-contiguous physical blocks
    for i, L in enumerate(seq_lens):
        n = -(-L // block_size)
        blocks = [ids.pop() for _ in range(n)]
        block_tables[i, :n] = torch.tensor(blocks, dtype=torch.int32)
        for c in (k_cache, v_cache):
            kv = torch.randn(n * block_size, kv_heads, head_dim, generator=g)
            kv[L:] = float("nan")                                   # tail slots of the last block
            c[blocks] = kv.view(n, block_size, kv_heads, head_dim)
    qsl = torch.zeros(B + 1, dtype=torch.int32)
    qsl[1:] = torch.tensor(q_lens).cumsum(0)
    q = torch.randn(int(qsl[-1]), heads, head_dim, generator=g)
    to = dict(device=device)
    return (q.to(dtype=dtype, **to), k_cache.to(dtype=dtype, **to), v_cache.to(dtype=dtype, **to),
            block_tables.to(**to), torch.tensor(seq_lens, dtype=torch.int32, device=device), qsl.to(**to))


def reference(args):
    """The reference in float32 (the ground truth for low-precision kernels too)."""
    q, k, v, *rest = args
    return paged_attention_ref(q.float(), k.float(), v.float(), *rest)


def check(args, **kwargs):
    q = args[0]
    out = torch.full_like(q, float("nan"))          # poisoned: an unwritten row fails the comparison
    got = paged_attention_triton(*args, out=out, **kwargs)
    assert got.data_ptr() == out.data_ptr() and got.dtype == q.dtype
    torch.testing.assert_close(got.float(), reference(args), **TOL[q.dtype])


CASES = {   # name: (q_lens, seq_lens)
    "mixed": ([3, 1, 5, 7], [10, 1, 5, 20]),          # chunked, decode at pos 0, prefill, chunked
    "prefill": ([7, 19, 1], [7, 19, 1]),
    "decode": ([1, 1, 1, 1, 1], [1, 9, 40, 17, 33]),
    "empty_seq": ([2, 0, 3], [5, 4, 3]),              # a sequence with no query this step
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("group", [1, 3, 4])
@pytest.mark.parametrize("block_size", [4, 16])
def test_matches_reference(case, group, block_size):
    q_lens, seq_lens = CASES[case]
    check(make_batch(q_lens, seq_lens, heads=2 * group, kv_heads=2, block_size=block_size),
          num_splits=1)


@pytest.mark.parametrize("block_size", [1, 128])   # tile spans 64 cache blocks / sits inside one
def test_extreme_block_sizes(block_size):
    check(make_batch([2, 1, 6], [9, 70, 6], block_size=block_size, head_dim=32))


def test_head_dim_64_and_max_query_len():
    args = make_batch([3, 1, 8], [12, 30, 8], heads=8, kv_heads=2, head_dim=64, block_size=16)
    check(args, max_query_len=8)


def test_head_dim_not_power_of_two():
    check(make_batch([3, 1], [12, 5], head_dim=24))


def test_many_query_tiles():
    """q_len 70 > BLOCK_M // GROUP_PAD = 64: several programs per sequence, the causal loop bound."""
    check(make_batch([70, 2], [70, 75], heads=1, kv_heads=1, block_size=16))


def test_float16():
    check(make_batch(*CASES["mixed"], dtype=torch.float16))


def test_scale():
    args = make_batch(*CASES["mixed"], head_dim=32)
    got = paged_attention_triton(*args, scale=0.3)
    torch.testing.assert_close(got, paged_attention_ref(*args, scale=0.3), **TOL[torch.float32])


@pytest.mark.parametrize("num_splits", [2, 3, 8])
def test_split_kv_matches_reference(num_splits):
    """Includes sequences shorter than one chunk (idle splits) and a group of 3 (padded rows)."""
    args = make_batch([1, 1, 1, 1], [1, 5, 150, 97], heads=6, kv_heads=2, block_size=4)
    out = torch.full_like(args[0], float("nan"))
    got = paged_decode_split_kv(*args, num_splits=num_splits, out=out)
    torch.testing.assert_close(got, reference(args), **TOL[torch.float32])


def test_split_kv_skips_sequences_without_query():
    args = make_batch([1, 0, 1], [40, 30, 90], block_size=16)
    torch.testing.assert_close(paged_decode_split_kv(*args, num_splits=4), reference(args),
                               **TOL[torch.float32])


def test_split_kv_chosen_by_heuristic(monkeypatch):
    """A decode batch of one sequence takes the split path by default (1 program < 2 per SM; the
    interpreter counts as one SM, so 8 splits there)."""
    calls = []
    split_kv = pa._split_kv
    monkeypatch.setattr(pa, "_split_kv", lambda *a: calls.append(a[7]) or split_kv(*a))
    args = make_batch([1], [600], heads=2, kv_heads=1, block_size=16)
    check(args)
    want = num_kv_splits(1, pa._sm_count(args[0].device))
    assert want > 1 and calls == [want], f"expected {want} splits for 1 program, got {calls}"


def test_num_kv_splits_heuristic():
    """Depends on the batch only, so one captured CUDA graph serves every context length."""
    assert num_kv_splits(programs=64 * 8, sm_count=132) == 1      # enough programs: no split
    assert num_kv_splits(programs=32 * 8, sm_count=132) == 5      # ~8 programs per SM
    assert num_kv_splits(programs=8, sm_count=132) == pa.MAX_SPLITS   # capped


@pytest.mark.parametrize("bad, match", [
    (lambda a: a.__setitem__(3, a[3].long()), "block_tables"),
    (lambda a: a.__setitem__(4, a[4].long()), "seq_lens"),
    (lambda a: a.__setitem__(5, a[5][:-1]), "query_start_loc"),
    (lambda a: a.__setitem__(1, a[1].double()), "k_cache"),
    (lambda a: a.__setitem__(0, a[0].transpose(1, 2).contiguous().transpose(1, 2)), "q"),
    (lambda a: a.__setitem__(0, a[0][..., :8]), "head_dim"),
])
def test_bad_inputs_raise(bad, match):
    args = list(make_batch(*CASES["mixed"]))
    bad(args)
    with pytest.raises(ValueError, match=match):
        paged_attention_triton(*args)


def test_split_kv_rejects_prefill_and_bad_counts():
    with pytest.raises(ValueError, match="num_splits"):
        paged_attention_triton(*make_batch(*CASES["mixed"]), num_splits=2)
    with pytest.raises(ValueError, match="num_splits"):
        paged_decode_split_kv(*make_batch(*CASES["decode"]), num_splits=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter's limitation only")
def test_bfloat16_refused_by_interpreter():
    with pytest.raises(ValueError, match="bfloat16"):
        paged_attention_triton(*make_batch(*CASES["decode"], dtype=torch.bfloat16))


@cuda_only
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("num_splits", [1, None, 4])
def test_gpu_decode_real_shapes(dtype, num_splits):
    """Batch 64, context ~4096 (irregular), 16 q heads / 8 KV heads, head_dim 128, block_size 16."""
    seq_lens = torch.randint(3000, 4097, (64,), generator=torch.Generator().manual_seed(1)).tolist()
    args = make_batch([1] * 64, seq_lens, heads=16, kv_heads=8, head_dim=128, block_size=16,
                      dtype=dtype)
    check(args, max_query_len=1, num_splits=num_splits)


@cuda_only
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_gpu_mixed_real_shapes(dtype):
    """Prefill, chunked prefill and decode in one batch at head_dim 128, GQA 16/8."""
    q_lens = [1] * 48 + [512, 300, 1000, 77] * 4
    seq_lens = [4096 - 7 * i for i in range(48)] + [512, 2000, 1000, 4096] * 4
    check(make_batch(q_lens, seq_lens, heads=16, kv_heads=8, head_dim=128, block_size=16,
                     dtype=dtype))


@cuda_only
def test_gpu_block_ids_past_int32_offsets():
    """Blocks beyond 2^31 elements into the pool: offsets must be computed in 64 bits."""
    num_blocks, bs, kvh, d = 140_000, 16, 8, 128          # 2.3e9 elements per cache (~4.6 GB bf16)
    k_cache = torch.randn(num_blocks, bs, kvh, d, device="cuda", dtype=torch.bfloat16)
    v_cache = torch.randn_like(k_cache)
    block_tables = torch.arange(num_blocks - 64, num_blocks, device="cuda", dtype=torch.int32)
    block_tables = block_tables.view(2, 32).flip(1).contiguous()       # (B=2, 32 blocks) from the top
    seq_lens = torch.tensor([512, 300], device="cuda", dtype=torch.int32)
    qsl = torch.tensor([0, 1, 5], device="cuda", dtype=torch.int32)     # decode + a 4-token chunk
    q = torch.randn(5, 16, d, device="cuda", dtype=torch.bfloat16)
    check((q, k_cache, v_cache, block_tables, seq_lens, qsl))
