"""Several workers on one study: stale trials, heartbeats, an exact study-wide budget, one warm start.

Workers (``dlmsearch worker``, or ``dlmsearch run`` processes on one storage) coordinate only
through the storage; every rule below holds on the journal file and on PostgreSQL.

- **Stale trials.** While a trial runs, a thread records its heartbeat
  (:func:`heartbeat`); before each ask :func:`fail_stale_trials` turns the RUNNING trials of dead
  workers FAIL and enqueues their Plans again (see :mod:`dlmsearch.search.storage`). The state
  change is a compare-and-set in the storage, so one stale trial is retried once however many
  workers see it.
- **Exact budget.** ``n_trials`` is the number of COMPLETE trials the study ends with, whatever
  the number of workers. A worker asks only while COMPLETE + admitted RUNNING < ``n_trials``.
  Several workers can still ask at once; trial numbers are unique and ordered by creation, so
  after the ask a trial is *admitted* only when fewer than ``n_trials`` trials with a lower number
  are COMPLETE, RUNNING or WAITING (:func:`is_surplus`). A surplus trial is not evaluated: it is
  told FAIL with the user attribute ``skipped`` (Optuna has no "skipped" state; FAIL keeps it out
  of the samplers' models and of every front). So at most ``n_trials`` trials complete: the
  highest-numbered COMPLETE trial saw all the others below it. And a worker leaves only when
  COMPLETE reaches ``n_trials``: while admitted trials of other workers still run it waits for them
  (a dead worker's trial goes stale and is retried), so the last worker standing finishes the
  budget. With a storage without heartbeats (SQLite, one worker) it leaves when COMPLETE + RUNNING
  reaches the budget, as before.
- **One warm start.** The warm-start Plans are enqueued by one worker only: the one that creates
  the claim study ``STUDY.warm-start-claim`` (study names are unique in every storage, so the
  creation is atomic); it enqueues, records ``dlmsearch.warm_start`` on the study and deletes the
  claim. The others wait until the warm starts are enqueued (so that they run first and none is left
  WAITING once the budget is reached), at most ``DLMSEARCH_WARM_START_WAIT_S`` seconds (default
  900). (A worker killed while it holds the claim leaves the claim study behind and the study
  without its warm starts; the others go on after the wait.)
"""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import optuna
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled
from optuna.trial import FrozenTrial, TrialState

from dlmsearch.search.attributes import ADMITTED_ATTR, SKIPPED_ATTR, WARM_START_ATTR, WARM_START_TRIAL_ATTR

logger = logging.getLogger("dlmsearch.search.workers")

CLAIM_SUFFIX = ".warm-start-claim"


def has_heartbeat(study: optuna.Study) -> bool:
    """Whether the study's storage records heartbeats (journal file, PostgreSQL)."""
    return is_heartbeat_enabled(study._storage)


def heartbeat_interval(study: optuna.Study) -> float:
    storage = study._storage
    return float(storage.get_heartbeat_interval() or 1.0) if isinstance(storage, BaseHeartbeat) else 1.0


def fail_stale_trials(study: optuna.Study) -> None:
    """FAIL the RUNNING trials of dead workers and enqueue their Plans again (Optuna's own cleanup,
    which the journal storage supports through :class:`~dlmsearch.search.storage.HeartbeatJournalStorage`)."""
    if not has_heartbeat(study):
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        optuna.storages.fail_stale_trials(study)
    failed = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if t.number in before]
    if failed:
        logger.warning("trials %s of dead workers (no heartbeat for the grace period) marked FAIL and enqueued again",
                       failed)


@contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """Record the trial's heartbeat every interval while the block runs (no-op without heartbeats).
    The thread is stopped and joined before the block's exit, so before the trial is told."""
    storage = study._storage
    if not has_heartbeat(study) or not isinstance(storage, BaseHeartbeat):
        yield
        return
    stop = threading.Event()
    interval = heartbeat_interval(study)

    def beat() -> None:
        while True:
            try:
                storage.record_heartbeat(trial._trial_id)
            except Exception as exc:  # a lost connection must not kill the trial; grace covers a gap
                logger.warning("heartbeat of trial %d not recorded: %s", trial.number, exc)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def counts(study: optuna.Study) -> tuple[int, int]:
    """(COMPLETE trials, RUNNING trials that count towards the budget).

    With heartbeats only admitted RUNNING trials count (see the module docstring); without, all."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
    complete = sum(t.state == TrialState.COMPLETE for t in trials)
    running = [t for t in trials if t.state == TrialState.RUNNING]
    if has_heartbeat(study):
        running = [t for t in running if t.system_attrs.get(ADMITTED_ATTR)]
    return complete, len(running)


def is_surplus(study: optuna.Study, trial: optuna.Trial, n_trials: int) -> bool:
    """Whether ``n_trials`` trials numbered below ``trial`` are COMPLETE, RUNNING or WAITING."""
    ahead = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING))
    return sum(t.number < trial.number for t in ahead) >= n_trials


def admit(study: optuna.Study, trial: optuna.Trial) -> None:
    """Mark ``trial`` as counting towards the budget (after :func:`is_surplus` said no)."""
    if has_heartbeat(study):
        study._storage.set_trial_system_attr(trial._trial_id, ADMITTED_ATTR, True)


def skip(study: optuna.Study, trial: optuna.Trial, n_trials: int) -> FrozenTrial:
    """Tell a surplus trial FAIL with the user attribute ``skipped`` (it was never evaluated)."""
    trial.set_user_attr(SKIPPED_ATTR, f"the study-wide budget of {n_trials} trials was already taken by other workers")
    return study.tell(trial, state=TrialState.FAIL)


def wait_for_warm_start(study: optuna.Study, timeout_s: float | None = None) -> bool:
    """Wait until the claiming worker has enqueued the warm starts; False after ``timeout_s``."""
    limit = timeout_s if timeout_s is not None else float(os.environ.get("DLMSEARCH_WARM_START_WAIT_S", "900"))
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        state = study._storage.get_study_system_attrs(study._study_id).get(WARM_START_ATTR)
        if isinstance(state, int):
            return True
        try:
            study._storage.get_study_id_from_name(study.study_name + CLAIM_SUFFIX)
        except KeyError:
            if state is None:
                return True  # nobody holds the claim and nobody is enqueueing: nothing to wait for
        time.sleep(0.2)
    logger.warning("the warm starts were not enqueued within %.0f s (a dead worker's claim?); going on", limit)
    return False


def claim_warm_start(study: optuna.Study, enqueue: Callable[[], int]) -> int | None:
    """Run ``enqueue`` in exactly one worker of the study; the number it returns, or None elsewhere."""
    storage = study._storage
    if WARM_START_ATTR in storage.get_study_system_attrs(study._study_id) or any(
            t.user_attrs.get(WARM_START_TRIAL_ATTR) for t in study.get_trials(deepcopy=False)):
        return None  # done already (a study from before the claim has warm_start trials)
    claim = study.study_name + CLAIM_SUFFIX
    try:
        with quiet_optuna():  # the claim is internal: no "new study" line for users
            claim_id = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], claim)
    except optuna.exceptions.DuplicatedStudyError:
        logger.info("another worker enqueues the warm starts")
        return None
    try:
        if WARM_START_ATTR in storage.get_study_system_attrs(study._study_id):
            return None  # done by a worker that released the claim just now
        # marked before enqueueing: a worker that dies half-way leaves fewer warm starts, never duplicates
        storage.set_study_system_attr(study._study_id, WARM_START_ATTR, "enqueueing")
        count = enqueue()
        storage.set_study_system_attr(study._study_id, WARM_START_ATTR, count)
        return count
    finally:
        storage.delete_study(claim_id)


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna logs only warnings inside the block: studies dlmsearch creates for its own bookkeeping
    (claims) or on the user's behalf (the CLI prints its own line) get no "A new study created" line."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(verbosity)
