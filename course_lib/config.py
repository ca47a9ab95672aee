"""Configuration dataclasses. Each one checks its fields in ``__post_init__`` and names the field,
the value it got and what is allowed, so a learner's typo fails at the line that made it."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any


def check(ok: bool, field_name: str, value: Any, allowed: str) -> None:
    """Raise ``ValueError("<field> must be <allowed>, got <value>")`` unless ``ok``."""
    if not ok:
        raise ValueError(f"{field_name} must be {allowed}, got {value!r}")


def check_prompt_ids(ids, vocab_size: int) -> list[int]:
    """The one check of a token-id prompt (used by generate and by the engine): non-empty, integers
    (bools excluded) in [0, vocab_size). Returns the ids as plain ints."""
    ids = list(ids)
    if not ids:
        raise ValueError("prompt must be a non-empty string or a non-empty list of token ids, got []")
    if all(type(t) is int for t in ids) and 0 <= min(ids) and max(ids) < vocab_size:
        return ids                     # the common case, checked in C-speed passes (long prompts)
    bad = [t for t in ids if not isinstance(t, numbers.Integral) or isinstance(t, bool)
           or not 0 <= t < vocab_size]
    if bad:
        raise ValueError(f"prompt token ids must be integers in [0, {vocab_size}), got {bad[:5]}")
    return [int(t) for t in ids]


@dataclass
class ModelConfig:
    """The shape of a Llama-family decoder (SmolLM2, Llama 3, Qwen2, Qwen3).

    Built from a Hugging Face ``config.json`` with :meth:`from_hf`. The only differences between the
    families are flags here: ``qkv_bias`` (Qwen2), ``qk_norm`` (Qwen3), ``rope_scaling`` (Llama 3),
    ``tie_word_embeddings`` (small models share the embedding and the LM head).
    """
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    model_type: str = "llama"
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                     "num_kv_heads", "head_dim", "max_position_embeddings"):
            check(getattr(self, name) >= 1, name, getattr(self, name), "a positive integer")
        check(self.num_heads % self.num_kv_heads == 0, "num_kv_heads", self.num_kv_heads,
              f"a divisor of num_heads={self.num_heads}")
        check(self.head_dim % 2 == 0, "head_dim", self.head_dim, "even (RoPE rotates pairs)")

    @property
    def num_params(self) -> int:
        """Parameter count, from the shapes alone (the LM head counted once when tied)."""
        d, f, L = self.hidden_size, self.intermediate_size, self.num_layers
        q, kv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        attn = d * (q + 2 * kv) + q * d
        per_layer = attn + 3 * d * f + 2 * d + (2 * self.head_dim if self.qk_norm else 0)
        head = 0 if self.tie_word_embeddings else self.vocab_size * d
        return self.vocab_size * d + L * per_layer + d + head

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """K and V for every layer: 2 * layers * kv_heads * head_dim * dtype_bytes."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * dtype_bytes

    @classmethod
    def from_hf(cls, cfg: dict) -> "ModelConfig":
        """Read a Hugging Face ``config.json`` dict (transformers 4 or 5 field names)."""
        mt = cfg.get("model_type", "llama")
        if mt not in SUPPORTED_MODEL_TYPES:
            raise ValueError(f"model_type must be one of {sorted(SUPPORTED_MODEL_TYPES)}, got {mt!r}")
        heads = cfg["num_attention_heads"]
        # transformers 5 moved rope_theta and the scaling dict into one `rope_parameters` dict.
        rope = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
        theta = rope.pop("rope_theta", None) or cfg.get("rope_theta", 10000.0)
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        eos = cfg.get("eos_token_id")
        eos = () if eos is None else tuple(eos) if isinstance(eos, list) else (eos,)
        return cls(
            vocab_size=cfg["vocab_size"],
            hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"],
            num_layers=cfg["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=cfg.get("num_key_value_heads") or heads,
            head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
            max_position_embeddings=cfg.get("max_position_embeddings", 2048),
            rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
            rope_theta=float(theta),
            rope_scaling=rope if rope_type != "default" else None,
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            # Qwen2 always has q/k/v biases; Llama has an optional bias on all four projections.
            qkv_bias=mt == "qwen2" or bool(cfg.get("attention_bias", False)),
            o_bias=mt != "qwen2" and bool(cfg.get("attention_bias", False)),
            mlp_bias=bool(cfg.get("mlp_bias", False)),
            qk_norm=mt == "qwen3",
            model_type=mt,
            bos_token_id=cfg.get("bos_token_id"),
            eos_token_ids=eos,
        )


SUPPORTED_MODEL_TYPES = {"llama", "qwen2", "qwen3"}


@dataclass
class SamplingParams:
    """How to pick each next token, per request (mirrors ``vllm.SamplingParams``).

    temperature 0 means greedy. ``top_k=-1`` and ``top_p=1`` switch those filters off. ``seed`` makes
    one request's samples reproducible whatever else shares its batch.
    """
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    min_p: float = 0.0
    max_tokens: int = 16
    ignore_eos: bool = False
    stop_token_ids: list[int] = field(default_factory=list)
    seed: int | None = None
    logprobs: bool = False

    def __post_init__(self):
        check(isinstance(self.n, int) and self.n >= 1, "n", self.n, "an integer >= 1")
        t = self.temperature
        check(isinstance(t, (int, float)) and not math.isnan(t) and t >= 0, "temperature", t,
              "a number >= 0 (0 means greedy)")
        check(0 < self.top_p <= 1, "top_p", self.top_p, "in (0, 1]")
        check(isinstance(self.top_k, int) and (self.top_k == -1 or self.top_k >= 1), "top_k",
              self.top_k, "-1 (disabled) or an integer >= 1")
        check(0 <= self.min_p <= 1, "min_p", self.min_p, "in [0, 1]")
        check(isinstance(self.max_tokens, int) and self.max_tokens >= 1, "max_tokens",
              self.max_tokens, "an integer >= 1")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class EngineConfig:
    """Knobs of the serving engine (Days 4-5). Every optimisation can be switched off here."""
    scheduler: str = "continuous"
    max_num_seqs: int = 32
    max_num_batched_tokens: int = 4096
    block_size: int = 16
    num_kv_blocks: int | None = None
    kv_memory_gb: float | None = None
    attention_backend: str = "auto"
    cuda_graphs: bool = True          # replay captured decode steps on CUDA (no effect on CPU)
    # Launch step t+1 before reading step t's tokens back, so the host's scheduling overlaps the GPU's
    # work (Day 14). None: on for CUDA, off on CPU (where nothing runs asynchronously anyway).
    async_scheduling: bool | None = None

    def __post_init__(self):
        check(self.scheduler in SCHEDULERS, "scheduler", self.scheduler, f"one of {SCHEDULERS}")
        check(self.max_num_seqs >= 1, "max_num_seqs", self.max_num_seqs, "an integer >= 1")
        check(self.max_num_batched_tokens >= 1, "max_num_batched_tokens",
              self.max_num_batched_tokens, "an integer >= 1")
        check(self.block_size >= 1, "block_size", self.block_size, "an integer >= 1")
        check(self.num_kv_blocks is None or self.num_kv_blocks >= 1, "num_kv_blocks",
              self.num_kv_blocks, "None (size from kv_memory_gb) or an integer >= 1")
        check(self.kv_memory_gb is None or self.kv_memory_gb > 0, "kv_memory_gb", self.kv_memory_gb,
              "None or a positive number of GiB")
        check(self.attention_backend in ATTENTION_BACKENDS, "attention_backend",
              self.attention_backend, f"one of {ATTENTION_BACKENDS}")


SCHEDULERS = ("continuous", "static")
ATTENTION_BACKENDS = ("auto", "torch", "triton")
