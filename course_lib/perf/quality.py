"""Quality yardsticks that need no download: perplexity on the offline text in data/text/ (Day 18's
quantization, Day 19's KV-cache quantization).

Perplexity is exp(mean negative log-likelihood per token): the model reads the text and pays -log p
for every next token. Lower is better; a change of a few percent after quantization is noticeable in
benchmarks, tens of percent is a broken model.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch.nn import functional as F

TEXT_DIR = Path(__file__).resolve().parents[2] / "data" / "text"


def load_text(name: str = "tempest_act1_scene2.txt") -> str:
    """A text of data/text/ (its README says where each comes from)."""
    path = TEXT_DIR / name
    if not path.is_file():
        raise ValueError(f"name must be one of {sorted(p.name for p in TEXT_DIR.glob('*.txt'))}, got {name!r}")
    return path.read_text(encoding="utf-8")


@torch.inference_mode()
def perplexity(model, ids: list[int], window: int = 512) -> float:
    """exp(mean -log p(token | the tokens before it in its window)) over ``ids[1:]``, in windows of
    ``window`` predicted tokens that each start afresh (no context carried across windows)."""
    if len(ids) < 2:
        raise ValueError(f"ids must hold at least 2 tokens, got {len(ids)}")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be an integer >= 1, got {window!r}")
    nll, count = 0.0, 0
    for start in range(0, len(ids) - 1, window):
        chunk = torch.tensor(ids[start:start + window + 1], device=model.device)[None]
        logits = model(chunk[:, :-1]).float()[0]
        nll += F.cross_entropy(logits, chunk[0, 1:], reduction="sum").item()
        count += chunk.shape[1] - 1
    return math.exp(nll / count)
