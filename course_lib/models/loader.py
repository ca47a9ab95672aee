"""Load a Hugging Face-format folder (config.json + one or many *.safetensors) into our modules.

HF checkpoints keep q/k/v and gate/up as separate matrices; we store each group as one fused
matrix (one matmul instead of three), so the loader copies each HF tensor into its slice.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable

import torch

from ..config import ModelConfig
from .llama import LlamaModel

# HF name (after the "model." prefix is dropped) -> (our name, slice index within a fused matrix).
_RENAMES = [
    (r"embed_tokens\.weight", "embed.weight", None),
    (r"norm\.weight", "norm.weight", None),
    (r"lm_head\.weight", "lm_head.weight", None),
    (r"layers\.(\d+)\.input_layernorm\.weight", r"layers.\1.input_norm.weight", None),
    (r"layers\.(\d+)\.post_attention_layernorm\.weight", r"layers.\1.post_attn_norm.weight", None),
    (r"layers\.(\d+)\.self_attn\.q_proj\.(weight|bias)", r"layers.\1.attn.qkv.\2", 0),
    (r"layers\.(\d+)\.self_attn\.k_proj\.(weight|bias)", r"layers.\1.attn.qkv.\2", 1),
    (r"layers\.(\d+)\.self_attn\.v_proj\.(weight|bias)", r"layers.\1.attn.qkv.\2", 2),
    (r"layers\.(\d+)\.self_attn\.o_proj\.(weight|bias)", r"layers.\1.attn.o.\2", None),
    (r"layers\.(\d+)\.self_attn\.q_norm\.weight", r"layers.\1.attn.q_norm.weight", None),
    (r"layers\.(\d+)\.self_attn\.k_norm\.weight", r"layers.\1.attn.k_norm.weight", None),
    (r"layers\.(\d+)\.mlp\.gate_proj\.(weight|bias)", r"layers.\1.mlp.gate_up.\2", 0),
    (r"layers\.(\d+)\.mlp\.up_proj\.(weight|bias)", r"layers.\1.mlp.gate_up.\2", 1),
    (r"layers\.(\d+)\.mlp\.down_proj\.(weight|bias)", r"layers.\1.mlp.down.\2", None),
]


def _our_name(hf_name: str) -> tuple[str, int | None] | None:
    name = hf_name.removeprefix("model.")
    for pattern, target, shard in _RENAMES:
        if re.fullmatch(pattern, name):
            return re.sub(pattern, target, name), shard
    return None


def load_weights(model: LlamaModel, tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
    """Copy (hf_name, tensor) pairs into ``model``; fail if a parameter is left unset or a name is unknown."""
    params = dict(model.named_parameters(remove_duplicate=False))
    sizes = {"qkv": model.layers[0].attn.split,
             "gate_up": (model.cfg.intermediate_size, model.cfg.intermediate_size)}
    unset = set(dict(model.named_parameters()))   # tied weights appear once here
    for hf_name, tensor in tensors:
        mapped = _our_name(hf_name)
        if mapped is None:
            if "rotary_emb" in hf_name:
                continue                           # a buffer some checkpoints carry; we recompute it
            raise ValueError(f"checkpoint tensor {hf_name!r} has no place in {type(model).__name__}")
        name, shard = mapped
        if name == "lm_head.weight" and model.cfg.tie_word_embeddings:
            continue                               # same tensor as embed.weight
        dst = params[name]
        if shard is not None:
            group = sizes["qkv" if ".qkv." in name else "gate_up"]
            start = sum(group[:shard])
            dst = dst.narrow(0, start, group[shard])
        if dst.shape != tensor.shape:
            raise ValueError(f"{hf_name}: checkpoint shape {tuple(tensor.shape)} != model {tuple(dst.shape)}")
        with torch.no_grad():
            dst.copy_(tensor)
        unset.discard(name)
    # A fused matrix is "set" once any slice is; a fully missing group still shows up here.
    if unset:
        raise ValueError(f"checkpoint did not provide: {sorted(unset)[:8]}")


def model_config_from_folder(folder: str | Path) -> ModelConfig:
    """The ModelConfig of an HF folder's config.json; ``ValueError`` naming the file when it is not
    valid JSON or lacks a field."""
    path = Path(folder) / "config.json"
    try:
        cfg = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from None
    return ModelConfig.from_hf(cfg, source=str(path))


def safetensor_files(folder: str | Path) -> list[Path]:
    """The checkpoint files of an HF folder: those a sharded checkpoint's index names, else every
    ``*.safetensors``; ``FileNotFoundError`` naming the folder when there are none."""
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.exists():   # sharded checkpoint: the index maps each tensor to its file
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            names = sorted(set(weight_map.values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ValueError(f"{index} must be JSON with a 'weight_map' of tensor name -> file") from None
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise FileNotFoundError(f"{index} names files missing from {folder}: {missing[:3]}")
        return [folder / n for n in names]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors in {folder}")
    return files


def _iter_safetensors(files: list[Path]):
    from safetensors import safe_open
    for f in files:
        try:
            st = safe_open(str(f), framework="pt")
        except Exception as e:    # safetensors' own error type: a truncated or non-safetensors file
            raise ValueError(f"{f} is not a readable safetensors file ({e})") from None
        with st:
            for name in st.keys():
                yield name, st.get_tensor(name)


def load_model(name_or_path: str, *, device="cpu", dtype=torch.float32,
               random_weights: bool = False, seed: int = 0) -> LlamaModel:
    """Build a model by registry name, local HF folder or hub id, in eval mode on ``device``.

    ``random_weights=True`` builds a known shape with random weights (for speed work: speed does not
    depend on the values) and downloads nothing.
    """
    from .registry import resolve_model
    spec = resolve_model(name_or_path, need_weights=not random_weights)
    with torch.device("meta"):
        model = LlamaModel(spec.config)
    model = model.to_empty(device=device).to(dtype)
    model.tie_weights()                                       # to_empty allocates each name separately
    if random_weights:
        init_random_(model, seed)
    else:
        load_weights(model, _iter_safetensors(safetensor_files(spec.folder)))
    model.source = None if random_weights else str(name_or_path)   # lets LLM(model) find the tokenizer
    return model.eval()


def init_random_(model: LlamaModel, seed: int = 0) -> None:
    """Fill weights with small random values (std 0.02, norms at 1) from a fixed seed."""
    gen = torch.Generator(device=model.device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.normal_(0.0, 0.02, generator=gen)
