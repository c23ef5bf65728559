"""Measurements of front Plans on a real machine, kept in the study beside the search's predictions.

The search predicts (analytic latency, proxy quality); ``dlmsearch measure`` (and the end of
``dlmsearch demo``) applies one Plan, times it beside the dense model, scores it with the full
evaluator and makes it write text (:mod:`dlmsearch.search.validation`). The result is stored as the
study user attribute ``dlmsearch.measured.<trial number>`` (plain JSON, never pickled), so ``pareto``,
the report and a colleague's copy of the study see what the Plan did on which machine. This module
holds only the records and their storage: it imports neither torch nor the evaluators.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import optuna

from dlmsearch.search.attributes import MEASURED_PREFIX


@dataclass(frozen=True)
class PlanValidation:
    """A Plan measured beside the dense Plan: ``generate`` timings (ms) of interleaved rounds, full
    evaluator scores (the dense Plan's is 0 at one token per step), the Plan's ``distinct4_ratio``, the
    shares of prompted rows that collapsed (the Plan's, and the dense model's at one token per step)
    and a generation of each from the same prompts."""

    dense_times_ms: tuple[float, ...]
    plan_times_ms: tuple[float, ...]
    plan_score: float
    dense_score: float
    distinct4_ratio: float
    collapsed_rows: float
    dense_collapsed_rows: float
    prompts: tuple[str, ...]
    dense_texts: tuple[str, ...]  # one per prompt
    plan_texts: tuple[str, ...]

    @property
    def dense_ms(self) -> float:
        """Median time of one dense ``generate`` call."""
        return statistics.median(self.dense_times_ms)

    @property
    def plan_ms(self) -> float:
        """Median time of one ``generate`` call of the compressed model."""
        return statistics.median(self.plan_times_ms)

    @property
    def rounds(self) -> int:
        """Timed calls of each model."""
        return len(self.plan_times_ms)

    @property
    def speedup(self) -> float:
        """Dense time over the Plan's time (above 1: the Plan is faster)."""
        return self.dense_ms / self.plan_ms

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data."""
        return {**asdict(self), **{name: list(getattr(self, name)) for name in (
            "dense_times_ms", "plan_times_ms", "prompts", "dense_texts", "plan_texts")}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PlanValidation:
        """Read back :meth:`to_json`'s data."""
        return cls(tuple(float(v) for v in data["dense_times_ms"]), tuple(float(v) for v in data["plan_times_ms"]),
                   float(data["plan_score"]), float(data["dense_score"]), float(data["distinct4_ratio"]),
                   float(data["collapsed_rows"]), float(data["dense_collapsed_rows"]),
                   *(_texts(data, name) for name in ("prompts", "dense_texts", "plan_texts")))


def _texts(data: Mapping[str, Any], name: str) -> tuple[str, ...]:
    """A list of texts, or the single text that records of the first release kept (``prompt`` for
    ``prompts``, ``dense_text`` for ``dense_texts``, ...)."""
    if name in data:
        return tuple(str(text) for text in data[name])
    return (str(data[name[:-1]]),)


@dataclass(frozen=True)
class BudgetCheck:
    """One latency limit of the study's budget against what was measured (same units: ms, or a share
    of the dense model's time for ``latency_fraction``): the median over the timed rounds and the
    lowest and highest round, which say how far the machine's own drift reaches."""

    name: str  # the budget field: latency_ms, latency_per_step_ms or latency_fraction
    limit: float
    measured: float  # the median
    lowest: float = math.nan
    highest: float = math.nan

    @property
    def met(self) -> bool:
        """Whether the median is within the limit."""
        return self.measured <= self.limit

    @property
    def within_spread(self) -> bool:
        """Whether the limit lies between the lowest and the highest round (drift could decide it)."""
        return self.lowest <= self.limit <= self.highest

    def describe(self) -> str:
        """``latency_fraction <= 0.45: measured 0.4516 (rounds 0.44-0.46), over by 0.4%, within the rounds' spread``."""
        rounds = f" (rounds {self.lowest:.4g}-{self.highest:.4g})" if not math.isnan(self.lowest) else ""
        if self.met:
            verdict = "met"
        else:
            verdict = f"over by {100 * (self.measured / self.limit - 1):.1f}%" + (
                ", within the rounds' spread" if self.within_spread else ", NOT met")
        return f"{self.name} <= {self.limit:.4g}: measured {self.measured:.4g}{rounds}, {verdict}"


@dataclass(frozen=True)
class Measurement:
    """One front Plan measured on one machine, beside what the search predicted for it."""

    trial: int
    check: PlanValidation
    predicted_ms: float  # the trial's latency_ms objective (the study's cost model)
    predicted_dense_ms: float  # the same cost model's latency of the study's dense Plan
    hardware: str  # the study's hardware target
    machine: dict[str, str] = field(default_factory=dict)  # where it was measured: host, device, threads, torch
    settings: dict[str, Any] = field(default_factory=dict)  # the FullSettings overrides of the score
    budget: tuple[BudgetCheck, ...] = ()  # the budget's latency limits, measured (only where hardware is local)

    @property
    def predicted_speedup(self) -> float:
        """The cost model's dense latency over the Plan's."""
        return self.predicted_dense_ms / self.predicted_ms

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data (what the study attribute holds)."""
        return {**asdict(self), "check": self.check.to_json(), "budget": [asdict(b) for b in self.budget]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Measurement:
        """Read back :meth:`to_json`'s data."""
        return cls(int(data["trial"]), PlanValidation.from_json(data["check"]), float(data["predicted_ms"]),
                   float(data["predicted_dense_ms"]), str(data["hardware"]),
                   {str(k): str(v) for k, v in data.get("machine", {}).items()}, dict(data.get("settings", {})),
                   tuple(BudgetCheck(str(b["name"]), float(b["limit"]), float(b["measured"]),
                                     float(b.get("lowest", math.nan)), float(b.get("highest", math.nan)))
                         for b in data.get("budget", [])))


def measurements(study: optuna.Study) -> dict[int, Measurement]:
    """Every stored measurement of the study, by trial number."""
    return {int(key[len(MEASURED_PREFIX):]): Measurement.from_json(value)
            for key, value in study.user_attrs.items() if key.startswith(MEASURED_PREFIX)}


def store_measurement(study: optuna.Study, measurement: Measurement) -> None:
    """Keep ``measurement`` in the study (a newer measurement of the same trial replaces the older)."""
    study.set_user_attr(f"{MEASURED_PREFIX}{measurement.trial}", measurement.to_json())
