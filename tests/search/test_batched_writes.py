"""A trial's parameter and attribute writes reach the journal as one append, readable by plain Optuna."""

from __future__ import annotations

import threading
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from dlmsearch.search.storage import HeartbeatJournalStorage, batched_trial_writes, open_storage

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
DISTRIBUTIONS = {f"g{i}.w": CategoricalDistribution((2, 4, 8, 16)) for i in range(40)} | {
    "sparsity": FloatDistribution(0.0, 0.5)}


def _counting_appends(storage: HeartbeatJournalStorage, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = storage._backend.append_logs

    def append(logs: list) -> None:
        calls.append(len(logs))
        original(logs)

    monkeypatch.setattr(storage._backend, "append_logs", append)
    return calls


def test_one_append_per_batch_and_plain_optuna_reads_it_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "journal.log"
    storage = open_storage(path)
    assert isinstance(storage, HeartbeatJournalStorage)
    study = optuna.create_study(storage=storage, study_name="s", sampler=optuna.samplers.RandomSampler(seed=0))
    calls = _counting_appends(storage, monkeypatch)
    with batched_trial_writes(storage):
        trial = study.ask(DISTRIBUTIONS)  # creating the trial is written at once (its id is needed)
        trial.set_user_attr("plan", {"steps": 32})
        trial.storage.set_trial_system_attr(trial._trial_id, "constraints", [0.5])
    assert calls == [1, len(DISTRIBUTIONS) + 2]
    study.tell(trial, 1.0)
    plain = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path))))
    (read,) = plain.trials
    assert read.params == trial.params and len(read.params) == len(DISTRIBUTIONS)
    assert read.user_attrs == {"plan": {"steps": 32}} and read.system_attrs["constraints"] == [0.5]
    assert read.state == optuna.trial.TrialState.COMPLETE and read.value == 1.0


def test_other_writes_flush_first_and_other_threads_are_not_batched(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    storage = open_storage(tmp_path / "journal.log")
    assert isinstance(storage, HeartbeatJournalStorage)
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    calls = _counting_appends(storage, monkeypatch)
    with batched_trial_writes(storage):
        trial.set_user_attr("a", 1)
        trial.set_user_attr("b", 2)
        beat = threading.Thread(target=storage.record_heartbeat, args=(trial._trial_id,))
        beat.start()
        beat.join()
        assert calls == [1]  # the heartbeat thread wrote at once, the batch still waits
        study.set_user_attr("study-level", True)  # not a trial write: the batch goes first
        assert calls == [1, 2, 1]
    assert calls == [1, 2, 1]  # nothing left to flush
    reread = open_storage(tmp_path / "journal.log")
    assert reread.get_trial(trial._trial_id).user_attrs == {"a": 1, "b": 2}


def test_an_error_inside_the_block_still_writes_what_was_batched(tmp_path: Path) -> None:
    storage = open_storage(tmp_path / "journal.log")
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    with pytest.raises(RuntimeError), batched_trial_writes(storage):
        trial.set_user_attr("before", 1)
        raise RuntimeError("evaluator crashed")
    assert open_storage(tmp_path / "journal.log").get_trial(trial._trial_id).user_attrs == {"before": 1}
