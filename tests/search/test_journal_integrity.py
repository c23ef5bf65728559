"""A torn last journal record is dropped and the study resumes; a damaged line is refused with its
line number and the repair command, which recovers every record before it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from optuna.trial import TrialState

from dlmsearch.cli import main
from dlmsearch.search import open_study, run_study
from dlmsearch.search.context import StudyContext
from dlmsearch.search.journal_check import JournalCorruptError, repair_journal


def completed(run_dir: Path) -> dict[int, list[float]]:
    return {t.number: list(t.values) for t in open_study(run_dir).get_trials() if t.state == TrialState.COMPLETE}


def test_a_torn_last_record_is_dropped_and_the_study_resumes(make_context: Callable[..., StudyContext],
                                                             tmp_path: Path) -> None:
    context = make_context(warm_start=False)
    run_study(context.spec, tmp_path, n_trials=4, context=context, progress=False, write_outputs=False)
    before = completed(tmp_path)
    journal = tmp_path / "journal.log"
    last = journal.read_bytes().splitlines()[-1]
    with journal.open("ab") as f:  # a writer killed mid-append: half a record, no newline
        f.write(last[: len(last) // 2])
    summary = run_study(context.spec, tmp_path, n_trials=6, context=context, progress=False, write_outputs=False)
    assert journal.read_bytes().endswith(b"\n")
    after = completed(tmp_path)
    assert len(after) == 6 and len([t for t in summary.study.trials if t.state == TrialState.COMPLETE]) == 6
    assert {n: after[n] for n in before} == before  # completed trials unchanged


def test_a_damaged_line_is_refused_then_repaired(make_context: Callable[..., StudyContext], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # the repair leaves the last trial RUNNING; the resume fails it as stale after the grace period
    monkeypatch.setenv("DLMSEARCH_HEARTBEAT_S", "1")
    monkeypatch.setenv("DLMSEARCH_GRACE_S", "5")
    context = make_context(warm_start=False)
    run_study(context.spec, tmp_path, n_trials=4, context=context, progress=False, write_outputs=False)
    journal = tmp_path / "journal.log"
    lines = journal.read_bytes().splitlines(keepends=True)
    damaged_at = len(lines) - 3
    journal.write_bytes(b"".join(lines[: damaged_at - 1]) + b"\x00\x13garbage{\n" + b"".join(lines[damaged_at - 1:]))
    with pytest.raises(JournalCorruptError, match=f"{journal} line {damaged_at} is damaged") as raised:
        run_study(context.spec, tmp_path, n_trials=6, context=context, progress=False, write_outputs=False)
    assert f"dlmsearch journal repair {journal}" in str(raised.value)
    assert main(["pareto", str(tmp_path)]) == 2  # the CLI says the same, without a traceback
    err = capsys.readouterr().err
    assert f"line {damaged_at} is damaged" in err and "Traceback" not in err

    assert main(["journal", "repair", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"kept {damaged_at - 1} records" in out
    backups = list(tmp_path.glob("journal.log.damaged-*"))
    assert len(backups) == 1 and b"garbage" in backups[0].read_bytes()
    assert journal.read_bytes() == b"".join(lines[: damaged_at - 1])
    run_study(context.spec, tmp_path, n_trials=6, context=context, progress=False, write_outputs=False)
    assert len(completed(tmp_path)) == 6


def test_repair_leaves_a_sound_journal_alone(make_context: Callable[..., StudyContext], tmp_path: Path) -> None:
    context = make_context(warm_start=False)
    run_study(context.spec, tmp_path, n_trials=2, context=context, progress=False, write_outputs=False)
    before = (tmp_path / "journal.log").read_bytes()
    repair = repair_journal(tmp_path)
    assert repair.backup is None and repair.dropped_lines == 0 and repair.kept_records == before.count(b"\n")
    assert (tmp_path / "journal.log").read_bytes() == before
