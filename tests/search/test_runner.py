"""run_study on a tiny model: budgets, resume, warm starts, constraints, failures, determinism, outputs."""

from __future__ import annotations

import io
import json
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from dlmsearch.compress import check_plan_fits
from dlmsearch.evaluators import QualityResult
from dlmsearch.plan import load_plan
from dlmsearch.search import run_study
from dlmsearch.search.context import StudyContext
from dlmsearch.search.pareto import feasible_front, is_feasible
from dlmsearch.search.results import export_plan, open_study, plan_of
from dlmsearch.search.runner import RunInterrupted, StudyMismatchError, TrialValueError, checked_values
from tests.search.conftest import TINY_SPEC

Make = Callable[..., StudyContext]


def snapshot(study: optuna.Study) -> dict[int, tuple[Any, ...]]:
    return {t.number: (t.state, t.values, t.params) for t in study.get_trials()}


def test_budget_is_the_study_total_and_a_rerun_resumes(make_context: Make, tmp_path: Path) -> None:
    context = make_context(sampler="random")
    first = run_study(context.spec, tmp_path, n_trials=4, context=context, progress=False, write_outputs=False)
    before = snapshot(first.study)
    assert sum(s == TrialState.COMPLETE for s, _, _ in before.values()) == 4
    again = run_study(context.spec, tmp_path, n_trials=6, context=context, progress=False, write_outputs=False)
    after = snapshot(again.study)
    assert len(after) == 6
    assert {n: after[n] for n in before} == before  # finished trials untouched, none repeated
    run_study(context.spec, tmp_path, n_trials=6, context=context, progress=False, write_outputs=False)
    assert len(open_study(tmp_path).get_trials()) == 6


def test_warm_starts_come_first_and_the_dense_plan_scores_zero(make_context: Make, tmp_path: Path) -> None:
    context = make_context(n_trials=8)
    study = run_study(context.spec, tmp_path, context=context, progress=False, write_outputs=False).study
    trials = sorted(study.get_trials(), key=lambda t: t.number)
    warm = [t for t in trials if t.user_attrs.get("warm_start")]
    assert len(warm) == 2 and warm[0].number == 0  # limit: n_trials // 4
    dense = plan_of(trials[0])
    assert all(set(lp.weight_bits) == {16} and lp.sparsity == 0 for lp in dense.layers.values())
    assert dense.sampler.steps == 8
    assert trials[0].values[0] == 0.0
    assert study.metric_names == ["quality", "latency_ms", "peak_mem_bytes"]
    for trial in trials:
        assert trial.user_attrs["latency_provenance"] == "analytic"
        assert trial.user_attrs["env"]["torch"]


def test_constraints_keep_over_budget_plans_off_the_front(make_context: Make, tmp_path: Path) -> None:
    probe = make_context()
    dense = probe.cost_model.cost(probe.dense_plan(), probe.hardware).latency_ms
    context = make_context(budget={"latency_ms": dense * 0.75}, n_trials=10, sampler="random")
    study = run_study(context.spec, tmp_path, context=context, progress=False, write_outputs=False).study
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    infeasible = [t for t in trials if not is_feasible(t)]
    assert infeasible, "the budget should exclude some Plans (e.g. the dense warm start)"
    assert all(t.user_attrs["metrics"]["latency_ms"] > dense * 0.75 for t in infeasible)
    assert all(t.user_attrs["fidelity"] == "low" for t in infeasible)  # never rescored
    front = feasible_front(trials)
    assert front and not {t.number for t in front} & {t.number for t in infeasible}


def test_same_seed_gives_the_same_plans(make_context: Make, tmp_path: Path) -> None:
    context = make_context(n_trials=5, warm_start=False)
    runs = [run_study(context.spec, tmp_path / str(i), context=context, progress=False, write_outputs=False)
            for i in range(2)]
    plans = [[json.dumps(t.user_attrs["plan"]) for t in r.study.get_trials()] for r in runs]
    assert plans[0] == plans[1]
    values = [[t.values for t in r.study.get_trials()] for r in runs]
    assert values[0] == values[1]


