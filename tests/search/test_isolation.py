"""Model work in recycled child processes: flat parent memory, dead children, interrupts, same results."""

from __future__ import annotations

import os
import signal
import statistics
import threading
from pathlib import Path
from typing import Any

import pytest

from dlmsearch.cost_models.measured import rss_bytes
from dlmsearch.plan import Plan
from dlmsearch.search import run_study
from dlmsearch.search.context import build_context
from dlmsearch.search.isolation import EvaluatorProcessError, IsolatedEvaluator
from dlmsearch.search.spec import spec_from_dict
from tests.search.test_cli_search import SPEC

#: Parent RSS may grow this much from trial 10 to trial 50 (Optuna keeps each trial's params and
#: attributes; a model copy, or the activations of one proxy run, are far larger).
PARENT_GROWTH_BOUND_MB = 25.0


def rss_mb() -> float:
    """This process's resident memory in MB."""
    return rss_bytes() / 1e6


def isolated_spec(**overrides: Any) -> Any:
    return spec_from_dict({**SPEC, "study": "isolated", "isolation": "process", "recycle_after": 10,
                           "verify_front": 0, "evaluator": {**SPEC["evaluator"], "fidelity": "low"}, **overrides})


@pytest.mark.slow
def test_fifty_trials_in_recycled_children_keep_the_parent_flat(tmp_path: Path) -> None:
    spec = isolated_spec(n_trials=50, sampler="random", quality_reference=1.0)  # every evaluation is a trial's
    context = build_context(spec)
    evaluator = context.evaluator
    assert isinstance(evaluator, IsolatedEvaluator)
    assert next(context.adapter.model.parameters()).device.type == "meta"  # the parent holds no weights
    after_trial: list[float] = []
    children: set[int | None] = set()
    real = evaluator.evaluate

    def recording(plan: Plan, fidelity: str = "full") -> Any:
        result = real(plan, fidelity)
        children.add(evaluator.child_pid)  # None right after the 10th evaluation: recycled
        after_trial.append(rss_mb())
        return result

    evaluator.evaluate = recording  # type: ignore[method-assign]
    try:
        summary = run_study(spec, tmp_path, context=context, progress=False, write_outputs=False)
    finally:
        evaluator.close()
    assert len([t for t in summary.study.trials if t.state.name == "COMPLETE"]) == 50
    assert len(after_trial) == 50
    assert evaluator.children_started == 5 and len(children - {None}) == 5  # one child per 10 evaluations
    baseline = statistics.median(after_trial[5:15])
    growth = max(after_trial[15:]) - baseline
    print(f"parent RSS: {baseline:.1f} MB after 10 trials, growth to trial 50: {growth:.1f} MB")
    assert growth < PARENT_GROWTH_BOUND_MB, after_trial


@pytest.mark.slow  # a child process loads the embedded model
def test_isolated_scores_equal_in_process_scores() -> None:
    spec = isolated_spec()
    isolated = build_context(spec)
    local = build_context(spec, isolation="none")
    plans = [local.dense_plan(), local.space.plan_from_params(local.space.preset_params(4, steps=8) or {})]
    with isolated.evaluator as evaluator:
        for plan in plans:
            for fidelity in ("low", "full"):
                remote = evaluator.evaluate(plan, fidelity)
                here = local.evaluator.evaluate(plan, fidelity)
                assert remote.score == pytest.approx(here.score, rel=1e-6, abs=1e-9)
                assert remote.fidelity == fidelity
                assert set(remote.metrics) == set(here.metrics)


@pytest.mark.slow  # a child process loads the embedded model
def test_a_killed_child_fails_one_request_and_the_next_starts_a_new_one() -> None:
    context = build_context(isolated_spec())
    evaluator = context.evaluator
    assert isinstance(evaluator, IsolatedEvaluator)
    plan = context.dense_plan()
    with evaluator:
        evaluator.evaluate(plan, "low")
        first = evaluator.child_pid
        assert first is not None
        threading.Timer(0.3, os.kill, (first, signal.SIGKILL)).start()  # as the out-of-memory killer would
        with pytest.raises(EvaluatorProcessError, match="SIGKILL"):
            evaluator.sensitivity_table((2, 4), 2)  # seconds of work: the kill lands mid-request
        assert evaluator.evaluate(plan, "low").score == 0.0
        assert evaluator.child_pid not in (None, first)


@pytest.mark.slow  # a child process loads the embedded model
def test_an_error_in_the_child_names_it_and_the_child_is_replaced() -> None:
    context = build_context(isolated_spec())
    evaluator = context.evaluator
    assert isinstance(evaluator, IsolatedEvaluator)
    with evaluator:
        with pytest.raises(EvaluatorProcessError, match="fidelity='medium'; allowed: low, full"):
            evaluator.evaluate(context.dense_plan(), "medium")
        assert evaluator.child_pid is None


@pytest.mark.slow  # a child process loads the embedded model
def test_an_interrupt_in_the_parent_kills_the_child_at_once() -> None:
    context = build_context(isolated_spec())
    evaluator = context.evaluator
    assert isinstance(evaluator, IsolatedEvaluator)
    plan = context.dense_plan()
    evaluator.evaluate(plan, "low")
    child = evaluator.child_pid
    assert child is not None

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(KeyboardInterrupt):
            evaluator.sensitivity_table((2, 4), 2)
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert evaluator.child_pid is None
    assert not Path(f"/proc/{child}").exists()  # killed and reaped, not left computing
