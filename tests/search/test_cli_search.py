"""The search from the command line on the embedded model: run, resume, pareto, report, export, apply."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from dlmsearch.cli import main
from dlmsearch.plan import load_plan

SPEC = {
    "study": "cli",
    "hardware": "x86-avx512-laptop",
    "budget": {"latency_fraction": 0.8},
    "objectives": ["quality", "latency_ms"],
    "space": {"weight_bits": [4, 8, 16], "sparsity": {"min": 0.0, "max": 0.2, "step": 0.2}, "steps": [8, 16],
              "block_lengths": [16], "layer_grouping": "contiguous", "layer_groups": 2},
    "generation": {"gen_length": 16, "prompt_length": 16},
    "evaluator": {"fidelity": "multi", "settings": {"windows": 2, "low_fidelity_windows": 1, "trajectory_prompts": 1,
                                                    "calibration_sequences": 2, "repeats": 2, "unconditional_rows": 1,
                                                    "infill_windows": 2, "low_fidelity_infill_windows": 1}},
    "sampler": "tpe",
    "n_trials": 3,
    "warm_start": False,
    "verify_front": 2,
    "verify_settings": {"infill_windows": 2, "prompts": 2, "unconditional": 1, "nelbo_repeats": 2,
                        "calibration_sequences": 2, "draws": 1},
}


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "cli.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    return path


@pytest.mark.slow
def test_run_resume_pareto_report_export_apply(spec_file: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    assert main(["run", str(spec_file), "--out", str(run_dir), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "study cli: 3 trials" in out and "report.html" in out
    assert "front verified by the full evaluator" in out
    assert {"spec.yaml", "journal.log", "report.html", "pareto.json", "storage.txt"} <= {
        p.name for p in run_dir.iterdir()}
    assert main(["run", str(spec_file), "--out", str(run_dir), "--n-trials", "4", "--threads", "1"]) == 0
    assert "study cli: 4 trials" in capsys.readouterr().out

    assert main(["pareto", str(run_dir), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(row["feasible"] for row in rows)
    verified = [row for row in rows if row["verified"]]
    assert 1 <= len(verified) <= SPEC["verify_front"] and all(row["proxy_quality"] is not None for row in verified)
    assert main(["pareto", str(run_dir)]) == 0
    assert "Plans on the feasible front" in capsys.readouterr().out

    report = tmp_path / "again.html"
    assert main(["report", str(run_dir), "--out", str(report)]) == 0 and report.stat().st_size > 100_000

    plan_path = tmp_path / "plan.json"
    # --force: at these tiny verify settings (2 prompted rows) the verified Plans' text may count as
    # collapsed, and the pick would fall back to the proxy's Plans (tests/search/test_degenerate_export.py)
    pick = ["--pick", "min quality where latency_ms <= 1e12", "--force"]
    assert main(["export", str(run_dir), *pick, "-o", str(plan_path)]) == 0
    assert "(full evaluator, verified" in capsys.readouterr().out
    best = min(verified, key=lambda r: r["metrics"]["quality"])  # the pick chooses among the verified Plans
    same = ["--trial", str(best["number"]), "--force", "-o", str(tmp_path / "same.json")]
    assert main(["export", str(run_dir), *same]) == 0
    assert load_plan(tmp_path / "same.json") == load_plan(plan_path)
    assert main(["apply", str(plan_path), "--out", str(tmp_path / "compressed"), "--calibration-sequences", "2"]) == 0

    small = [f"--set={k}={v}" for k, v in SPEC["verify_settings"].items()]
    assert main(["measure", str(run_dir), "--trial", str(best["number"]), "--rounds", "1", *small]) == 0
    out = capsys.readouterr().out
    assert f"measuring trial {best['number']}" in out and "x faster" in out and "predicted" in out
    assert "(with the measurement)" in out and "Measured on a real machine" in (run_dir / "report.html").read_text()
    from dlmsearch.search import open_study
    from dlmsearch.search.measurements import measurements

    measured = measurements(open_study(run_dir))[best["number"]]
    assert measured.check.rounds == 1 and measured.hardware == SPEC["hardware"]
    assert measured.check.plan_score == pytest.approx(best["metrics"]["quality"])  # the verification's score, reused
    assert main(["pareto", str(run_dir), "--json"]) == 0
    speedups = {row["number"]: row["measured_speedup"] for row in json.loads(capsys.readouterr().out)}
    assert speedups[best["number"]] == pytest.approx(measured.check.speedup)
    assert all(value is None for number, value in speedups.items() if number != best["number"])


def test_user_errors_are_one_line(spec_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**SPEC, "sampler": "annealing", "n_trials": -1}))
    assert main(["run", str(bad), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "sampler: 'annealing'" in err and "n_trials: -1" in err and "Traceback" not in err
    assert main(["pareto", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: --trial and --pick exclude each other
        main(["export", str(tmp_path), "--trial", "1", "--pick", "min quality", "-o", "p.json"])


@pytest.mark.slow
def test_sigterm_mid_trial_fails_the_trial_and_exits_non_zero(spec_file: Path, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    import optuna

    from dlmsearch.search import open_study

    run_dir = tmp_path / "run"
    spec = yaml.safe_load(spec_file.read_text())
    spec_file.write_text(yaml.safe_dump({**spec, "n_trials": 50}))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # a signal can land between two trials (milliseconds of bookkeeping, longer on a loaded machine), where
    # nothing is running to fail: then the run is resumed and signalled again
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-m", "dlmsearch.cli", "run", str(spec_file), "--out",
                                 str(run_dir), "--threads", "1"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if (run_dir / "journal.log").exists():
                trials = open_study(run_dir).get_trials()
                if any(t.state == optuna.trial.TrialState.COMPLETE for t in trials) and any(
                        t.state == optuna.trial.TrialState.RUNNING for t in trials):
                    break
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err
        assert "Traceback" not in err
        states = [t.state for t in open_study(run_dir).get_trials()]
        assert optuna.trial.TrialState.RUNNING not in states
        if "marked FAIL" in err:
            break
    assert "marked FAIL" in err and optuna.trial.TrialState.FAIL in states
    assert not list(run_dir.glob("*.lock"))


@pytest.mark.slow
def test_the_same_seed_gives_the_same_plans_in_fresh_processes(spec_file: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    from dlmsearch.search import open_study

    plans = []
    for name in ("first", "second"):
        run_dir = tmp_path / name
        subprocess.run([sys.executable, "-m", "dlmsearch.cli", "run", str(spec_file), "--out", str(run_dir),
                        "--threads", "1"], check=True, capture_output=True, timeout=600)
        plans.append([(json.dumps(t.user_attrs["plan"]), t.values) for t in open_study(run_dir).get_trials()])
    assert len(plans[0]) == 3 and plans[0] == plans[1]


def test_the_cli_says_when_remote_code_is_trusted(spec_file: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(spec_file)]) == 0
    assert "remote code" not in capsys.readouterr().err.replace("-", " ")  # off unless asked for
    spec = yaml.safe_load(spec_file.read_text())
    spec_file.write_text(yaml.safe_dump({**spec, "trust_remote_code": True}))
    assert main(["run", str(spec_file), "--out", str(tmp_path / "run"), "--storage", "redis://nowhere/0"]) == 2
    err = capsys.readouterr().err
    assert "trust_remote_code is on (set in the spec)" in err and "redis://nowhere/0" in err
    assert main(["validate", str(spec_file), "--trust-remote-code"]) == 0
    assert "--trust-remote-code is on" in capsys.readouterr().err
