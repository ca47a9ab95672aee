"""Named models. Each name carries its shape (so speed work can build it with random weights and no
download) and where real weights come from: the embedded offline copy, or a hub id for learners online."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..config import ModelConfig


@dataclass(frozen=True)
class ModelSpec:
    name: str
    config: ModelConfig
    folder: str | None          # HF-format folder with weights and tokenizer, when weights were asked for


_SMOLLM2 = dict(model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536,
                num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, head_dim=64,
                max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=100000.0,
                tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
_QWEN3_06B = dict(model_type="qwen3", vocab_size=151936, hidden_size=1024, intermediate_size=3072,
                  num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                  max_position_embeddings=40960, rms_norm_eps=1e-6, rope_theta=1000000.0,
                  tie_word_embeddings=True, bos_token_id=151643, eos_token_id=151645)
_LLAMA32_1B = dict(model_type="llama", vocab_size=128256, hidden_size=2048, intermediate_size=8192,
                   num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8, head_dim=64,
                   max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0,
                   rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0,
                                     high_freq_factor=4.0, original_max_position_embeddings=8192),
                   tie_word_embeddings=True, bos_token_id=128000, eos_token_id=128001)

# name -> (HF config dict, hub id, has an offline embedded copy)
KNOWN_MODELS: dict[str, tuple[dict, str, bool]] = {
    "smollm2-135m": (_SMOLLM2, "HuggingFaceTB/SmolLM2-135M-Instruct", True),
    "qwen3-0.6b": (_QWEN3_06B, "Qwen/Qwen3-0.6B", False),
    "llama-3.2-1b": (_LLAMA32_1B, "meta-llama/Llama-3.2-1B-Instruct", False),
}
DEFAULT_MODEL = "smollm2-135m"


def _allowed() -> str:
    return (f"model must be one of {sorted(KNOWN_MODELS)}, a local folder holding config.json and "
            f"*.safetensors, or a hub id such as 'HuggingFaceTB/SmolLM2-135M-Instruct'")


def _unknown(name) -> ValueError:
    from ..config import show
    return ValueError(f"{_allowed()}; got {show(name)}")


def _from_hub(hub_id: str) -> str:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        raise ValueError(f"model {hub_id!r} is not a local folder, so it would be downloaded from the "
                         f"hub, but HF_HUB_OFFLINE is set; use the embedded model {DEFAULT_MODEL!r} or a "
                         f"local folder")
    from huggingface_hub import snapshot_download
    try:
        return snapshot_download(hub_id, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model",
                                                         "*.jinja"])
    except Exception as e:     # no such repo, gated, no network: one line naming the model, not a traceback
        first = (str(e).strip().splitlines() or [""])[0]
        raise ValueError(f"model {hub_id!r}: the hub download failed ({type(e).__name__}: {first})") from None


# Any one of these lets transformers' AutoTokenizer build a tokenizer (fast, sentencepiece, BPE, tiktoken).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tiktoken.model")


def check_tokenizer_files(folder: str | Path) -> None:
    """``FileNotFoundError`` naming the folder when it holds no tokenizer (AutoTokenizer would blame
    a missing sentencepiece instead)."""
    folder = Path(folder)
    if not any((folder / f).exists() for f in TOKENIZER_FILES) and not any(folder.glob("*.tiktoken")):
        raise FileNotFoundError(f"no tokenizer files in {folder} (looked for {', '.join(TOKENIZER_FILES)})")


HUB_ID = r"[\w-][\w.-]*/[\w-][\w.-]*"     # owner/name; hub names never start with a dot


def _looks_like_path(name: str) -> bool:
    """A name meant as a folder: starts with . / ~, or has a separator but is not a hub id's owner/name."""
    seps = tuple({"/", os.sep, os.altsep} - {None})
    return name.startswith((".", "~") + seps) or (
        any(s in name for s in seps) and not re.fullmatch(HUB_ID, name))


def resolve_model(name_or_path: str, need_weights: bool = True) -> ModelSpec:
    """Turn a registry name, a folder or a hub id into a config and (if ``need_weights``) a folder."""
    if not isinstance(name_or_path, (str, Path)) or not str(name_or_path).strip():
        raise _unknown(name_or_path)
    name = str(name_or_path)
    if name in KNOWN_MODELS:
        hf_cfg, hub_id, embedded = KNOWN_MODELS[name]
        if not need_weights:
            return ModelSpec(name, ModelConfig.from_hf(hf_cfg), None)
        if embedded:
            from .embedded import ensure_embedded_model
            folder = ensure_embedded_model(name)
        else:
            folder = _from_hub(hub_id)
        return ModelSpec(name, ModelConfig.from_hf(hf_cfg), str(folder))
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ValueError(f"model folder {name!r} has no config.json")
        from .loader import model_config_from_folder, safetensor_files
        config = model_config_from_folder(path)
        if need_weights:
            safetensor_files(path)         # "no *.safetensors in <folder>" before any tokenizer loads
        return ModelSpec(path.name, config, str(path))
    if _looks_like_path(name):
        what = "is a file, not a folder" if path.exists() else "does not exist (no such folder)"
        raise ValueError(f"model folder {name!r} {what}; {_allowed()}")
    if re.fullmatch(HUB_ID, name):
        folder = _from_hub(name)
        from .loader import model_config_from_folder
        return ModelSpec(name, model_config_from_folder(folder), folder)
    raise _unknown(name)
