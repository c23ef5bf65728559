"""The cost-model protocol: ``cost(plan, hardware) -> CostResult``."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from dlmsearch.cost_models.hardware_spec import HardwareSpec
from dlmsearch.plan import Plan

PROVENANCES: tuple[str, ...] = ("analytic", "measured", "simulated")


@dataclass(frozen=True)
class CostResult:
    """Latency and memory of one Plan on one hardware target.

    ``latency_ms`` is the whole generation (every denoising step of the Plan's sampler);
    ``peak_mem_bytes`` the device memory at the peak; ``provenance`` says where the latency comes
    from (never mix them silently); ``breakdown`` holds named parts in milliseconds or bytes.
    """

    latency_ms: float
    peak_mem_bytes: int
    provenance: str
    breakdown: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.provenance not in PROVENANCES:
            raise ValueError(f"provenance={self.provenance!r}; allowed: {', '.join(PROVENANCES)}")
        if not math.isfinite(self.latency_ms) or self.latency_ms < 0:
            raise ValueError(f"latency_ms={self.latency_ms}: a cost model must return a finite number >= 0")


class BaseCostModel(ABC):
    """Predicts latency and memory of Plans for one model shape.

    Protocol: ``cost`` never touches weights (it reads the Plan and the model's shapes only), is
    deterministic, and is cheap enough to call for every trial before any quality evaluation.
    Units: milliseconds for the whole generation, bytes for memory.
    """

    @abstractmethod
    def cost(self, plan: Plan, hardware: HardwareSpec) -> CostResult:
        """Latency and memory of ``plan`` on ``hardware``."""
