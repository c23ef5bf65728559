"""dlmsearch: hardware-aware search for compressing diffusion language models.

The names below load on first use (PEP 562), so ``import dlmsearch.plan`` stays free of torch
and transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dlmsearch.models.adapters import DLMAdapter, LinearInfo, ModelShape
    from dlmsearch.models.loading import build_random_model, load_model
    from dlmsearch.models.sampler import current_step, generate, infill
    from dlmsearch.plan import (
        LayerPlan,
        ModelRef,
        Plan,
        PlanValidationError,
        SamplerSettings,
        load_plan,
        uniform_plan,
    )

_HOMES = {
    "dlmsearch.models.adapters": ("DLMAdapter", "LinearInfo", "ModelShape"),
    "dlmsearch.models.loading": ("build_random_model", "load_model"),
    "dlmsearch.models.sampler": ("current_step", "generate", "infill"),
    "dlmsearch.plan": ("LayerPlan", "ModelRef", "Plan", "PlanValidationError", "SamplerSettings", "load_plan",
                       "uniform_plan"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [
    "DLMAdapter",
    "LayerPlan",
    "LinearInfo",
    "ModelRef",
    "ModelShape",
    "Plan",
    "PlanValidationError",
    "SamplerSettings",
    "build_random_model",
    "current_step",
    "generate",
    "infill",
    "load_model",
    "load_plan",
    "uniform_plan",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name not in _HOME_OF:
        raise AttributeError(f"module 'dlmsearch' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME_OF[name]), name)
    globals()[name] = value
    return value
