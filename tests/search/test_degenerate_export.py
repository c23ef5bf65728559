"""The degenerate-text guard: a Plan whose generations collapse is not exported without --force."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from dlmsearch.cli import main
from dlmsearch.evaluators import ProxyEvaluator, ProxySettings
from dlmsearch.models.adapters import DLMAdapter
from dlmsearch.plan import uniform_plan
from dlmsearch.search.results import DEGENERATE_DISTINCT4_RATIO, DegenerateTextError, export_plan

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
    study = _study_of(embedded, tmp_path, (8, 64))
    collapsed, varied = study.trials
    assert collapsed.user_attrs["metrics"]["distinct4_ratio"] < DEGENERATE_DISTINCT4_RATIO
    assert varied.user_attrs["metrics"]["distinct4_ratio"] == 1.0
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
