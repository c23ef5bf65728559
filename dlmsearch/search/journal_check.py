"""Journal file integrity: drop a torn last record, refuse a damaged one, repair on request.

Optuna's journal file is one JSON record per line, appended under a lock and fsync'ed. A writer
killed in the middle of an append leaves a last line without its newline: the record was never
acknowledged, Optuna ignores it, but the next append would be glued onto it and damage the file.
:func:`check_journal` (run whenever a journal is opened, under the journal's lock, so no append is
in flight) cuts that torn tail off. Anything else that does not parse (a disk error, another
program writing into the file) is refused with the file and line, and the recovery command::

    dlmsearch journal repair RUN_DIR/journal.log

which keeps every record before the first damaged line and saves the damaged file beside it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from optuna.storages.journal import JournalFileOpenLock

logger = logging.getLogger("dlmsearch.search.journal_check")


class JournalCorruptError(ValueError):
    """A journal file with a damaged record before its end; the message names the line and the fix."""


@dataclass(frozen=True)
class JournalRepair:
    """What :func:`repair_journal` did."""

    kept_records: int
    dropped_lines: int
    backup: Path | None


def first_bad_line(data: bytes) -> tuple[int, str] | None:
    """(1-based line number, reason) of the first complete line that is not a journal record, or None."""
    for number, line in enumerate(data.split(b"\n")[:-1], start=1):  # the last piece follows the final newline
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return number, f"not JSON: {exc}"
        if not isinstance(record, dict) or "op_code" not in record:
            return number, "JSON but not an Optuna journal record (no op_code)"
    return None


def check_journal(path: Path, lock: JournalFileOpenLock) -> int:
    """Drop a torn last record of ``path`` and check every other line; returns the bytes dropped.

    Raises :class:`JournalCorruptError` naming the first damaged line and the repair command.
    """
    if not path.is_file() or path.stat().st_size == 0:
        return 0
    lock.acquire()
    try:
        data = path.read_bytes()
        torn = len(data) - (data.rfind(b"\n") + 1)
        if torn:
            with path.open("r+b") as f:
                f.truncate(len(data) - torn)
                f.flush()
                os.fsync(f.fileno())
            logger.warning("%s: dropped a torn last record (%d bytes) left by a writer stopped mid-append",
                           path, torn)
            data = data[:-torn]
    finally:
        lock.release()
    bad = first_bad_line(data)
    if bad is not None:
        line, reason = bad
        raise JournalCorruptError(
            f"storage: {path} line {line} is damaged ({reason}); the records before it are intact. Recover them "
            f"(the damaged file is kept beside it) with: dlmsearch journal repair {path}")
    return torn


def repair_journal(path: str | Path) -> JournalRepair:
    """Keep the records of ``path`` before its first damaged line; the original goes to
    ``<path>.damaged-<time>``. A journal without damage is left as it is."""
    file = Path(path)
    if file.is_dir():
        file = file / "journal.log"
    if not file.is_file():
        raise FileNotFoundError(f"journal: {str(file)!r} is not a file; allowed: a journal file or a run folder "
                                "holding journal.log")
    data = file.read_bytes()
    end = data.rfind(b"\n") + 1
    bad = first_bad_line(data[:end])
    if bad is None and end == len(data):
        return JournalRepair(data.count(b"\n"), 0, None)
    keep_lines = (bad[0] - 1) if bad is not None else data[:end].count(b"\n")
    kept = b"".join(line + b"\n" for line in data.split(b"\n")[:keep_lines])
    backup = file.with_name(f"{file.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(file, backup)
    tmp = file.with_name(file.name + ".repairing")
    with tmp.open("wb") as f:
        f.write(kept)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, file)
    total = data.count(b"\n") + (1 if end < len(data) else 0)
    return JournalRepair(keep_lines, total - keep_lines, backup)
