"""Configuration dataclasses. Each one checks its fields in ``__post_init__`` and names the field,
the value it got and what is allowed, so a learner's typo fails at the line that made it."""
from __future__ import annotations

import functools
import math
import numbers
import reprlib
import warnings
from dataclasses import dataclass, field
from typing import Any


_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlong, _REPR.maxlist, _REPR.maxdict = 60, 60, 60, 8, 4


def show(value: Any) -> str:
    """``repr(value)``, shortened: a message must stay one readable line whatever a user passed."""
    return _REPR.repr(value)


def check(ok: bool, field_name: str, value: Any, allowed: str) -> None:
    """Raise ``ValueError("<field> must be <allowed>, got <value>")`` unless ``ok``."""
    if not ok:
        raise ValueError(f"{field_name} must be {allowed}, got {show(value)}")


def _wrong_type(field_name: str, value: Any, allowed: str) -> TypeError:
    return TypeError(f"{field_name} must be {allowed}, got {show(value)} of type {type(value).__name__}")


def _check_elements(seq: Any, field_name: str, allowed: str, ok) -> None:
    """``seq`` is a list or tuple whose every element passes ``ok``, else ``TypeError`` naming the
    field and the first element that does not."""
    if not isinstance(seq, (list, tuple)):
        raise _wrong_type(field_name, seq, allowed)
    for x in seq:
        if not ok(x):
            raise TypeError(f"{field_name} must be {allowed}, got {show(seq)} (element {show(x)} of type "
                            f"{type(x).__name__})")


def check_int(value: Any, field_name: str, allowed: str) -> int:
    """``value`` as a plain int, else ``TypeError`` naming the field. A bool is not an integer here
    (``n=True`` is a typo, not a count); numpy integers are accepted."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _wrong_type(field_name, value, allowed)
    return int(value)


def check_real(value: Any, field_name: str, allowed: str) -> float:
    """``value`` as a float, else ``TypeError`` naming the field (bools and strings are not numbers
    here); ``ValueError`` for an int too large for a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _wrong_type(field_name, value, allowed)
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{field_name} must be {allowed}, got {show(value)} (too large for a float)") from None


def check_bool(value: Any, field_name: str) -> bool:
    """``value`` if it is a bool, else ``TypeError`` (``ignore_eos="no"`` would be truthy)."""
    if not isinstance(value, bool):
        raise _wrong_type(field_name, value, "True or False")
    return value


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
    def from_hf(cls, cfg: dict, source: str = "config.json") -> "ModelConfig":
        """Read a Hugging Face ``config.json`` dict (transformers 4 or 5 field names).

        A missing or mistyped field raises ``ValueError`` naming the field, ``source`` (the file, when
        the loader read one) and the model_type, rather than a KeyError from the middle of this method.
        """
        if not isinstance(cfg, dict):
            raise ValueError(f"{source} must hold a JSON object, got {show(cfg)}")
        mt = cfg.get("model_type", "llama")
        if not isinstance(mt, str) or mt not in SUPPORTED_MODEL_TYPES:
            raise ValueError(f"model_type must be one of {sorted(SUPPORTED_MODEL_TYPES)}, got {show(mt)} "
                             f"(in {source})")
        where = f"{source} (model_type {mt!r})"
        get = functools.partial(_hf_field, cfg, where)
        heads = get("num_attention_heads", int)
        hidden = get("hidden_size", int)
        check(heads >= 1, f"num_attention_heads in {where}", heads, "a positive integer")
        # transformers 5 moved rope_theta and the scaling dict into one `rope_parameters` dict.
        rope = dict(get("rope_parameters", dict, None) or get("rope_scaling", dict, None) or {})
        theta = rope.pop("rope_theta", None)
        theta = float(get("rope_theta", float, 10000.0) if theta is None else
                      _hf_field(dict(rope_theta=theta), f"rope_parameters of {where}", "rope_theta", float))
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        eos = get("eos_token_id", (int, list), None)
        eos = () if eos is None else tuple(eos) if isinstance(eos, list) else (eos,)
        if not all(type(t) is int for t in eos):
            raise ValueError(f"eos_token_id in {where} must be an integer or a list of integers, "
                             f"got {show(cfg['eos_token_id'])}")
        attention_bias = get("attention_bias", bool, False)
        fields = dict(
            vocab_size=get("vocab_size", int),
            hidden_size=hidden,
            intermediate_size=get("intermediate_size", int),
            num_layers=get("num_hidden_layers", int),
            num_heads=heads,
            num_kv_heads=get("num_key_value_heads", int, heads),
            head_dim=get("head_dim", int, None) or hidden // heads,
            max_position_embeddings=get("max_position_embeddings", int, 2048),
            rms_norm_eps=float(get("rms_norm_eps", float, 1e-6)),
            rope_theta=theta,
            rope_scaling=rope if rope_type != "default" else None,
            tie_word_embeddings=get("tie_word_embeddings", bool, False),
            # Qwen2 always has q/k/v biases; Llama has an optional bias on all four projections.
            qkv_bias=mt == "qwen2" or attention_bias,
            o_bias=mt != "qwen2" and attention_bias,
            mlp_bias=get("mlp_bias", bool, False),
            qk_norm=mt == "qwen3",
            model_type=mt,
            bos_token_id=get("bos_token_id", int, None),
            eos_token_ids=eos,
        )
        try:
            return cls(**fields)
        except ValueError as e:          # ModelConfig's own checks (a divisor, an even head_dim, ...)
            raise ValueError(f"{e} (from {where})") from None


