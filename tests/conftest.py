"""Shared test set-up. Runs at import, before any test module imports Triton kernels."""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")   # Triton kernels run on the CPU, slowly
os.environ.setdefault("HF_HUB_OFFLINE", "1")         # a failing hub look-up costs ~50 s
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Under pytest-xdist (`make unit`/`make test` run `-n 2`) each worker gets one intra-op thread, and
    # so do the kernels and CLI subprocesses it starts: two workers of two OpenMP threads each on a
    # 2-core machine wait on each other (see test_models.one_thread).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)

import pytest

SMOL = "smollm2-135m"


# The embedded SmolLM2-135M, its tokenizer and HF transformers' copy of it, loaded once per session and
# shared by every module that runs the real model (each module used to load its own: ~4 s apiece, far
# more on a busy machine). Nothing in the tests changes them: on a CPU no engine switches the model's
# fused kernels on (engine/model_runner.py does so only on a GPU), and the tokenizer is only read.

@pytest.fixture(scope="session")
def smol_model():
    from course_lib.models import load_model
    return load_model(SMOL)                               # float32, CPU


@pytest.fixture(scope="session")
def smol_tokenizer():
    from course_lib.tokenizer import Tokenizer
    return Tokenizer.from_model(SMOL)


@pytest.fixture(scope="session")
def hf_smol():
    from transformers import AutoModelForCausalLM

    from course_lib.models import resolve_model
    return AutoModelForCausalLM.from_pretrained(resolve_model(SMOL).folder, dtype=torch.float32).eval()
