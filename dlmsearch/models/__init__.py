"""DLM adapters, the embedded default model, its training script and the denoising sampler.

The names below load on first use (PEP 562), so the torch-free ``dlmsearch.models.sampler_rules``
imports without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dlmsearch.models.adapters import DLMAdapter, LlamaAdapter, Qwen2Adapter, RemoteCodeAdapter
    from dlmsearch.models.loading import build_random_model, load_model
    from dlmsearch.models.sampler import DenoisingStep, current_step, denoising_step, generate, infill

_HOMES = {
    "dlmsearch.models.adapters": ("DLMAdapter", "LlamaAdapter", "Qwen2Adapter", "RemoteCodeAdapter"),
    "dlmsearch.models.loading": ("build_random_model", "load_model"),
    "dlmsearch.models.sampler": ("DenoisingStep", "current_step", "denoising_step", "generate", "infill"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

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


def __getattr__(name: str) -> Any:
    if name not in _HOME_OF:
        raise AttributeError(f"module 'dlmsearch.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME_OF[name]), name)
    globals()[name] = value
    return value