_REQUIRED = object()
_HF_KINDS = {int: "an integer", float: "a number", bool: "true or false", dict: "a JSON object",
             (int, list): "an integer or a list of integers"}


def _hf_field(cfg: dict, where: str, key: str, kind, default=_REQUIRED):
    """``cfg[key]`` checked against ``kind`` (JSON null counts as absent); ``default`` if absent."""
    value = cfg.get(key)
    if value is None:
        if default is _REQUIRED:
            raise ValueError(f"{where} is missing {key!r}, which is required ({_HF_KINDS[kind]})")
        return default
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if float in kinds:
        kinds += (int,)
    if isinstance(value, bool) != (bool in kinds) or not isinstance(value, kinds):
        raise ValueError(f"{key} in {where} must be {_HF_KINDS[kind]}, got {show(value)}")
    return value

SUPPORTED_MODEL_TYPES = {"llama", "qwen2", "qwen3"}


@dataclass
class SamplingParams:
    """How to pick each next token, per request (mirrors ``vllm.SamplingParams``).

    temperature 0 means greedy. ``top_k=-1`` (or 0) and ``top_p=1`` switch those filters off. ``seed``
    makes one request's samples reproducible whatever else shares its batch.

    Penalties (OpenAI's and vLLM's meanings, applied to the raw logits before temperature):
    ``repetition_penalty`` divides a positive logit (multiplies a negative one) of every token already
    in the prompt or the output (1 = off); ``frequency_penalty`` subtracts penalty x count of each
    token in the output so far, ``presence_penalty`` subtracts penalty once per token present in it
    (both in [-2, 2], 0 = off). ``min_tokens``: EOS and ``stop_token_ids`` are masked out, and stop
    strings ignored, until that many tokens exist.

    ``stop``: strings that end the output; found across token boundaries in the detokenized text,
    and cut from the returned text unless ``include_stop_str_in_output``.

    ``logprobs=k`` returns, for every generated token, the log-probabilities of the k most likely
    tokens plus the chosen one (0: the chosen one only; ``True`` is read as 0, ``None``/``False`` as
    none); ``prompt_logprobs=k`` the same for each prompt token after the first. Both are of the
    model's distribution before penalties and filters (vLLM's default, "raw logprobs").

    Every field is checked here, before a request can reach the engine: ``TypeError`` for a wrong
    type (a bool is not a number here, a string is not a number), ``ValueError`` for a value out of
    range, the message naming the field, the value and what is allowed. Numbers are stored as plain
    ``int``/``float``, ``stop_token_ids`` as a list. Token ids are checked against the vocabulary by
    :meth:`check_vocab`, which the engine calls once it knows the model.
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
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    min_tokens: int = 0
    stop: list[str] = field(default_factory=list)
    include_stop_str_in_output: bool = False

    def __post_init__(self):
        self.n = check_int(self.n, "n", "an integer >= 1")
        check(self.n >= 1, "n", self.n, "an integer >= 1")
        self.temperature = self._check_temperature(self.temperature)
        self.top_p = check_real(self.top_p, "top_p", "a number in (0, 1]")
        check(0 < self.top_p <= 1, "top_p", self.top_p, "in (0, 1]")
        self.top_k = check_int(self.top_k, "top_k", "an integer (-1 disables)")
        self.top_k = -1 if self.top_k == 0 else self.top_k      # vLLM accepts both for "off"
        # Above the vocabulary means "no filter"; the cap only keeps the sampler's int64 tensor safe.
        check(self.top_k == -1 or 1 <= self.top_k <= MAX_TOP_K, "top_k", self.top_k,
              f"-1 (disabled) or an integer >= 1 (at most {MAX_TOP_K}; 0 also disables)")
        self.min_p = check_real(self.min_p, "min_p", "a number in [0, 1]")
        check(0 <= self.min_p <= 1, "min_p", self.min_p, "in [0, 1]")
        self.max_tokens = check_int(self.max_tokens, "max_tokens", "an integer >= 1")
        check(self.max_tokens >= 1, "max_tokens", self.max_tokens, "an integer >= 1")
        check_bool(self.ignore_eos, "ignore_eos")
        self.stop_token_ids = self._check_stop_token_ids(self.stop_token_ids)
        if self.seed is not None:     # the sampler hashes both 32-bit halves of a 64-bit seed
            self.seed = check_int(self.seed, "seed", "None or an integer in [0, 2**64 - 1]")
            check(0 <= self.seed <= MAX_SEED, "seed", self.seed, "None or an integer in [0, 2**64 - 1]")
        self.logprobs = self._check_logprobs(self.logprobs, "logprobs")
        self.prompt_logprobs = self._check_logprobs(self.prompt_logprobs, "prompt_logprobs")
        for name in ("presence_penalty", "frequency_penalty"):
            value = check_real(getattr(self, name), name, "a number in [-2, 2]")
            check(-2 <= value <= 2, name, value, "in [-2, 2]")
            setattr(self, name, value)
        allowed = "a number > 0 (1 means no penalty)"
        self.repetition_penalty = check_real(self.repetition_penalty, "repetition_penalty", allowed)
        check(0 < self.repetition_penalty < math.inf, "repetition_penalty", self.repetition_penalty,
              allowed + " and finite")
        allowed = f"an integer in [0, max_tokens={self.max_tokens}]"
        self.min_tokens = check_int(self.min_tokens, "min_tokens", allowed)
        check(0 <= self.min_tokens <= self.max_tokens, "min_tokens", self.min_tokens, allowed)
        self.stop = self._check_stop(self.stop)
        check_bool(self.include_stop_str_in_output, "include_stop_str_in_output")

    @staticmethod
    def _check_logprobs(value, name: str) -> int | None:
        """None/False: none; True: the chosen token's only (0); k >= 0: the top k and the chosen one."""
        if value is None or value is False:
            return None
        if value is True:
            return 0
        allowed = "None, True/False or an integer >= 0"
        value = check_int(value, name, allowed)
        check(value >= 0, name, value, allowed)
        return value

    @staticmethod
    def _check_stop(stop) -> list[str]:
        allowed = "None, a non-empty string or a list of non-empty strings"
        if stop is None:
            return []
        if isinstance(stop, str):
            stop = [stop]
        _check_elements(stop, "stop", allowed, lambda s: isinstance(s, str))
        check(all(stop), "stop", stop, allowed)
        return list(stop)

    @staticmethod
    def _check_temperature(t) -> float:
        allowed = "a number >= 0 (0 means greedy)"
        t = check_real(t, "temperature", allowed)
        check(t >= 0, "temperature", t, allowed)                  # nan fails here too
        check(math.isfinite(t), "temperature", t, allowed + " and finite")
        if 0 < t < MIN_TEMPERATURE:
            # logits / 1e-39 overflow to inf and softmax gives NaN; vLLM raises such values the same way.
            warnings.warn(f"temperature={t!r} is below {MIN_TEMPERATURE}, which gives inf/NaN "
                          f"probabilities; using temperature={MIN_TEMPERATURE} (0 means greedy)",
                          stacklevel=4)
            t = MIN_TEMPERATURE
        return t

    @staticmethod
    def _check_stop_token_ids(ids) -> list[int]:
        allowed = "None or a list of token ids (integers >= 0)"
        if ids is None:
            return []
        _check_elements(ids, "stop_token_ids", allowed,
                        lambda t: not isinstance(t, bool) and isinstance(t, numbers.Integral))
        check(all(t >= 0 for t in ids), "stop_token_ids", ids, allowed)
        return [int(t) for t in ids]

    def check_vocab(self, vocab_size: int) -> None:
        """Token ids against the model's vocabulary: ``ValueError`` naming the field. The engine calls
        this when a request arrives (SamplingParams alone cannot know the vocabulary)."""
        bad = [t for t in self.stop_token_ids if t >= vocab_size]
        if bad:
            raise ValueError(f"stop_token_ids must be token ids in [0, {vocab_size}), got {show(bad)}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def has_penalties(self) -> bool:
        return self.presence_penalty != 0 or self.frequency_penalty != 0 or self.repetition_penalty != 1


MIN_TEMPERATURE = 1e-2      # vLLM's _MAX_TEMP: smaller positive temperatures are raised to it
MAX_TOP_K = 2**31 - 1
MAX_SEED = 2**64 - 1


@dataclass
class EngineConfig:
    """Knobs of the serving engine (vLLM's names). Every optimisation can be switched off here.

    The token budget ``max_num_batched_tokens`` bounds the tokens one step computes; with
    ``enable_chunked_prefill`` a prompt longer than what is left of it runs over several steps
    (Day 13), without it a prompt must fit one step. ``preemption_mode`` says what happens to a
    sequence pushed out when KV blocks run out (Day 12): "recompute" drops its KV and computes it
    again later, "swap" copies its blocks to ``swap_space`` GiB of host memory and back.
    ``enable_prefix_caching`` (Day 15) keeps the K/V of every full block findable by its content,
    so a request whose prompt starts like an earlier one computes only the rest. Off by default here
    (vLLM turns it on): the days before 15 measure the engine without it. ``scheduling_policy``
    orders the waiting queue: "fcfs" (arrival order) or "lpm" (Day 16, SGLang's longest prefix
    match: the requests with the most cached tokens first; needs prefix caching).
    ``kv_cache_dtype`` (Day 19, vLLM's name): "auto" stores K/V in the model's dtype; "fp8" (=
    "fp8_e4m3") or "fp8_e5m2" stores them in one byte, with vLLM's default scale of 1 (values beyond
    the format's range saturate), so the same memory holds 2x (bf16) or 4x (fp32) the tokens.
    """
    scheduler: str = "continuous"
    max_num_seqs: int = 32
    max_num_batched_tokens: int = 4096
    enable_chunked_prefill: bool = True
    block_size: int = 16
    num_kv_blocks: int | None = None
    kv_memory_gb: float | None = None
    preemption_mode: str = "recompute"
    swap_space: float = 4.0           # GiB of host memory for swapped-out blocks (only with "swap")
    watermark: float = 0.01           # fraction of blocks kept free when admitting, for decodes
    enable_prefix_caching: bool = False
    scheduling_policy: str = "fcfs"
    kv_cache_dtype: str = "auto"
    attention_backend: str = "auto"
    cuda_graphs: bool = True          # replay captured decode steps on CUDA (no effect on CPU)
    # The most tokens a captured mixed step (decodes + prompt chunks) holds; larger steps run
    # eagerly (vLLM's max_cudagraph_capture_size; vLLM stops at 512). Token buckets are 16, 32, ...,
    # 512, then 768, 1024, 1536, 2048, 3072, 4096, ... up to this (and to max_num_batched_tokens).
    # 4096, not 512: an eager step costs ~9 ms of host time here, and on the Anyscale cap-128 study
    # (H200, llama-3.2-1b, 64 slots) continuous went from 11,704 tok/s at 512 to 18,083 at 4096.
    max_cudagraph_capture_size: int = 4096
    # Launch step t+1 before reading step t's tokens back, so the host's scheduling overlaps the GPU's
    # work (Day 14). None: on for CUDA, off on CPU (where nothing runs asynchronously anyway).
    async_scheduling: bool | None = None
    step_log_size: int = 10_000       # steps kept in LLMEngine.step_log (up to twice this; oldest dropped)
    max_logprobs: int = 20            # the largest SamplingParams.logprobs / prompt_logprobs (vLLM's default)

    def __post_init__(self):
        check(self.scheduler in SCHEDULERS, "scheduler", self.scheduler, f"one of {SCHEDULERS}")
        for name in ("max_num_seqs", "max_num_batched_tokens", "block_size"):
            check(is_int(getattr(self, name)) and getattr(self, name) >= 1, name, getattr(self, name),
                  "an integer >= 1")
        check(self.num_kv_blocks is None or (is_int(self.num_kv_blocks) and self.num_kv_blocks >= 1),
              "num_kv_blocks", self.num_kv_blocks, "None (size from kv_memory_gb) or an integer >= 1")
        check(self.kv_memory_gb is None or (is_real(self.kv_memory_gb) and 0 < self.kv_memory_gb < math.inf),
              "kv_memory_gb", self.kv_memory_gb, "None or a positive number of GiB")
        check(self.preemption_mode in PREEMPTION_MODES, "preemption_mode", self.preemption_mode,
              f"one of {PREEMPTION_MODES}")
        check(is_real(self.swap_space) and 0 <= self.swap_space < math.inf, "swap_space",
              self.swap_space, "a number of GiB >= 0")
        check(is_real(self.watermark) and 0 <= self.watermark < 1, "watermark", self.watermark,
              "a fraction in [0, 1)")
        check(self.scheduling_policy in SCHEDULING_POLICIES, "scheduling_policy", self.scheduling_policy,
              f"one of {SCHEDULING_POLICIES}")
        check(self.scheduling_policy != "lpm" or self.enable_prefix_caching is True, "scheduling_policy",
              self.scheduling_policy, "'fcfs' unless enable_prefix_caching=True ('lpm' ranks requests by "
              "their cached prefix)")
        check(self.kv_cache_dtype in KV_CACHE_DTYPES, "kv_cache_dtype", self.kv_cache_dtype,
              f"one of {tuple(KV_CACHE_DTYPES)}")
        check(self.attention_backend in ATTENTION_BACKENDS, "attention_backend",
              self.attention_backend, f"one of {ATTENTION_BACKENDS}")
        check(is_int(self.max_cudagraph_capture_size) and self.max_cudagraph_capture_size >= 16,
              "max_cudagraph_capture_size", self.max_cudagraph_capture_size, "an integer >= 16")
        for name in ("enable_chunked_prefill", "cuda_graphs", "enable_prefix_caching"):
            check(type(getattr(self, name)) is bool, name, getattr(self, name), "True or False")
        check(self.async_scheduling is None or type(self.async_scheduling) is bool, "async_scheduling",
              self.async_scheduling, "None (auto), True or False")
        check(is_int(self.step_log_size) and self.step_log_size >= 0, "step_log_size",
              self.step_log_size, "an integer >= 0")
        check(is_int(self.max_logprobs) and self.max_logprobs >= 0, "max_logprobs", self.max_logprobs,
              "an integer >= 0")


def is_int(x) -> bool:
    """An integer, and not a bool (True is an int to Python, never a size to us)."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def is_real(x) -> bool:
    """A real number, not a bool and not NaN."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and not math.isnan(x)


SCHEDULERS = ("continuous", "static")
SCHEDULING_POLICIES = ("fcfs", "lpm")
PREEMPTION_MODES = ("recompute", "swap")
ATTENTION_BACKENDS = ("auto", "torch", "triton")
# EngineConfig.kv_cache_dtype -> the cache's torch dtype (None: the model's)
KV_CACHE_DTYPES = {"auto": None, "fp8": "float8_e4m3fn", "fp8_e4m3": "float8_e4m3fn", "fp8_e5m2": "float8_e5m2"}


def kv_cache_torch_dtype(name: str, model_dtype):
    """The dtype K/V are stored in for ``EngineConfig.kv_cache_dtype`` = ``name``."""
    import torch
    return model_dtype if KV_CACHE_DTYPES[name] is None else getattr(torch, KV_CACHE_DTYPES[name])
