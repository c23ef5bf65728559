"""Optuna storages for a study: a journal file in the run folder by default, or any storage URL.

- journal file (default ``RUN_DIR/journal.log``): safe for several worker processes on one
  machine (file lock), nothing to install;
- ``sqlite:///file.db``: one worker only (SQLite locks under concurrent writers);
- ``postgresql://user@host:port/db`` (psycopg2 from PyPI): many workers on many machines.

Both the journal file and PostgreSQL keep a heartbeat for every running trial: a worker records
one every ``DLMSEARCH_HEARTBEAT_S`` seconds (default 30) while a trial runs. Before each ask, a
RUNNING trial whose heartbeat is older than ``DLMSEARCH_GRACE_S`` seconds (default 120) belongs to
a dead worker (SIGKILL, lost machine): it becomes FAIL and its Plan is enqueued again, up to
``DLMSEARCH_MAX_RETRY`` times (default 3; :class:`RetryStaleTrial`). PostgreSQL keeps the heartbeat
in Optuna's heartbeat table; the journal file (Optuna has no heartbeat there) keeps it as the trial's
system attribute ``dlmsearch.heartbeat`` (:class:`HeartbeatJournalStorage`). A journal lock file
left by a worker killed during a write is removed after ``DLMSEARCH_LOCK_GRACE_S`` seconds
(default 30), so a restarted worker waits, it never hangs; the record such a worker was writing is
dropped and a damaged journal is refused with its line (:mod:`dlmsearch.search.journal_check`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.storages.journal._storage import JournalOperation
from optuna.trial import FrozenTrial, TrialState

from dlmsearch.search.attributes import ADMITTED_ATTR, HEARTBEAT_ATTR
from dlmsearch.search.journal_check import check_journal

logger = logging.getLogger("dlmsearch.search.storage")

JOURNAL_NAME = "journal.log"
HEARTBEAT_INTERVAL_S = 30
GRACE_PERIOD_S = 120
MAX_RETRY = 3
LOCK_GRACE_S = 30
#: System attributes a retried trial does not inherit.
UNINHERITED_SYSTEM_ATTRS = (HEARTBEAT_ATTR, ADMITTED_ATTR)


class StorageError(ValueError):
    """A storage URL that cannot be opened, named with what is allowed."""


def _setting(name: str, default: float) -> float:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise StorageError(f"environment variable {name}={text!r} is not allowed; allowed: a positive number of "
                           "seconds")
    return value


def heartbeat_settings() -> tuple[float, float, int]:
    """(heartbeat interval, grace period, retries): defaults, or the ``DLMSEARCH_*`` environment."""
    interval = _setting("DLMSEARCH_HEARTBEAT_S", HEARTBEAT_INTERVAL_S)
    grace = _setting("DLMSEARCH_GRACE_S", GRACE_PERIOD_S)
    if grace <= interval:
        raise StorageError(f"DLMSEARCH_GRACE_S={grace:g} is not allowed with DLMSEARCH_HEARTBEAT_S={interval:g}; "
                           "allowed: a grace period longer than the heartbeat interval")
    return interval, grace, int(_setting("DLMSEARCH_MAX_RETRY", MAX_RETRY))


class RetryStaleTrial:
    """Enqueue a stale (dead worker's) trial again with the same parameters, so the same Plan.

    Like Optuna's ``RetryFailedTrialCallback`` (same ``failed_trial`` / ``retry_history`` system
    attributes), but the retry does not inherit the dead trial's heartbeat, and it carries the user
    attributes ``retry_of`` (the first trial number) and ``retries``.
    """

    def __init__(self, max_retry: int) -> None:
        self.max_retry = max_retry

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        history = [*trial.system_attrs.get("retry_history", []), trial.number]
        if len(history) > self.max_retry:
            logger.warning(
                "trial %d of a dead worker is not retried: %d retries already (DLMSEARCH_MAX_RETRY)",
                trial.number, len(history) - 1)
            return
        system_attrs = {k: v for k, v in trial.system_attrs.items() if k not in UNINHERITED_SYSTEM_ATTRS}
        system_attrs.update(failed_trial=history[0], retry_history=history)
        user_attrs = {k: v for k, v in trial.user_attrs.items() if k == "warm_start"}
        user_attrs.update(retry_of=history[0], retries=len(history))
        study.add_trial(optuna.create_trial(state=TrialState.WAITING, params=trial.params,
                                            distributions=trial.distributions, user_attrs=user_attrs,
                                            system_attrs=system_attrs))


#: Journal operations a trial's own writes consist of (batched by ``batched_trial_writes``).
_BATCHED_OPS = frozenset({JournalOperation.SET_TRIAL_PARAM, JournalOperation.SET_TRIAL_USER_ATTR,
                          JournalOperation.SET_TRIAL_SYSTEM_ATTR})


def batched_trial_writes(storage: BaseStorage) -> contextlib.AbstractContextManager[None]:
    """``storage.batched_trial_writes()`` where the storage has it (the journal), else nothing."""
    batched = getattr(storage, "batched_trial_writes", None)
    return batched() if batched is not None else contextlib.nullcontext()


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """A journal storage with heartbeats: the journal file's stale-trial cleanup (see the module
    docstring). ``optuna.storages.fail_stale_trials`` works on it as on an RDB storage."""

    def __init__(self, backend: JournalFileBackend, heartbeat_interval: float, grace_period: float,
                 stale_trial_callback: Callable[[optuna.Study, FrozenTrial], None] | None) -> None:
        self._batch = threading.local()  # set before super().__init__, which replays the journal
        super().__init__(backend)
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.stale_trial_callback = stale_trial_callback

    @contextlib.contextmanager
    def batched_trial_writes(self) -> Iterator[None]:
        """The calling thread's trial parameter and attribute writes inside the block reach the
        journal as one locked, fsync'ed append at its end (or before any other write), instead of
        one append and one journal read each: a trial's ~50 parameters cost one append.

        Only this process's running trial is written meanwhile; a crash inside the block loses
        those writes with the trial it was running (failed as stale, then retried), nothing else.
        """
        if getattr(self._batch, "logs", None) is not None:
            yield  # nested: the outer block flushes
            return
        self._batch.logs = []
        try:
            yield
        finally:
            with self._thread_lock:
                self._flush_batch()
                self._batch.logs = None
                self._sync_with_backend()

    def _write_log(self, op_code: int, extra_fields: dict[str, Any]) -> None:
        logs = getattr(self._batch, "logs", None)
        if logs is not None and op_code in _BATCHED_OPS:
            logs.append({"op_code": op_code, "worker_id": self._replay_result.worker_id, **extra_fields})
            return
        self._flush_batch()
        super()._write_log(op_code, extra_fields)

    def _sync_with_backend(self) -> None:
        if getattr(self._batch, "logs", None):
            return  # writes are pending: reading the journal back would not show them yet
        super()._sync_with_backend()

    def _flush_batch(self) -> None:
        logs = getattr(self._batch, "logs", None)
        if logs:
            self._backend.append_logs(list(logs))
            logs.clear()

    def record_heartbeat(self, trial_id: int) -> None:
        # the trial may have ended (or another worker failed it as stale) meanwhile
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError, KeyError):
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        deadline = time.time() - self.grace_period
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            beat = trial.system_attrs.get(HEARTBEAT_ATTR)
            if not isinstance(beat, (int, float)):
                start = trial.datetime_start or datetime.now()
                beat = start.timestamp()
            if beat < deadline:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval  # type: ignore[return-value]  # a float works as well

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self.stale_trial_callback

    def get_failed_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self.stale_trial_callback


def default_journal(run_dir: str | Path) -> Path:
    """The journal file a run folder keeps when no other storage is given."""
    return Path(run_dir) / JOURNAL_NAME


def storage_pointer(url: str, run_dir: str | Path) -> str:
    """What a run folder's ``storage.txt`` holds for ``url``: a journal file inside the folder as a path
    relative to it (the folder can be moved or opened from anywhere), any other journal file as an
    absolute path, other URLs as they are."""
    if storage_scheme(url) != "journal":
        return url
    path, folder = Path(url).resolve(), Path(run_dir).resolve()
    return str(path.relative_to(folder)) if path.is_relative_to(folder) else str(path)


def resolve_pointer(pointer: str, run_dir: str | Path) -> str:
    """The storage a run folder's ``storage.txt`` names (see :func:`storage_pointer`). A relative journal
    path is the folder's own file; folders written before pointers were relative hold a path relative to
    the directory of their ``dlmsearch run``, used where the folder has no such file."""
    if storage_scheme(pointer) != "journal" or Path(pointer).is_absolute():
        return pointer
    inside = Path(run_dir) / pointer
    return str(inside) if inside.exists() or not Path(pointer).exists() else pointer


def storage_scheme(url: str | Path) -> str:
    """``journal`` for a file path, else the URL scheme without its driver (``postgresql``, ``sqlite``)."""
    text = str(url)
    return "journal" if "://" not in text else text.split("://", 1)[0].split("+", 1)[0]


def check_workers(url: str | Path, workers: int = 1, shared: bool = False) -> None:
    """Refuse SQLite for several workers (``workers`` > 1, or ``shared``: a ``dlmsearch worker``)."""
    text = str(url)
    scheme = storage_scheme(text)
    if scheme == "sqlite" and (workers > 1 or shared):
        who = f"{workers} workers" if workers > 1 else "`dlmsearch worker` (several processes share the study)"
        raise StorageError(f"storage: {text!r} with {who} is not allowed: SQLite locks when several "
                           "processes write ('database is locked'); allowed: a journal file for several workers on "
                           "one machine (the default RUN_DIR/journal.log), postgresql://... for several machines, "
                           "or `dlmsearch run` (one process) with SQLite")


def open_storage(url: str | Path, workers: int = 1, shared: bool = False) -> BaseStorage:
    """Open ``url``: a journal file path or an Optuna storage URL (see the module docstring).

    ``workers`` > 1 or ``shared`` (a ``dlmsearch worker``, which shares the study with other
    processes) refuses SQLite.
    """
    text = str(url)
    scheme = storage_scheme(text)
    interval, grace, retries = heartbeat_settings()
    if scheme == "journal":
        path = Path(text)
        if not path.parent.is_dir():
            raise StorageError(f"storage: {text!r} is not allowed; allowed: a journal file in an existing folder")
        # the open(O_EXCL) lock works on every file system the symlink lock works on, and on NFS
        lock = JournalFileOpenLock(str(path), grace_period=max(1, int(_setting("DLMSEARCH_LOCK_GRACE_S",
                                                                               LOCK_GRACE_S))))
        check_journal(path, lock)
        return HeartbeatJournalStorage(JournalFileBackend(str(path), lock_obj=lock), interval, grace,
                                       RetryStaleTrial(retries))
    check_workers(text, workers, shared)
    if scheme not in ("sqlite", "postgresql", "mysql"):
        raise StorageError(f"storage: {text!r} is not allowed; allowed: a journal file path, sqlite:///FILE, "
                           "postgresql://USER@HOST:PORT/DB or mysql://...")
    if scheme == "postgresql" and "+" not in text.split("://", 1)[0]:
        text = "postgresql+psycopg2://" + text.split("://", 1)[1]
    heartbeat: dict[str, Any] = {} if scheme == "sqlite" else {
        "heartbeat_interval": max(1, round(interval)), "grace_period": max(2, round(grace)),
        "heartbeat_stale_trial_callback": RetryStaleTrial(retries)}
    try:
        with warnings.catch_warnings():  # heartbeat_interval: experimental since Optuna 2.9, stable in practice
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(text, **heartbeat)
    except ImportError as exc:
        raise StorageError(f"storage: {text!r} needs a database driver: {exc}; install it with "
                           "`pip install psycopg2-binary` (PostgreSQL) or `pip install pymysql` (MySQL)") from None
    except Exception as exc:  # SQLAlchemy raises many types for a bad URL or an unreachable server
        raise StorageError(f"storage: cannot open {text!r}: {str(exc).splitlines()[0]}") from None

