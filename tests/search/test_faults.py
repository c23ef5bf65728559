"""A worker killed with SIGKILL mid-trial: its trial goes stale, becomes FAIL and runs again with the
same Plan; the restarted run does not hang on a leftover journal lock; completed trials are unchanged."""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path

import pytest
from optuna.trial import TrialState

from tests.search.test_workers import cli, load, recompute, snapshot, storage_for, warm_build, write_spec


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["journal", "postgres"])
def test_sigkill_mid_trial_is_retried_with_the_same_plan(kind: str, tmp_path: Path) -> None:
    name = f"kill-{uuid.uuid4().hex[:8]}"
    run_dir = tmp_path / "run"
    storage = storage_for(kind, run_dir)
    spec_path = write_spec(tmp_path, study=name, n_trials=4, warm_start=False)
    warm_build(spec_path)
    proc = cli("run", str(spec_path), "--out", str(run_dir), "--storage", storage)
    deadline = time.monotonic() + 300
    killed = None
    while time.monotonic() < deadline and proc.poll() is None:
        if kind != "journal" or (run_dir / "journal.log").exists():
            try:
                trials = load(storage, name).get_trials()
            except KeyError:  # the study is not created yet
                trials = []
            running = [t for t in trials if t.state == TrialState.RUNNING and "plan" in t.user_attrs]
            if sum(t.state == TrialState.COMPLETE for t in trials) >= 2 and running:
                proc.send_signal(signal.SIGKILL)
                killed = running[0]
                break
        time.sleep(0.1)
    proc.communicate(timeout=60)
    assert killed is not None, "the run ended before a trial could be killed mid-way"
    before = {t.number: snapshot(t) for t in load(storage, name).get_trials() if t.state == TrialState.COMPLETE}
    if kind == "journal":  # as if the kill had come in the middle of a journal write
        (run_dir / "journal.log.lock").touch()

    restart = cli("run", str(spec_path), "--out", str(run_dir), "--storage", storage)
    out, err = restart.communicate(timeout=600)
    assert restart.returncode == 0, err[-3000:]
    trials = load(storage, name).get_trials()
    by_number = {t.number: t for t in trials}
    assert by_number[killed.number].state == TrialState.FAIL
    retries = [t for t in trials if t.user_attrs.get("retry_of") == killed.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE and retries[0].user_attrs["retries"] == 1
    assert retries[0].params == killed.params and retries[0].user_attrs["plan"] == killed.user_attrs["plan"]
    assert {n: snapshot(by_number[n]) for n in before} == before
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4 and not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    if kind == "journal":
        assert not list(run_dir.glob("*.lock"))
    recompute(spec_path, complete)
