"""The degenerate-text guard: a Plan whose generations collapse is not exported without --force."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from dlmsearch.cli import main
from dlmsearch.evaluators import ProxyEvaluator, ProxySettings
from dlmsearch.models.adapters import DLMAdapter
from dlmsearch.plan import uniform_plan
from dlmsearch.search.results import (
    DEGENERATE_DISTINCT4_RATIO,
    DegenerateTextError,
    degeneracy,
    export_plan,
    trial_row,
)

#: The proxy's generation terms kept small: only the dense step rows decide ``distinct4_ratio``.
SMALL = ProxySettings(windows=2, low_fidelity_windows=2, unconditional_rows=1, low_fidelity_free_rows=1,
                      calibration_sequences=2, step_cost_rows=2, step_cost_windows=2)


def _study_of(adapter: DLMAdapter, tmp_path: Path, steps: tuple[int, ...]) -> optuna.Study:
    """A journal study holding one trial per step count: the dense embedded model scored by the proxy."""
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "j.log")))
    study = optuna.create_study(study_name="guard", storage=storage, directions=["minimize"])
    evaluator = ProxyEvaluator(adapter, SMALL)
    for count in steps:
        plan = uniform_plan(adapter, steps=count, gen_length=64, block_length=32)
        result = evaluator.evaluate(plan, "low")
        study.add_trial(optuna.trial.create_trial(
            values=[result.score], user_attrs={"plan": plan.to_dict(), "metrics": {"quality": result.score,
                                                                                    **result.metrics}}))
    return study


@pytest.mark.slow
def test_a_plan_known_to_collapse_is_refused_by_export(embedded: DLMAdapter, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """At 8 steps for 64 characters the embedded model's greedy rows collapse into spaces (it keeps
    about 0.14 of its distinct 4-grams); at 64 steps it does not."""
    monkeypatch.setenv("DLMSEARCH_CACHE", str(tmp_path / "cache"))
    study = _study_of(embedded, tmp_path, (8, 64, 24))
    collapsed, varied, rows_collapsed = study.trials
    assert collapsed.user_attrs["metrics"]["distinct4_ratio"] < DEGENERATE_DISTINCT4_RATIO
    assert varied.user_attrs["metrics"]["distinct4_ratio"] == 1.0
    # at 24 steps the pooled share stays above the line, but most rows collapsed one by one
    assert rows_collapsed.user_attrs["metrics"]["distinct4_ratio"] >= DEGENERATE_DISTINCT4_RATIO
    with pytest.raises(DegenerateTextError, match=r"trial 2 is not exported: collapsed_rows 0\.\d+"):
        export_plan(study, tmp_path / "p24.json", number=2)
    with pytest.raises(DegenerateTextError, match=r"trial 0 is not exported: distinct4_ratio 0\.\d+"):
        export_plan(study, tmp_path / "p.json", number=0)
    assert export_plan(study, tmp_path / "forced.json", number=0, force=True)[0].number == 0
    # a pick chooses among the Plans that keep their variety
    assert export_plan(study, tmp_path / "picked.json", pick="min quality")[0].number == 1
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "storage.txt").write_text(str(tmp_path / "j.log"))
    (run_dir / "spec.yaml").write_text("study: guard\n")
    assert main(["export", str(run_dir), "--trial", "0", "-o", str(tmp_path / "cli.json")]) != 0
    assert not (tmp_path / "cli.json").exists()
    assert main(["export", str(run_dir), "--trial", "0", "-o", str(tmp_path / "cli.json"), "--force"]) == 0


def test_rows_collapsing_beyond_the_dense_models_make_a_plan_degenerate(tiny_llama: DLMAdapter,
                                                                         tmp_path: Path) -> None:
    """The verdict compares the Plan's collapsed rows with the dense model's, so a model whose own text
    often ends in spaces is not held against its Plans."""
    study = optuna.create_study(directions=["minimize"])
    for quality, collapsed in ((0.1, 0.75), (0.2, 0.40)):
        metrics = {"quality": quality, "distinct4_ratio": 0.94, "collapsed_rows": collapsed,
                   "dense_collapsed_rows": 0.19}
        plan = uniform_plan(tiny_llama, steps=24, gen_length=64, block_length=32)
        study.add_trial(optuna.trial.create_trial(values=[quality], user_attrs={"plan": plan.to_dict(),
                                                                                "metrics": metrics}))
    assert degeneracy(study.trials[0]) is not None and "collapsed_rows 0.750" in str(degeneracy(study.trials[0]))
    assert degeneracy(study.trials[1]) is None
    assert [row.degenerate is not None for row in map(trial_row, study.trials)] == [True, False]  # `pareto` shows it
    assert export_plan(study, tmp_path / "picked.json", pick="min quality")[0].number == 1
