"""dlmsearch: hardware-aware search for compressing diffusion language models."""

from dlmsearch.models.adapters import DLMAdapter, LinearInfo, ModelShape
from dlmsearch.models.loading import build_random_model, load_model
from dlmsearch.models.sampler import current_step, generate, infill
from dlmsearch.plan import LayerPlan, ModelRef, Plan, PlanValidationError, SamplerSettings, load_plan, uniform_plan

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
