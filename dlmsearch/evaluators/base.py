"""The evaluator protocol: ``evaluate(plan, fidelity) -> QualityResult``."""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dlmsearch.plan import Plan

FIDELITIES: tuple[str, ...] = ("low", "full")


@dataclass(frozen=True)
class QualityResult:
    """Quality of one Plan: ``score`` is what the search minimises (lower is better, 0 = the dense model).

    ``metrics`` holds the named parts of the score and diagnostics, all floats; ``fidelity`` says
    which budget produced it.
    """

    score: float
    metrics: dict[str, float] = field(default_factory=dict)
    fidelity: str = "full"

    def __post_init__(self) -> None:
        if not math.isfinite(self.score):
            raise ValueError(f"quality score is {self.score}; an evaluator must return a finite number")


class BaseEvaluator(ABC):
    """Scores the quality of Plans for one model.

    Protocol:

    - ``evaluate(plan, fidelity)`` never changes the evaluator's model: it compresses a copy.
    - Deterministic: the same Plan and fidelity give the same score bit for bit in one process
      (fixed seeds for every mask draw and generation), and within 1e-6 in a fresh one.
    - ``fidelity="low"`` is much cheaper and ranks Plans like ``"full"``; the search uses it to
      drop clearly bad Plans early.
    - Units: scores are in nats per token (KL or NLL gaps); lower is better.
    """

    @abstractmethod
    def evaluate(self, plan: Plan, fidelity: str = "full") -> QualityResult:
        """Quality of ``plan`` at ``fidelity`` (one of :data:`FIDELITIES`)."""


def check_fidelity(fidelity: str) -> str:
    """``fidelity`` if it is known, else a ValueError naming the allowed values."""
    if fidelity not in FIDELITIES:
        raise ValueError(f"fidelity={fidelity!r}; allowed: {', '.join(FIDELITIES)}")
    return fidelity


def settings_with(cls: Any, assignments: Sequence[str], base: Any = None) -> Any:
    """``base`` (default ``cls()``, an evaluator settings dataclass) with ``KEY=VALUE`` overrides, each
    converted to the field's type; a ValueError names a bad key or value and what is allowed."""
    defaults = cls() if base is None else base
    types = {f.name: type(getattr(defaults, f.name)) for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or key not in types:
            raise ValueError(f"--set {item!r}: allowed: KEY=VALUE with KEY one of {', '.join(sorted(types))}")
        try:
            values[key] = types[key](raw)
        except ValueError:
            kind = {int: "an integer", float: "a number"}.get(types[key], types[key].__name__)
            raise ValueError(f"--set {key}={raw!r}: must be {kind}") from None
    return dataclasses.replace(defaults, **values)
