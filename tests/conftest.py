"""Shared test set-up. Runs at import, before any test module imports Triton kernels."""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")   # Triton kernels run on the CPU, slowly
os.environ.setdefault("HF_HUB_OFFLINE", "1")         # a failing hub look-up costs ~50 s
