"""The CPU Linear's weight-first order (layers/linear.py) against F.linear, and the benchmark that
times the two (perf/benchmarks/linear.py)."""
import json

import pytest
import torch
from torch.nn import functional as F

from course_lib.layers import linear as linear_mod
from course_lib.layers.linear import Linear, linear_weight_first, padded_rows


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 8, 15, 17, 33])
@pytest.mark.parametrize("bias", [False, True])
def test_weight_first_equals_f_linear(m, bias):
    g = torch.Generator().manual_seed(m)
    x, w = torch.randn(m, 48, generator=g), torch.randn(40, 48, generator=g)
    b = torch.randn(40, generator=g) if bias else None
    out = linear_weight_first(x, w, b)
    assert out.shape == (m, 40) and out.is_contiguous()
    torch.testing.assert_close(out, F.linear(x, w, b), rtol=1e-5, atol=1e-5)


def test_weight_first_keeps_leading_dims_and_ignores_padding():
    """(B, T, K) in, (B, T, N) out; the zero rows it pads with never reach the output."""
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(1, 7, 16, generator=g), torch.randn(24, 16, generator=g)
    out = linear_weight_first(x, w)
    assert out.shape == (1, 7, 24)
    torch.testing.assert_close(out, F.linear(x, w), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[0, 3], F.linear(x[0, 3], w), rtol=1e-5, atol=1e-5)


def test_padded_rows():
    assert [padded_rows(m) for m in (1, 2, 3, 4, 5, 8, 9, 16, 31, 32, 33)] == [2, 2, 4, 4, 8, 8, 16, 16, 32, 32, 40]


def test_cpu_linear_takes_the_weight_first_path_up_to_the_limit(monkeypatch):
    """Linear.forward on a CPU calls linear_weight_first for few rows, F.linear past the limit (or
    with the limit at 0), and the outputs agree either way."""
    layer = Linear(16, 8)
    calls = []
    real = linear_mod.linear_weight_first
    monkeypatch.setattr(linear_mod, "linear_weight_first", lambda *a: calls.append(1) or real(*a))
    x = torch.randn(3, 16)
    with torch.no_grad():
        fast = layer(x)
        assert calls == [1]
        monkeypatch.setattr(linear_mod, "CPU_WEIGHT_FIRST_MAX_ROWS", 2)
        slow = layer(x)
        assert calls == [1]
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)


def test_bench_linear_writes_a_report(tmp_path):
    from course_lib.__main__ import main
    path = tmp_path / "lin.json"
    assert main(["bench", "linear", "--model", "smollm2-135m", "--rows", "1,8", "--repeats", "1",
                 "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    assert report["benchmark"] == "linear"
    assert [p["rows"] for p in report["points"]] == [1, 8]
    assert all(p["max_abs_diff"] < 1e-4 and p["ms_f_linear"] > 0 for p in report["points"])


def test_bench_linear_rejects_bad_rows(capsys):
    from course_lib.__main__ import main
    assert main(["bench", "linear", "--rows", "0,2"]) == 2
    assert "--rows" in capsys.readouterr().err
