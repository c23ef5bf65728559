"""Front verification: which Plans are verified, resume, claims between workers, and what pareto, --pick and
the report make of the verified scores.

A scripted evaluator stands in for the full evaluator here (its scores are chosen to rank the front
differently from the proxy); the real full evaluator verifies the front in the CLI test
(tests/search/test_cli_search.py) and under four workers on a journal and on PostgreSQL
(tests/search/test_workers.py).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest

from dlmsearch.evaluators import BaseEvaluator, QualityResult
from dlmsearch.models.adapters import DLMAdapter
from dlmsearch.plan import Plan, uniform_plan
from dlmsearch.reports.study_report import render_html, study_report_data
from dlmsearch.search.results import DegenerateTextError, export_plan, front_rows, select_trial
from dlmsearch.search.verification import (
    VERIFIED_PREFIX,
    Verification,
    claim_name,
    plans_to_verify,
    verifications,
    verify_front,
)

#: (proxy quality, latency) of each trial; every one is on the front (lower latency costs quality).
FRONT = [(0.10, 90.0), (0.20, 70.0), (0.30, 50.0), (0.40, 30.0), (0.50, 10.0)]
#: The scripted full evaluator's score per trial: it ranks trials 0 and 1 the other way round.
FULL = {0: 0.35, 1: 0.05, 2: 0.40, 3: 0.60, 4: 0.90, 5: 0.95}


class ScriptedEvaluator(BaseEvaluator):
    """Scores the Plan of trial ``n`` (told apart by its gen_length, 8 + n) with ``FULL[n]``; counts calls."""

    def __init__(self, fail_on: tuple[int, ...] = (), distinct: dict[int, float] | None = None) -> None:
        self.calls: list[int] = []
        self.fail_on = fail_on
        self.distinct = distinct or {}

    def evaluate(self, plan: Plan, fidelity: str = "full") -> QualityResult:
        number = plan.sampler.gen_length - 8
        self.calls.append(number)
        if number in self.fail_on:
            raise RuntimeError(f"scripted failure on trial {number}")
        return QualityResult(FULL[number], {"distinct4_ratio": self.distinct.get(number, 1.0)}, fidelity)


def add_trial(study: optuna.Study, adapter: DLMAdapter, quality: float, latency: float) -> None:
    number = len(study.trials)
    plan = uniform_plan(adapter, steps=8 + number, gen_length=8 + number, block_length=8 + number)
    study.add_trial(optuna.trial.create_trial(
        values=[quality, latency], system_attrs={"constraints": [-1.0]},
        user_attrs={"plan": plan.to_dict(), "metrics": {"quality": quality, "latency_ms": latency,
                                                        "distinct4_ratio": 1.0}}))


@pytest.fixture
def study(tmp_path: Path, tiny_llama: DLMAdapter) -> optuna.Study:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "j.log")))
    created = optuna.create_study(study_name="verify", storage=storage, directions=["minimize", "minimize"])
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        created.set_metric_names(["quality", "latency_ms"])
    for quality, latency in FRONT:
        add_trial(created, tiny_llama, quality, latency)
    return created


def test_plans_to_verify_spread_along_the_front(study: optuna.Study) -> None:
    trials = study.get_trials()
    assert [t.number for t in plans_to_verify(trials, 20)] == [0, 1, 2, 3, 4]
    assert [t.number for t in plans_to_verify(trials, 4)] == [0, 1, 2, 4]  # the best two, then spread to the worst
    assert [t.number for t in plans_to_verify(trials, 3)] == [0, 1, 4]
    assert [t.number for t in plans_to_verify(trials, 1)] == [0]
    assert plans_to_verify(trials, 0) == []


def test_verify_stores_the_full_score_beside_the_proxy_and_resume_verifies_only_what_is_new(
        study: optuna.Study, tiny_llama: DLMAdapter) -> None:
    evaluator = ScriptedEvaluator()
    built = []

    def make() -> BaseEvaluator:
        built.append(1)
        return evaluator

    summary = verify_front(study, make, limit=20, progress=False)
    assert summary.scored == 5 and summary.reused == 0 and sorted(evaluator.calls) == [0, 1, 2, 3, 4]
    stored = verifications(study)
    assert {n: v.quality for n, v in stored.items()} == {n: FULL[n] for n in range(5)}
    assert {n: v.proxy_quality for n, v in stored.items()} == {n: FRONT[n][0] for n in range(5)}

    again = verify_front(study, make, limit=20, progress=False)
    assert again.scored == 0 and again.reused == 5 and len(evaluator.calls) == 5 and len(built) == 1  # no model load

    add_trial(study, tiny_llama, 0.45, 5.0)  # a resumed study found a new front Plan, which pushes out trial 4
    resumed = verify_front(study, make, limit=20, progress=False)
    assert resumed.scored == 1 and evaluator.calls[-1] == 5 and sorted(resumed.results) == [0, 1, 2, 3, 5]

    changed = verify_front(study, ScriptedEvaluator, limit=20, settings={"draws": 3}, progress=False)
    assert changed.scored == 5  # other full-evaluator settings: another scale, every front Plan again


def test_pareto_pick_and_report_use_the_verified_score(study: optuna.Study, tmp_path: Path) -> None:
    # trials 0, 1 and 4 verified; the full evaluator sees trial 1's text collapse (distinct4_ratio 0.2)
    verify_front(study, lambda: ScriptedEvaluator(distinct={1: 0.2}), limit=3, progress=False)
    rows = front_rows(study)
    assert [(r.number, r.verified) for r in rows] == [(1, True), (0, True), (4, True), (2, False), (3, False)]
    assert rows[1].metrics["quality"] == FULL[0] and rows[1].proxy_quality == FRONT[0][0]
    # among the verified Plans that keep their text: 0 (0.35) before 4 (0.90); the proxy's best would be 0 too,
    # but trial 1 (verified 0.05) only with --force
    assert select_trial(study, pick="min quality").number == 0
    assert select_trial(study, pick="min quality", force=True).number == 1
    with pytest.raises(DegenerateTextError, match="distinct4_ratio 0.200"):
        export_plan(study, tmp_path / "plan.json", number=1)
    # verified trial 4 (latency 10) beats unverified trial 2 (proxy 0.30, latency 50) under a latency condition
    assert select_trial(study, pick="min quality where latency_ms <= 60").number == 4
    # no verified Plan meets the condition: the proxy decides among all feasible Plans
    assert select_trial(study, pick="min quality where latency_ms <= 35 and latency_ms >= 20").number == 3
    html = render_html(study_report_data(study))
    assert "front verification: proxy vs full evaluator, 3 front Plans (Spearman 0.50)" in html


def test_a_failed_verification_leaves_the_trial_unverified_and_the_claim_released(study: optuna.Study) -> None:
    summary = verify_front(study, lambda: ScriptedEvaluator(fail_on=(2,)), limit=20, progress=False)
    assert summary.failed == (2,) and sorted(summary.results) == [0, 1, 3, 4]
    names = [s.study_name for s in optuna.get_all_study_summaries(study._storage)]
    assert names == ["verify"] and len(study.trials) == 5


def test_a_live_claim_is_waited_for_not_duplicated(study: optuna.Study) -> None:
    storage = study._storage
    claim = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], claim_name(study, 1))
    storage.set_study_user_attr(claim, "holder", {"host": socket.gethostname(), "pid": os.getpid(),
                                                  "time": time.time()})

    def other_worker_finishes() -> None:
        time.sleep(1.5)
        result = Verification(1, FULL[1], FRONT[1][0], {"distinct4_ratio": 1.0})
        study.set_user_attr(f"{VERIFIED_PREFIX}1", result.to_json())
        storage.delete_study(claim)

    other = threading.Thread(target=other_worker_finishes)
    other.start()
    evaluator = ScriptedEvaluator()
    summary = verify_front(study, lambda: evaluator, limit=20, progress=False)
    other.join()
    assert 1 not in evaluator.calls and sorted(evaluator.calls) == [0, 2, 3, 4]
    assert summary.scored == 4 and sorted(summary.results) == [0, 1, 2, 3, 4]


def test_a_dead_workers_claim_is_taken_over(study: optuna.Study) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    storage = study._storage
    claim = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], claim_name(study, 3))
    storage.set_study_user_attr(claim, "holder", {"host": socket.gethostname(), "pid": int(dead.stdout),
                                                  "time": time.time()})
    evaluator = ScriptedEvaluator()
    summary = verify_front(study, lambda: evaluator, limit=20, progress=False)
    assert 3 in evaluator.calls and summary.scored == 5
    assert [s.study_name for s in optuna.get_all_study_summaries(storage)] == ["verify"]


def test_a_result_is_stored_before_its_claim_is_released(study: optuna.Study,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that claims a Plan just after another released it must find the result (no double work)."""
    from dlmsearch.search import verification

    stored_at_release = []
    real_release = verification._release

    def release(claimed_study: optuna.Study, claim: int) -> None:
        number = int(claimed_study._storage.get_study_name_from_id(claim).rpartition(".")[2])
        stored_at_release.append(f"{VERIFIED_PREFIX}{number}" in claimed_study.user_attrs)
        real_release(claimed_study, claim)

    monkeypatch.setattr(verification, "_release", release)
    summary = verify_front(study, ScriptedEvaluator, limit=20, progress=False)
    assert summary.scored == 5 and stored_at_release == [True] * 5
