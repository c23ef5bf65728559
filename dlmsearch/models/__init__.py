"""DLM adapters, the embedded default model, its training script and the denoising sampler."""

from dlmsearch.models.adapters import DLMAdapter, LlamaAdapter, Qwen2Adapter, RemoteCodeAdapter
from dlmsearch.models.loading import build_random_model, load_model
from dlmsearch.models.sampler import DenoisingStep, current_step, denoising_step, generate, infill

__all__ = [
    "DLMAdapter",
    "DenoisingStep",
    "LlamaAdapter",
    "Qwen2Adapter",
    "RemoteCodeAdapter",
    "build_random_model",
    "current_step",
    "denoising_step",
    "generate",
    "infill",
    "load_model",
]
