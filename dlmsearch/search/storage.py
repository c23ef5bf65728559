"""Optuna storages for a study: a journal file in the run folder by default, or any storage URL.

- journal file (default ``RUN_DIR/journal.log``): safe for several worker processes on one
  machine (file lock), nothing to install;
- ``sqlite:///file.db``: one worker only (SQLite locks under concurrent writers);
- ``postgresql://user@host:port/db`` (psycopg2 from PyPI): many workers on many machines, with
  heartbeats that fail the trials of a dead worker.
"""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

JOURNAL_NAME = "journal.log"
HEARTBEAT_INTERVAL_S = 30
GRACE_PERIOD_S = 120


class StorageError(ValueError):
    """A storage URL that cannot be opened, named with what is allowed."""


def default_journal(run_dir: str | Path) -> Path:
    """The journal file a run folder keeps when no other storage is given."""
    return Path(run_dir) / JOURNAL_NAME


def open_storage(url: str | Path, workers: int = 1) -> BaseStorage:
    """Open ``url``: a journal file path or an Optuna storage URL (see the module docstring)."""
    text = str(url)
    if "://" not in text:
        path = Path(text)
        if not path.parent.is_dir():
            raise StorageError(f"storage: {text!r} is not allowed; allowed: a journal file in an existing folder")
        # the open(O_EXCL) lock works on every file system the symlink lock works on, and on NFS
        return JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))
    scheme = text.split("://", 1)[0].split("+", 1)[0]
    if scheme == "sqlite" and workers > 1:
        raise StorageError(f"storage: {text!r} with {workers} workers is not allowed: SQLite locks when several "
                           "processes write ('database is locked'); allowed: a journal file for several workers on "
                           "one machine, postgresql://... for several machines")
    if scheme not in ("sqlite", "postgresql", "mysql"):
        raise StorageError(f"storage: {text!r} is not allowed; allowed: a journal file path, sqlite:///FILE, "
                           "postgresql://USER@HOST:PORT/DB or mysql://...")
    if scheme == "postgresql" and "+" not in text.split("://", 1)[0]:
        text = "postgresql+psycopg2://" + text.split("://", 1)[1]
    heartbeat = {} if scheme == "sqlite" else {"heartbeat_interval": HEARTBEAT_INTERVAL_S,
                                               "grace_period": GRACE_PERIOD_S,
                                               "failed_trial_callback": optuna.storages.RetryFailedTrialCallback(3)}
    try:
        return RDBStorage(text, **heartbeat)  # type: ignore[arg-type]
    except ImportError as exc:
        raise StorageError(f"storage: {text!r} needs a database driver: {exc}; install it with "
                           "`pip install psycopg2-binary` (PostgreSQL) or `pip install pymysql` (MySQL)") from None
    except Exception as exc:  # SQLAlchemy raises many types for a bad URL or an unreachable server
        raise StorageError(f"storage: cannot open {text!r}: {str(exc).splitlines()[0]}") from None
