"""The command line: subcommands exist, user errors are one clear line, no traceback."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from dlmsearch.cli import main
from dlmsearch.evaluators import FullSettings
from dlmsearch.models import sampler
from dlmsearch.plan import SamplerSettings


def test_help_lists_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("generate", "plan", "validate", "demo"):
        assert command in out


def test_plan_init_then_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan_path = tmp_path / "plan.json"
    assert main(["plan", "init", "--bits", "4", "--sparsity", "0.5", "--timestep-groups", "3",
                 "-o", str(plan_path)]) == 0
    data = json.loads(plan_path.read_text())
    assert len(data["layers"]) == 42 and data["timestep_groups"] == [0.333333, 0.666667]
    assert main(["validate", str(plan_path), "--model", "shakespeare-char"]) == 0
    assert "valid Plan (42 layers, 3 timestep group(s))" in capsys.readouterr().out


def test_validate_reports_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan_path = tmp_path / "plan.json"
    main(["plan", "init", "--bits", "4", "-o", str(plan_path)])
    data = json.loads(plan_path.read_text())
    data["layers"]["model.layers.0.mlp.up_proj"]["weight_bits"] = [5]
    data["sampler"]["steps"] = 0
    plan_path.write_text(json.dumps(data))
    assert main(["validate", str(plan_path)]) == 2
    err = capsys.readouterr().err
    assert "2 invalid field(s)" in err and "weight_bits[0]: 5" in err and "sampler.steps: 0" in err
    assert "Traceback" not in err


def test_generate_prints_a_sample(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--prompt", "ROMEO.", "--steps", "8", "--gen-length", "16",
                 "--block-length", "8"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ROMEO.") and len(out[:-1]) == 6 + 16  # prompt + gen_length characters


def test_generate_defaults_are_the_samplers_but_16_token_blocks(monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    used: dict[str, Any] = {}

    def fake_generate(adapter: Any, prompt: torch.Tensor, seed: int, **settings: Any) -> torch.Tensor:
        used.update(settings)
        return prompt

    monkeypatch.setattr(sampler, "generate", fake_generate)
    assert main(["generate", "--prompt", "ROMEO."]) == 0
    assert used == {**dataclasses.asdict(SamplerSettings()), "block_length": 16}
    assert main(["generate", "--prompt", "ROMEO.", "--block-length", "64", "--steps", "8"]) == 0
    assert (used["block_length"], used["steps"]) == (64, 8)


def test_generate_rejects_bad_sampler_settings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--steps", "7", "--gen-length", "64", "--block-length", "32"]) == 2
    assert "steps=7: must be a multiple of the number of blocks" in capsys.readouterr().err


def test_unknown_model_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--model", "/nonexistent/llada"]) == 2
    assert "neither an embedded model" in capsys.readouterr().err


def test_apply_then_generate_with_the_plans_sampler(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan_path = tmp_path / "plan.json"
    main(["plan", "init", "--bits", "4", "--sparsity", "0.3", "--prune-method", "sink_wanda", "--steps", "8",
          "--gen-length", "16", "--block-length", "8", "-o", str(plan_path)])
    out = tmp_path / "compressed"
    assert main(["apply", str(plan_path), "--out", str(out), "--calibration-sequences", "2"]) == 0
    assert "42 quantized linears" in capsys.readouterr().out
    assert main(["generate", "--model", str(out), "--prompt", "ROMEO."]) == 0
    sample = capsys.readouterr().out[:-1]  # print's newline; the sample itself may hold newlines
    assert sample.startswith("ROMEO.") and len(sample) == 6 + 16  # gen_length from the Plan


def test_sinks_writes_a_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "sinks.html"
    assert main(["sinks", "--out", str(report), "--sequences", "2", "--seq-len", "32"]) == 0
    html = report.read_text()
    assert "plotly" in html.lower() and "<html" in html.lower()


def test_validate_reads_hardware_specs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = Path(__file__).parents[1] / "dlmsearch/cost_models/hardware/l4.yaml"
    assert main(["validate", str(good)]) == 0
    assert "valid hardware spec 'l4' (gpu)" in capsys.readouterr().out
    bad = tmp_path / "gpu.yaml"
    bad.write_text(good.read_text().replace("kind: gpu", "kind: quantum"))
    assert main(["validate", str(bad)]) == 2
    assert "kind: 'quantum' is not allowed" in capsys.readouterr().err


SMALL_FULL = ["--set", "infill_windows=2", "--set", "prompts=1", "--set", "unconditional=1",
              "--set", "calibration_sequences=2"]


def test_evaluate_scores_a_plan_with_either_evaluator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan_path = tmp_path / "plan.json"
    main(["plan", "init", "--bits", "2", "--steps", "8", "--gen-length", "16", "--block-length", "8",
          "-o", str(plan_path)])
    capsys.readouterr()
    assert main(["evaluate", str(plan_path), "--json", *SMALL_FULL]) == 0
    full = json.loads(capsys.readouterr().out)
    assert full["evaluator"] == "full" and full["fidelity"] == "full" and full["score"] > 0
    assert 0.0 <= full["metrics"]["agreement"] < 1.0 and "gen_nelbo" in full["metrics"]
    assert full["metrics"]["draws"] == FullSettings().draws and full["metrics"]["score_sd"] >= 0.0
    assert main(["evaluate", str(plan_path), "--evaluator", "proxy", "--fidelity", "low", "--set", "windows=2",
                 "--set", "low_fidelity_windows=1", "--set", "low_fidelity_infill_windows=1",
                 "--set", "calibration_sequences=2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("score: ") and "\nkl: " in out


def test_evaluate_reads_users_prompts_and_names_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan_path = tmp_path / "plan.json"
    main(["plan", "init", "--steps", "16", "--gen-length", "16", "--block-length", "8", "-o", str(plan_path)])
    capsys.readouterr()  # a dense Plan at one token per step: the full evaluator's reference itself
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("ROMEO.\\n\n\nTo be, or not\n")
    assert main(["evaluate", str(plan_path), "--prompts", str(prompts), "--json", *SMALL_FULL]) == 0
    dense = json.loads(capsys.readouterr().out)
    assert dense["score"] == 0.0 and dense["metrics"]["agreement"] == 1.0
    for extra, message in ((["--set", "rows=3"], "--set 'rows=3': allowed: KEY=VALUE with KEY one of"),
                           (["--set", "prompts=many"], "--set prompts='many': must be an integer"),
                           (["--set", "draws=0"], "draws=0: must be >= 1"),
                           (["--prompts", str(tmp_path / "none.txt")], "--prompts: "),
                           (["--evaluator", "proxy", "--prompts", str(prompts)], "only the full evaluator")):
        assert main(["evaluate", str(plan_path), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
