"""Study specs: defaults, conversions, and every bad field reported at once."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from dlmsearch.evaluators import FIDELITIES, ProxySettings
from dlmsearch.search.spec import StudySpecError, load_study_spec, spec_from_dict

REPO = Path(__file__).resolve().parents[2]


def test_minimal_spec_takes_defaults() -> None:
    spec = spec_from_dict({"study": "s"})
    assert spec.model == "shakespeare-char" and spec.hardware == "local"
    assert spec.objectives == ("quality", "latency_ms", "peak_mem_bytes")
    assert spec.budget.limits() == {}
    assert spec.space.sparsity.values() == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)


def test_budget_in_gb_becomes_bytes_and_yaml_exponents_are_numbers() -> None:
    spec = spec_from_dict({"study": "s", "budget": {"peak_mem_gb": "2e1", "latency_ms": 40}})
    assert spec.budget.peak_mem_bytes == 20_000_000_000  # GB, not GiB
    assert spec.budget.limits() == {"latency_ms": 40.0, "peak_mem_bytes": 2e10}


def test_resolved_spec_round_trips_through_yaml() -> None:
    spec = spec_from_dict({"study": "s", "budget": {"latency_ms": 40}, "space": {"steps": [32, 16]}})
    again = spec_from_dict(yaml.safe_load(spec.to_yaml()))
    assert again == spec
    assert again.space.steps == (16, 32)


@pytest.mark.parametrize(("data", "fragment"), [
    ({"study": "s", "colour": 1}, "colour: unknown field"),
    ({}, "study: missing"),
    ({"study": "s", "objectives": ["quality"]}, "objectives"),
    ({"study": "s", "objectives": ["quality", "speed"]}, "'speed'"),
    ({"study": "s", "sampler": "cmaes"}, "sampler: 'cmaes'"),
    ({"study": "s", "n_trials": 0}, "n_trials: 0"),
    ({"study": "s", "budget": {"latency_ms": -1}}, "budget.latency_ms: -1"),
    ({"study": "s", "budget": {"tokens": 3}}, "budget.tokens: unknown field"),
    ({"study": "s", "space": {"weight_bits": [5]}}, "space.weight_bits: [5]"),
    ({"study": "s", "space": {"sparsity": {"min": 0.5, "max": 0.2}}}, "space.sparsity.max"),
    ({"study": "s", "space": {"layer_grouping": "rows"}}, "space.layer_grouping: 'rows'"),
    ({"study": "s", "space": {"steps": [3], "block_lengths": [16]}}, "space.steps: 3"),
    ({"study": "s", "space": {"structures": ["heads"], "layer_grouping": "per_layer"}}, "space.structures"),
    ({"study": "s", "space": {"structures": [124]}}, "write \"2:4\" in quotes"),
    ({"study": "s", "storage": "redis://x"}, "storage: 'redis://x'"),
    ({"study": "s", "evaluator": {"fidelity": "medium"}}, "evaluator.fidelity: 'medium'"),
    ({"study": "s", "evaluator": {"settings": {"windows": 0}}}, "evaluator.settings.windows: 0"),
    ({"study": "s", "evaluator": {"settings": {"infill_windows": -1}}}, "evaluator.settings.infill_windows: -1"),
    ({"study": "s", "evaluator": {"settings": {"step_nelbo_repeats": 0}}}, "evaluator.settings.step_nelbo_repeats: 0"),
    ({"study": "s", "evaluator": {"settings": {"infill_weight": "high"}}}, "evaluator.settings.infill_weight: 'high'"),
    ({"study": "s", "evaluator": {"data_files": ["/no/such/file.txt"]}}, "evaluator.data_files"),
    ({"study": "s", "generation": {"gen_length": "long"}}, "generation.gen_length: 'long'"),
])
def test_bad_field_is_named_with_value_and_allowed(data: dict[str, Any], fragment: str) -> None:
    with pytest.raises(StudySpecError) as info:
        spec_from_dict(data)
    assert fragment in str(info.value)
    assert "allowed" in str(info.value) or "missing" in str(info.value) or "unknown" in str(info.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(StudySpecError) as info:
        spec_from_dict({"study": "s", "sampler": "x", "n_trials": -2, "space": {"act_bits": [7]}, "bogus": 1})
    assert len(info.value.problems) == 4


def test_files_that_are_not_specs_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(StudySpecError, match="no such file"):
        load_study_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("study: [unclosed\n")
    with pytest.raises(StudySpecError, match="not valid YAML"):
        load_study_spec(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(StudySpecError, match="mapping"):
        load_study_spec(empty)


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "studies").glob("*.yaml")))
def test_shipped_studies_are_valid(name: str) -> None:
    """Valid as shipped, except that a template's ``/path/to/...`` checkpoint must be edited first."""
    path = REPO / "studies" / name
    data = yaml.safe_load(path.read_text())
    if str(data["model"]).startswith("/path/to/"):
        with pytest.raises(StudySpecError, match=r"1 problem\(s\):\n  - model: '/path/to/"):
            load_study_spec(path)
        data["model"] = "shakespeare-char"
        assert spec_from_dict(data, str(path)).study
    else:
        assert load_study_spec(path).study