@pytest.mark.parametrize(("sampler", "n_trials"), [pytest.param("tpe", 50, marks=pytest.mark.slow), ("random", 12)])
def test_one_run_equals_an_interrupted_and_resumed_run(make_context: Make, tmp_path: Path, sampler: str,
                                                       n_trials: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """50 trials in one run = 25, Ctrl-C in the 26th, then a resume (the issue's case, on the tiny model)."""
    context = make_context(n_trials=n_trials, warm_start=True, sampler=sampler)
    whole = run_study(context.spec, tmp_path / "whole", context=context, progress=False, write_outputs=False)
    real = context.evaluator.evaluate
    calls = []

    def interrupted_halfway(plan: Any, fidelity: str = "full") -> Any:
        calls.append(plan)
        if len({json.dumps(p.to_dict()) for p in calls}) == n_trials // 2 + 1:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the first Plan past half the budget
        return real(plan, fidelity)

    monkeypatch.setattr(context.evaluator, "evaluate", interrupted_halfway)
    with pytest.raises(RunInterrupted):
        run_study(context.spec, tmp_path / "split", context=context, progress=False, write_outputs=False)
    monkeypatch.setattr(context.evaluator, "evaluate", real)
    split = run_study(context.spec, tmp_path / "split", context=context, progress=False, write_outputs=False)
    plans = [[json.dumps(t.user_attrs["plan"]) for t in r.study.get_trials(states=(TrialState.COMPLETE,))]
             for r in (whole, split)]
    assert len(plans[0]) == n_trials and plans[0] == plans[1]


def test_a_failing_trial_fails_alone(make_context: Make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    context = make_context(n_trials=4, warm_start=False, evaluator={"fidelity": "low"})
    real = context.evaluator.evaluate
    calls = {"n": 0}

    def flaky(plan: Any, fidelity: str = "full") -> QualityResult:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("out of memory (simulated)")
        if calls["n"] == 3:
            return QualityResult.__new__(QualityResult)  # bypasses validation: no score at all
        return real(plan, fidelity)

    monkeypatch.setattr(context.evaluator, "evaluate", flaky)
    study = run_study(context.spec, tmp_path, context=context, progress=False, write_outputs=False).study
    states = [t.state for t in sorted(study.get_trials(), key=lambda t: t.number)]
    assert states.count(TrialState.FAIL) == 2 and states.count(TrialState.COMPLETE) == 4
    errors = [t.user_attrs.get("error", "") for t in study.get_trials() if t.state == TrialState.FAIL]
    assert any("out of memory" in e for e in errors)


def test_non_finite_objectives_are_named() -> None:
    with pytest.raises(TrialValueError, match="'latency_ms' is nan"):
        checked_values(["quality", "latency_ms"], {"quality": 0.1, "latency_ms": math.nan})
    with pytest.raises(TrialValueError, match="'peak_mem_bytes' is inf"):
        checked_values(["quality", "peak_mem_bytes"], {"quality": 0.1, "peak_mem_bytes": math.inf})
    with pytest.raises(TrialValueError, match="'quality' is None"):
        checked_values(["quality"], {})


def test_a_cost_model_returning_inf_fails_that_trial_naming_the_objective(make_context: Make, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import copy

    context = make_context(n_trials=4, warm_start=False, evaluator={"fidelity": "low"})
    real = context.cost_model.cost
    calls = {"n": 0}

    def broken_once(plan: Any, hardware: Any) -> Any:
        calls["n"] += 1
        result = real(plan, hardware)
        if calls["n"] == 4:  # a trial's Plan (the first calls price the dense reference)
            result = copy.copy(result)
            object.__setattr__(result, "latency_ms", math.inf)  # past CostResult's own check, as a buggy model
        return result

    monkeypatch.setattr(context.cost_model, "cost", broken_once)
    study = run_study(context.spec, tmp_path, context=context, progress=False, write_outputs=False).study
    failed = [t for t in study.get_trials() if t.state == TrialState.FAIL]
    assert len(failed) == 1 and "objective 'latency_ms' is inf" in failed[0].user_attrs["error"]
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 4  # the study went on


def test_a_different_spec_under_the_same_name_is_refused(make_context: Make, tmp_path: Path) -> None:
    context = make_context(n_trials=2, warm_start=False)
    run_study(context.spec, tmp_path, context=context, progress=False, write_outputs=False)
    changed = make_context(n_trials=2, warm_start=False, budget={"latency_ms": 1.0})
    with pytest.raises(StudyMismatchError, match="budget"):
        run_study(changed.spec, tmp_path, context=changed, progress=False, write_outputs=False)


def test_a_different_model_is_refused_unless_forced(make_context: Make, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    from dlmsearch.search.attributes import ENVIRONMENT_ATTR, MODEL_ATTR

    context = make_context(n_trials=2, warm_start=False)
    study = run_study(context.spec, tmp_path, context=context, progress=False, write_outputs=False).study
    assert study.user_attrs[MODEL_ATTR] == context.adapter.shape.fingerprint
    recorded = study.user_attrs[ENVIRONMENT_ATTR]
    assert {"dlmsearch", "torch", "transformers", "optuna", "device"} <= set(recorded)
    assert recorded["device"].startswith(("cpu/", "cuda/"))
    study.set_user_attr(MODEL_ATTR, "llama/L32/d4096/other-checkpoint")  # as if the checkpoint had changed
    with pytest.raises(StudyMismatchError, match="model fingerprint .*--force"):
        run_study(context.spec, tmp_path, n_trials=3, context=context, progress=False, write_outputs=False)
    forced = run_study(context.spec, tmp_path, n_trials=3, context=context, progress=False, write_outputs=False,
                       force=True)
    assert len(forced.study.get_trials(states=(TrialState.COMPLETE,))) == 3
    assert "mix two searches" in caplog.text


def test_outputs_and_export(make_context: Make, tmp_path: Path) -> None:
    context = make_context(n_trials=6)
    summary = run_study(context.spec, tmp_path, context=context, progress=False)
    assert (tmp_path / "report.html").stat().st_size > 100_000  # plotly.js is embedded
    front = json.loads((tmp_path / "pareto.json").read_text())["front"]
    assert {row["trial"] for row in front} == {t.number for t in summary.front}
    trial, path = export_plan(summary.study, tmp_path / "plan.json", pick="min quality")
    assert trial.number in {t.number for t in summary.front}
    assert load_plan(path) == plan_of(trial)
    check_plan_fits(load_plan(path), context.adapter)


def test_a_hanging_trial_is_stopped_by_the_time_limit(make_context: Make, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    context = make_context(n_trials=3, warm_start=False, evaluator={"fidelity": "low"}, trial_timeout_s=2,
                           quality_reference=1.0)  # no reference evaluation: the first call is the first trial's
    real = context.evaluator.evaluate
    calls = {"n": 0}

    def hangs_once(plan: Any, fidelity: str = "full") -> QualityResult:
        calls["n"] += 1
        if calls["n"] == 1:
            time.sleep(60)
        return real(plan, fidelity)

    monkeypatch.setattr(context.evaluator, "evaluate", hangs_once)
    start = time.monotonic()
    study = run_study(context.spec, tmp_path, context=context, progress=False, write_outputs=False).study
    assert time.monotonic() - start < 45
    trials = sorted(study.get_trials(), key=lambda t: t.number)
    assert trials[0].state == TrialState.FAIL and "trial_timeout_s=2" in trials[0].user_attrs["error"]
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_bar_counts_feasible_plans_and_the_front(make_context: Make, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal the study's bar ends with how many Plans met the budget so far, the front's size and
    its hypervolume (not whether the last trial happened to be feasible)."""
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    context = make_context(sampler="random")
    summary = run_study(context.spec, tmp_path, n_trials=6, context=context, progress=True, write_outputs=False)
    complete = [t for t in summary.study.trials if t.state == TrialState.COMPLETE]
    last = re.findall(r"6/6 \[[^]]*feasible=(\d+), front=(\d+), hv=", terminal.getvalue())[-1]
    assert last == (str(sum(map(is_feasible, complete))), str(len(feasible_front(complete))))


def test_the_quality_reference_is_measured_on_the_most_compressed_plan(make_context: Make, tmp_path: Path) -> None:
    """Without a spec value, the hypervolume's quality reference is 1.1 x the proxy score of the space's
    harshest uniform Plan, fixed when the study is created; a spec value is kept as given."""
    context = make_context(sampler="random", warm_start=False,
                           space={**TINY_SPEC["space"], "structures": ["unstructured", "heads", "channels"]})
    harshest = context.harshest_plans()
    assert [{lp.structure for lp in plan.layers.values()} for plan in harshest] == [
        {"unstructured"}, {"heads", "channels"}]
    for plan in harshest:
        assert plan.sampler.steps == min(context.spec.space.steps)
        assert all(set(lp.weight_bits) == {min(context.spec.space.weight_bits)} for lp in plan.layers.values())
    assert all(lp.sparsity == context.spec.space.sparsity.max for lp in harshest[0].layers.values())
    study = run_study(context.spec, tmp_path / "measured", n_trials=2, context=context, progress=False,
                      write_outputs=False).study
    expected = 1.1 * max(context.evaluator.evaluate(plan, "full").score for plan in harshest)
    assert expected > 0
    assert study.user_attrs["dlmsearch.reference"]["quality"] == pytest.approx(expected)
    assert all(t.values[0] < study.user_attrs["dlmsearch.reference"]["quality"] for t in study.trials)
    given = make_context(sampler="random", warm_start=False, quality_reference=0.25)
    kept = run_study(given.spec, tmp_path / "given", n_trials=1, context=given, progress=False, write_outputs=False)
    assert kept.study.user_attrs["dlmsearch.reference"]["quality"] == 0.25
