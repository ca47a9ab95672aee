"""Model implementations (one family per file), the HF-folder loader and the registry of names."""
from .llama import LlamaModel
from .loader import load_model, load_weights, model_config_from_folder
from .registry import KNOWN_MODELS, resolve_model

__all__ = ["LlamaModel", "load_model", "load_weights", "model_config_from_folder", "KNOWN_MODELS",
           "resolve_model"]