def test_relative_budgets_resolve_against_the_dense_plan() -> None:
    spec = spec_from_dict({"study": "s", "budget": {"latency_fraction": 0.5, "peak_mem_gb": 1}})
    dense = {"latency_ms": 300.0, "peak_mem_bytes": 4e9}
    assert spec.budget.limits(dense) == {"latency_ms": 150.0, "peak_mem_bytes": 1e9}
    with pytest.raises(ValueError, match="dense"):
        spec.budget.limits()
    with pytest.raises(StudySpecError, match="only one of latency_fraction and latency_ms"):
        spec_from_dict({"study": "s", "budget": {"latency_fraction": 0.5, "latency_ms": 3}})


def test_every_evaluator_setting_reaches_the_proxy() -> None:
    knobs = {f.name: f.default for f in dataclasses.fields(ProxySettings) if f.name not in ("split", "batch_size")}
    spec = spec_from_dict({"study": "s", "evaluator": {"settings": knobs}})
    assert ProxySettings(**dict(spec.evaluator.settings)) == ProxySettings()
    for key in ("split", "batch_size"):  # the data split and batching are not knobs
        with pytest.raises(StudySpecError, match=f"evaluator.settings.{key}: unknown field"):
            spec_from_dict({"study": "s", "evaluator": {"settings": {key: ProxySettings().batch_size}}})
    spec = spec_from_dict({"study": "s", "evaluator": {"settings": {
        "nelbo_repeats": 4, "step_nelbo_repeats": 32, "dense_step_weight": 0.25, "step_diversity_weight": 0,
        "low_fidelity_free_steps": 0, "free_max_steps": 32}}})
    settings = ProxySettings(**dict(spec.evaluator.settings))
    assert (settings.nelbo_repeats, settings.step_nelbo_repeats, settings.dense_step_weight) == (4, 32, 0.25)
    assert (settings.step_diversity_weight, settings.low_fidelity_free_steps, settings.free_max_steps) == (0, 0, 32)
    with pytest.raises(StudySpecError, match="evaluator.settings.free_max_steps: -1 is not allowed"):
        spec_from_dict({"study": "s", "evaluator": {"settings": {"free_max_steps": -1}}})
    with pytest.raises(StudySpecError, match="evaluator.settings.step_diversity_weight"):
        spec_from_dict({"study": "s", "evaluator": {"settings": {"step_diversity_weight": -1}}})


def test_a_study_takes_every_evaluator_fidelity_or_multi() -> None:
    for fidelity in ("multi", *FIDELITIES):
        assert spec_from_dict({"study": "s", "evaluator": {"fidelity": fidelity}}).evaluator.fidelity == fidelity
    with pytest.raises(StudySpecError, match="evaluator.fidelity: 'medium' is not allowed; allowed: multi, low, full"):
        spec_from_dict({"study": "s", "evaluator": {"fidelity": "medium"}})
