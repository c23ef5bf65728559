"""Many workers on one study: a journal file and PostgreSQL; exact budget, one warm start, values recomputed.

The PostgreSQL test needs a server: ``DLMSEARCH_TEST_POSTGRES=postgresql+psycopg2://USER@HOST:PORT/DB``
(``.ci/run`` starts one on loopback). Without it the test is skipped on a developer machine and fails
under CI (``CI`` set), so CI cannot pass without running it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState

from dlmsearch.plan import Plan
from dlmsearch.search.attributes import WARM_START_ATTR
from dlmsearch.search.context import build_context
from dlmsearch.search.spec import spec_from_dict
from dlmsearch.search.storage import StorageError, open_storage
from dlmsearch.search.verification import plans_to_verify, verifications
from tests.search.test_cli_search import SPEC

#: The CLI test's tiny spec on the embedded model, with warm starts and a 6-trial budget.
WORKER_SPEC: dict[str, Any] = {**SPEC, "study": "workers", "n_trials": 6, "warm_start": True}
#: Short heartbeats for the tests (the defaults are 30 s and 120 s).
FAST_HEARTBEAT = {"DLMSEARCH_HEARTBEAT_S": "0.5", "DLMSEARCH_GRACE_S": "3", "DLMSEARCH_LOCK_GRACE_S": "2"}


def postgres_url() -> str:
    """The test server's URL; skip without one, except under CI where a missing server is a failure."""
    url = os.environ.get("DLMSEARCH_TEST_POSTGRES")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CI is set but DLMSEARCH_TEST_POSTGRES is not: .ci/run starts a PostgreSQL server and sets it")
        pytest.skip("no PostgreSQL server: set DLMSEARCH_TEST_POSTGRES (or run .ci/run)")
    return url


def write_spec(tmp_path: Path, **overrides: Any) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**WORKER_SPEC, **overrides}))
    return path


def storage_for(kind: str, run_dir: Path) -> str:
    run_dir.mkdir(parents=True, exist_ok=True)
    return str(run_dir / "journal.log") if kind == "journal" else postgres_url()


def cli(*args: str, new_session: bool = False) -> subprocess.Popen[str]:
    """A ``dlmsearch`` subprocess with one torch thread and the tests' short heartbeat."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **FAST_HEARTBEAT}
    return subprocess.Popen([sys.executable, "-m", "dlmsearch.cli", *args, "--threads", "1"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=new_session)


def load(storage: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(storage))


def snapshot(trial: optuna.trial.FrozenTrial) -> tuple[Any, ...]:
    """What must not change once a trial is COMPLETE."""
    return (trial.number, trial.state, trial.params, trial.values, trial.user_attrs, trial.datetime_complete)


def recompute(spec_path: Path, trials: list[optuna.trial.FrozenTrial]) -> None:
    """Every COMPLETE trial's Plan and values equal a recomputation in this process."""
    spec = spec_from_dict(yaml.safe_load(spec_path.read_text()))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ctx = build_context(spec)
        for trial in trials:
            plan = Plan.from_dict(trial.user_attrs["plan"])
            assert ctx.space.plan_from_params(trial.params) == plan, trial.number
            cost = ctx.cost_model.cost(plan, ctx.hardware)
            quality = ctx.evaluator.evaluate(plan, trial.user_attrs["fidelity"]).score
            metrics = {"quality": quality, "latency_ms": cost.latency_ms, "peak_mem_bytes": float(cost.peak_mem_bytes)}
            assert trial.values == pytest.approx([metrics[o] for o in spec.objectives], rel=1e-9, abs=1e-12), (
                trial.number)
    finally:
        torch.set_num_threads(threads)


def warm_build(spec_path: Path) -> None:
    """Build the dense reference once here, so the workers find it in the cache and do not race on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        build_context(spec_from_dict(yaml.safe_load(spec_path.read_text())))
    finally:
        torch.set_num_threads(threads)


def run_workers(spec_path: Path, storage: str, tmp_path: Path, count: int = 4, groups: int = 1,
                timeout: float = 900) -> list[str]:
    """``count`` ``dlmsearch worker`` processes in ``groups`` process groups (simulated machines); their
    standard outputs."""
    procs = [cli("worker", str(spec_path), "--storage", storage, "--out", str(tmp_path / f"worker{i}"),
                 new_session=groups > 1 and i % groups == 1) for i in range(count)]
    deadline = time.monotonic() + timeout
    outputs = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for other in procs:
                other.kill()
            raise
        outputs.append((proc.returncode, out, err))
    for code, out, err in outputs:
        assert code == 0, err[-3000:]
        assert "worker done" in out and "Traceback" not in err
    return [out for _, out, _ in outputs]


def check_one_verifier_per_plan(storage: str, name: str, outputs: list[str]) -> None:
    """Every Plan to verify was verified, by exactly one worker, and no claim is left behind."""
    study = load(storage, name)
    targets = [t.number for t in plans_to_verify(study.get_trials(), WORKER_SPEC["verify_front"])]
    assert targets and sorted(verifications(study)) == sorted(targets)
    scored = [int(m.group(1)) for out in outputs for m in re.finditer(r"verified (\d+) front Plan", out)]
    assert len(scored) == len(outputs) and sum(scored) == len(targets), outputs
    summaries = optuna.get_all_study_summaries(open_storage(storage))
    left = [s.study_name for s in summaries if s.study_name.startswith(name)]
    assert left == [name]


def check_many_workers(spec_path: Path, storage: str, name: str, n_trials: int) -> None:
    trials = load(storage, name).get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == n_trials, [(t.number, t.state.name, t.user_attrs.get("skipped")) for t in trials]
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)) and sorted(numbers) == list(range(len(trials)))
    # every FAIL trial is a surplus one that was never evaluated
    assert all("skipped" in t.user_attrs for t in trials if t.state == TrialState.FAIL)
    warm = [t for t in trials if t.user_attrs.get("warm_start")]
    params = [tuple(sorted(t.params.items())) for t in warm]
    assert warm and len(params) == len(set(params)), "a warm-start Plan was enqueued twice"
    study = load(storage, name)
    assert study._storage.get_study_system_attrs(study._study_id).get(WARM_START_ATTR) == len(warm)
    assert name + ".warm-start-claim" not in [s.study_name for s in optuna.get_all_study_summaries(
        open_storage(storage))]
    recompute(spec_path, complete)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["journal", "postgres"])
def test_four_workers_exact_budget(kind: str, tmp_path: Path) -> None:
    name = f"workers-{uuid.uuid4().hex[:8]}"
    n_trials = 6
    storage = storage_for(kind, tmp_path / "run")
    spec_path = write_spec(tmp_path, study=name, n_trials=n_trials)
    warm_build(spec_path)
    outputs = run_workers(spec_path, storage, tmp_path, count=4, groups=1 if kind == "journal" else 2)
    check_many_workers(spec_path, storage, name, n_trials)
    check_one_verifier_per_plan(storage, name, outputs)
    if kind == "journal":
        assert not list((tmp_path / "run").glob("*.lock"))


def test_sqlite_refused_for_workers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dlmsearch.cli import main

    url = f"sqlite:///{tmp_path / 'study.db'}"
    with pytest.raises(StorageError, match="database is locked"):
        open_storage(url, workers=4)
    with pytest.raises(StorageError, match="dlmsearch worker"):
        open_storage(url, shared=True)
    open_storage(url)  # one process: fine
    spec_path = write_spec(tmp_path)
    assert main(["worker", str(spec_path), "--storage", url, "--out", str(tmp_path / "w"), "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert "SQLite locks" in err and "journal file" in err and "Traceback" not in err
