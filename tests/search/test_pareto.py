"""Feasible fronts, hypervolume against hand-computed values, and --pick."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from dlmsearch.search.pareto import (
    PickError,
    feasible_front,
    hypervolume,
    hypervolume_history,
    pareto_mask,
    parse_pick,
    pick_trial,
)


def hand_built_study(points: list[tuple[float, float, float]]) -> optuna.Study:
    """Trials with values (quality, latency) and a latency constraint value (<= 0 feasible)."""
    study = optuna.create_study(directions=["minimize", "minimize"])
    for quality, latency, constraint in points:
        trial = study.ask()
        trial.set_constraint("latency_ms", constraint)
        study.tell(trial, [quality, latency])
    return study


def test_pareto_mask_keeps_non_dominated_rows() -> None:
    values = np.array([[1, 5], [2, 2], [3, 3], [5, 1], [2, 2]], dtype=float)
    assert pareto_mask(values).tolist() == [True, True, False, True, True]


def test_infeasible_trials_never_enter_the_front() -> None:
    # trial 1 dominates everything but is over budget
    study = hand_built_study([(0.5, 50, -1), (0.1, 10, 5), (0.3, 80, -2), (0.6, 40, 0)])
    front = feasible_front(study.get_trials())
    assert sorted(t.number for t in front) == [0, 2, 3]


def test_hypervolume_hand_computed() -> None:
    # 2-D, reference (1, 1): points (0.2, 0.6) and (0.5, 0.3): 0.8*0.4 + 0.5*0.3 = 0.47
    assert hypervolume(np.array([[0.2, 0.6], [0.5, 0.3]]), [1, 1]) == pytest.approx(0.47)
    # scaling by the reference point normalises
    assert hypervolume(np.array([[2.0, 60.0], [5.0, 30.0]]), [10, 100]) == pytest.approx(0.47)
    # 3-D: one point at (0.5, 0.5, 0.5) -> 0.125; two boxes overlapping
    assert hypervolume(np.array([[0.5, 0.5, 0.5]]), [1, 1, 1]) == pytest.approx(0.125)
    two = np.array([[0.5, 0.5, 0.5], [0.0, 0.75, 0.75]])
    assert hypervolume(two, [1, 1, 1]) == pytest.approx(0.125 + 0.0625 - 0.5 * 0.25 * 0.25)
    assert hypervolume(np.array([[1.5, 0.1]]), [1, 1]) == 0.0  # outside the reference box


def test_hypervolume_history_is_monotone() -> None:
    study = hand_built_study([(0.5, 50, -1), (0.1, 10, 5), (0.3, 30, -2), (0.2, 90, -1)])
    history = hypervolume_history(study.get_trials(), [1.0, 100.0])
    assert [n for n, _ in history] == [0, 1, 2, 3]
    values = [v for _, v in history]
    assert values == sorted(values) and values[1] == values[0]  # the infeasible trial adds nothing


def test_pick_selects_the_best_row_meeting_the_conditions() -> None:
    rows = [{"quality": 0.5, "latency_ms": 50.0}, {"quality": 0.2, "latency_ms": 90.0},
            {"quality": 0.3, "latency_ms": 40.0}]
    metrics = ("quality", "latency_ms")
    assert pick_trial(rows, parse_pick("max quality where latency_ms <= 60", metrics)) == 2
    assert pick_trial(rows, parse_pick("min quality", metrics)) == 1
    assert pick_trial(rows, parse_pick("min latency_ms where quality < 0.4", metrics)) == 2
    with pytest.raises(PickError, match="no feasible trial satisfies latency_ms <= 10"):
        pick_trial(rows, parse_pick("min quality where latency_ms <= 10", metrics))
    for bad in ("best quality", "min speed", "min quality where latency_ms ~ 3", "min quality where x <= 1"):
        with pytest.raises(PickError, match="allowed"):
            parse_pick(bad, metrics)
