"""course_lib: the inference engine behind "30 Days of LLM Inference".

Lower layers never import higher ones: models and layers know nothing of the scheduler, the scheduler
knows nothing of Triton. Heavy imports (transformers, triton) happen only where they are used.
"""
from .config import EngineConfig, ModelConfig, SamplingParams
from .engine.beam_search import BeamSearchParams
from .engine.llm import LLM
from .engine.llm_engine import LLMEngine
from .engine.outputs import CompletionOutput, RequestOutput
from .models import load_model
from .tokenizer import Tokenizer

__all__ = ["LLM", "LLMEngine", "SamplingParams", "BeamSearchParams", "EngineConfig", "ModelConfig", "RequestOutput",
           "CompletionOutput", "load_model", "Tokenizer"]
__version__ = "0.1.0"
