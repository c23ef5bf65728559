"""Checking an exported Plan for real: applied to the model, timed against the dense model side by
side on this machine, scored by the full evaluator, and made to write text.

This is what ``dlmsearch demo`` ends with and ``bench/quickstart_validation.py`` reports: the
search's predictions (analytic latency, proxy quality) are only trusted once the Plan itself has
been measured.
"""

from __future__ import annotations

import copy
import dataclasses
import statistics
from dataclasses import dataclass

import torch

from dlmsearch.compress import CalibrationSet, apply_plan_
from dlmsearch.cost_models.measured import generate_call, time_call
from dlmsearch.evaluators import FullEvaluator, FullSettings, QualityResult
from dlmsearch.models.adapters import DLMAdapter
from dlmsearch.models.sampler import generate
from dlmsearch.plan import Plan

#: The full evaluator of a validation: the package's, one draw (one Plan is checked, not ranked).
VALIDATION_FULL = FullSettings(draws=1)
#: Timed rounds of each model: on a 2-core machine one pair of ``generate`` calls comes out 1.9-2.6x for
#: a Plan whose median is 2.3x, so a median of 5 could still miss by 10%.
VALIDATION_ROUNDS = 9


@dataclass(frozen=True)
class PlanValidation:
    """A Plan measured beside the dense Plan: medians of ``rounds`` interleaved ``generate`` timings (ms), full
    evaluator scores (the dense Plan's is 0 at one token per step), the Plan's ``distinct4_ratio``, the
    shares of prompted rows that collapsed (the Plan's, and the dense model's at one token per step)
    and one generation of each from the same prompt."""

    dense_ms: float
    plan_ms: float
    plan_score: float
    dense_score: float
    distinct4_ratio: float
    collapsed_rows: float
    dense_collapsed_rows: float
    prompt: str
    dense_text: str
    plan_text: str
    rounds: int

    @property
    def speedup(self) -> float:
        """Dense time over the Plan's time (above 1: the Plan is faster)."""
        return self.dense_ms / self.plan_ms


def validate_plan(adapter: DLMAdapter, plan: Plan, dense_plan: Plan, prompt: str, prompt_length: int,
                  repeats: int = VALIDATION_ROUNDS, calibration: CalibrationSet | None = None,
                  settings: FullSettings = VALIDATION_FULL, scored: QualityResult | None = None) -> PlanValidation:
    """Measure ``plan`` against ``dense_plan`` on ``adapter`` (never changed): ``repeats`` timings of each,
    in rounds that alternate which model runs first (dense-plan, plan-dense, ...) so that drift of the
    machine hits both alike, the full evaluator's score of both, and one generation of each from
    ``prompt``. ``scored``: the Plan's full-evaluator result under ``settings`` when it is known already
    (the front's verification), instead of scoring it again."""
    compressed = copy.deepcopy(adapter)
    apply_plan_(compressed, plan, calibration)
    runs = {"dense": generate_call(adapter, dense_plan.sampler, prompt_length),
            "plan": generate_call(compressed, plan.sampler, prompt_length)}
    for run in runs.values():  # warm-up
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(max(1, repeats)):
        for name in ("dense", "plan") if round_ % 2 == 0 else ("plan", "dense"):
            times[name].append(time_call(adapter if name == "dense" else compressed, runs[name]) * 1e3)
    full = FullEvaluator(adapter, settings, calibration=calibration)
    scored = scored or full.evaluate(plan)
    ids = adapter.encode(prompt)[None, :]
    texts = {}
    for name, (model, sampler) in {"dense": (adapter, dense_plan.sampler), "plan": (compressed, plan.sampler)}.items():
        with torch.no_grad():
            out = generate(model, ids, seed=0, **dataclasses.asdict(sampler))
        texts[name] = adapter.decode(out[0, ids.shape[1]:])
    return PlanValidation(statistics.median(times["dense"]), statistics.median(times["plan"]), scored.score,
                          full.evaluate(dense_plan).score, scored.metrics["distinct4_ratio"],
                          scored.metrics.get("collapsed_rows", float("nan")),
                          scored.metrics.get("dense_collapsed_rows", float("nan")), prompt, texts["dense"],
                          texts["plan"], len(times["plan"]))
