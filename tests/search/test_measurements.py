"""Measurements kept in a study (plain JSON, any storage) and run folders that can move."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import optuna
import pytest

from dlmsearch.search import open_study
from dlmsearch.search.measurements import BudgetCheck, Measurement, PlanValidation, measurements, store_measurement
from dlmsearch.search.spec import Budget
from dlmsearch.search.storage import open_storage, resolve_pointer, storage_pointer
from dlmsearch.search.validation import budget_checks

CHECK = PlanValidation((700.0, 720.0, 690.0), (300.0, 310.0, 350.0), 0.9, 0.0, 1.2, math.nan, 0.19,
                       ("ROMEO.",), ("dense text",), ("plan text",))


def test_a_measurement_survives_a_journal_round_trip(tmp_path: Path) -> None:
    journal = tmp_path / "journal.log"
    study = optuna.create_study(storage=open_storage(journal), study_name="s")
    measured = Measurement(3, CHECK, 40.0, 90.0, "local", {"host": "vm", "threads": "2"}, {"draws": 1},
                           (BudgetCheck("latency_fraction", 0.45, 0.44, 0.42, 0.47),))
    store_measurement(study, measured)
    again = measurements(optuna.load_study(study_name="s", storage=open_storage(journal)))
    assert list(again) == [3]
    back = again[3]
    assert back.check.dense_ms == 700.0 and back.check.plan_ms == 310.0 and back.check.rounds == 3
    assert back.check.speedup == pytest.approx(700.0 / 310.0) and back.predicted_speedup == pytest.approx(2.25)
    assert back.check.plan_texts == ("plan text",) and back.check.prompts == ("ROMEO.",)
    first_release = {**CHECK.to_json(), "prompt": "ROMEO.", "dense_text": "d", "plan_text": "p"}
    for name in ("prompts", "dense_texts", "plan_texts"):
        del first_release[name]
    assert PlanValidation.from_json(first_release).dense_texts == ("d",)  # one text per record then
    assert math.isnan(back.check.collapsed_rows)  # "not measured" stays NaN, not an error
    assert back.machine == {"host": "vm", "threads": "2"} and back.settings == {"draws": 1}
    assert back.budget == measured.budget and back.budget[0].met
    store_measurement(study, Measurement(3, CHECK, 50.0, 90.0, "local"))  # measured again: the newer one is kept
    assert measurements(study)[3].predicted_ms == 50.0


def _run_folder(folder: Path) -> None:
    folder.mkdir()
    optuna.create_study(storage=open_storage(folder / "journal.log"), study_name="moved")
    (folder / "spec.yaml").write_text("study: moved\n")
    (folder / "storage.txt").write_text(storage_pointer(str(folder / "journal.log"), folder) + "\n")


def test_a_run_folder_opens_after_a_move_and_from_another_directory(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _run_folder(tmp_path / "run")
    assert (tmp_path / "run" / "storage.txt").read_text().strip() == "journal.log"
    shutil.move(tmp_path / "run", tmp_path / "elsewhere")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    assert open_study(tmp_path / "elsewhere").study_name == "moved"
    assert open_study(os.path.relpath(tmp_path / "elsewhere")).study_name == "moved"


def test_pointers_name_other_storages_as_they_are_and_old_pointers_still_open(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    outside = tmp_path / "shared" / "j.log"
    assert storage_pointer(str(outside), tmp_path / "run") == str(outside.resolve())
    url = "postgresql+psycopg2://u@127.0.0.1:5432/db"
    assert storage_pointer(url, tmp_path) == url and resolve_pointer(url, tmp_path) == url
    # a folder written before pointers were relative names its journal from the directory `run` ran in
    monkeypatch.chdir(tmp_path)
    _run_folder(tmp_path / "old")
    (tmp_path / "old" / "storage.txt").write_text("old/journal.log\n")
    assert resolve_pointer("old/journal.log", tmp_path / "old") == "old/journal.log"
    assert open_study(tmp_path / "old").study_name == "moved"


def test_the_budget_is_checked_against_the_measured_rounds() -> None:
    budget = Budget(latency_ms=305.0, latency_per_step_ms=10.0, latency_fraction=0.43)
    checks = {b.name: b for b in budget_checks(budget, CHECK, steps=32)}  # medians: dense 700, Plan 310
    assert checks["latency_ms"].measured == 310.0 and not checks["latency_ms"].met
    assert (checks["latency_ms"].lowest, checks["latency_ms"].highest) == (300.0, 350.0)
    assert checks["latency_ms"].within_spread  # 305 lies between the rounds: drift could decide it
    assert checks["latency_per_step_ms"].measured == pytest.approx(310 / 32) and checks["latency_per_step_ms"].met
    fraction = checks["latency_fraction"]
    assert fraction.measured == pytest.approx(310 / 700) and not fraction.met
    assert fraction.lowest == pytest.approx(300 / 700) and fraction.highest == pytest.approx(350 / 690)  # per round
    assert fraction.describe() == ("latency_fraction <= 0.43: measured 0.4429 (rounds 0.4286-0.5072), over by 3.0%, "
                                   "within the rounds' spread")
    clear = BudgetCheck("latency_ms", 250.0, 310.0, 300.0, 350.0)
    assert clear.describe().endswith("over by 24.0%, NOT met")
    assert BudgetCheck("latency_ms", 400.0, 310.0, 300.0, 350.0).describe().endswith(", met")
    assert budget_checks(Budget(peak_mem_bytes=10**9), CHECK, steps=32) == ()  # memory is not timed
