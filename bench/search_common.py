"""Shared set-up of the search benchmarks: the quickstart study on the embedded model, one context.

The benchmarks score quality with the proxy at low fidelity (``evaluator.fidelity: low``) so that
hundreds of trials per method fit in minutes on 2 cores; identical Plans are scored once
(:class:`MemoEvaluator`; the proxy is deterministic, so this changes no value).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from dlmsearch.evaluators import BaseEvaluator, QualityResult
from dlmsearch.plan import Plan
from dlmsearch.search import load_study_spec
from dlmsearch.search.context import StudyContext, build_context
from dlmsearch.search.spec import StudySpec

QUICKSTART = Path(__file__).resolve().parent.parent / "studies" / "quickstart.yaml"


def bench_spec(hardware: str, **overrides: Any) -> StudySpec:
    """The quickstart spec at low fidelity on ``hardware``, without front verification (the benches measure the
    trials) and with the quality reference the recorded hypervolumes used (proxy 1.0), with top-level
    fields replaced."""
    spec = load_study_spec(QUICKSTART)
    evaluator = dataclasses.replace(spec.evaluator, fidelity="low")
    return dataclasses.replace(spec, hardware=hardware, evaluator=evaluator,
                               **{"verify_front": 0, "quality_reference": 1.0, **overrides})


class MemoEvaluator(BaseEvaluator):
    """Scores each distinct (Plan, fidelity) once; counts the real evaluations."""

    def __init__(self, inner: BaseEvaluator) -> None:
        self.inner = inner
        self.memo: dict[tuple[str, str], QualityResult] = {}
        self.evaluations = 0

    def __getattr__(self, name: str) -> Any:  # sensitivity tables reach the proxy's own methods
        return getattr(self.inner, name)

    def evaluate(self, plan: Plan, fidelity: str = "full") -> QualityResult:
        """The inner evaluator's result, computed once per distinct Plan."""
        key = (plan.to_json(), fidelity)
        if key not in self.memo:
            self.evaluations += 1
            self.memo[key] = self.inner.evaluate(plan, fidelity)
        return self.memo[key]


def bench_context(spec: StudySpec) -> StudyContext:
    """The study context with a memoizing evaluator."""
    context = build_context(spec, isolation="none")  # the memo needs the evaluator in this process
    context.evaluator = MemoEvaluator(context.evaluator)  # type: ignore[assignment]
    return context
