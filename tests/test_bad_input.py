"""Bad input, table-driven: every malformed study spec, Plan, hardware spec and measured profile gives one
clear error through the CLI a user runs (exit 2) naming the file, the field, the value and what is
allowed, and no traceback."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from dlmsearch.cli import main

GOOD_SPEC: dict[str, Any] = {
    "study": "bad-input", "model": "shakespeare-char", "hardware": "x86-avx512-laptop",
    "budget": {"latency_fraction": 0.5}, "objectives": ["quality", "latency_ms"],
    "space": {"weight_bits": [4, 8, 16], "steps": [16, 32], "block_lengths": [16, 32]},
    "generation": {"gen_length": 32}, "n_trials": 4,
}
GOOD_PLAN: dict[str, Any] = {
    "format": "dlmsearch.plan", "version": 1,
    "model": {"name": "shakespeare-char", "fingerprint": "llama/L6/d192/h6/kv6/hd32/ff512/V86"},
    "sampler": {"steps": 64, "gen_length": 64, "block_length": 64, "remasking": "low_confidence",
                "temperature": 0.0},
    "timestep_groups": [0.5], "weight_storage": "nested",
    "layers": {"model.layers.0.self_attn.q_proj": {"weight_bits": [4, 4], "act_bits": [16, 16], "sparsity": 0.0,
                                                   "prune_method": "wanda", "structure": "unstructured",
                                                   "group_size": 64, "quant_method": "rtn"}},
}
Q_PROJ = "model.layers.0.self_attn.q_proj"
GARBAGE = bytes(range(256)) * 4


def _hardware_dict() -> dict[str, Any]:
    from importlib import resources

    return yaml.safe_load(resources.files("dlmsearch.cost_models").joinpath("hardware", "l4.yaml").read_text())


def good_profile() -> dict[str, Any]:
    """A measured profile as ``dlmsearch profile`` writes it (trimmed)."""
    return {"name": "local-test", "kind": "cpu", "peak_flops": {"fp32": 6.5e10, "bf16": 9.2e9},
            "memory_bandwidth_bytes_per_s": 1.2e10, "memory_bytes": 2.5e10, "kernels": ["int8_dynamic"],
            "launch_overhead_s": 1.4e-5,
            "efficiency": {"compute": [[1.0, 0.29], [16.0, 0.25]], "memory": [[1.0, 0.29], [16.0, 0.25]]},
            "format_efficiency": {"fp32": [[1.0, 0.29], [16.0, 0.25]], "int8_dynamic": [[1.0, 0.3], [16.0, 1.5]]},
            "profile": {"version": 2, "token_counts": [1, 16]}}


def edited(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """``base`` with the dotted ``path`` set to ``value`` (``...`` deletes it)."""
    data = copy.deepcopy(base)
    *parents, last = path.split(".") if "." in path and not path.startswith("layers.") else [path]
    if path.startswith("layers."):
        parents, last = ["layers", Q_PROJ], path.split(".")[-1]
    node = data
    for key in parents:
        node = node[key]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return data


@dataclass(frozen=True)
class Case:
    """One bad file: how to write it, which command reads it, what the error must say."""

    id: str
    kind: str  # study | plan | hardware | profile
    content: Callable[[], bytes]
    expect: tuple[str, ...]  # field, value and allowed: each must appear in the error


def spec_yaml(path: str, value: Any) -> Callable[[], bytes]:
    return lambda: yaml.safe_dump(edited(GOOD_SPEC, path, value)).encode()


def plan_json(path: str, value: Any) -> Callable[[], bytes]:
    return lambda: json.dumps(edited(GOOD_PLAN, path, value)).encode()


def hardware_yaml(path: str, value: Any) -> Callable[[], bytes]:
    return lambda: yaml.safe_dump(edited(_hardware_dict(), path, value)).encode()


def profile_yaml(path: str, value: Any) -> Callable[[], bytes]:
    return lambda: yaml.safe_dump(edited(good_profile(), path, value)).encode()


def text(value: str) -> Callable[[], bytes]:
    return lambda: value.encode()


CASES = [
    # study specs (dlmsearch run)
    Case("spec-empty", "study", text(""), ("YAML mapping", "NoneType")),
    Case("spec-garbage", "study", lambda: GARBAGE, ("not valid YAML",)),
    Case("spec-truncated", "study", lambda: yaml.safe_dump(GOOD_SPEC, default_flow_style=True).encode()[:150],
         ("not valid YAML", "line")),
    Case("spec-list-not-mapping", "study", text("- study: x\n"), ("YAML mapping", "list")),
    Case("spec-n-trials-type", "study", spec_yaml("n_trials", "many"), ("n_trials", "'many'", "an integer >= 1")),
    Case("spec-unknown-key", "study", spec_yaml("n_trail", 5), ("n_trail", "unknown field", "n_trials")),
    Case("spec-seed-range", "study", spec_yaml("seed", -1), ("seed", "-1", "an integer >= 0")),
    Case("spec-budget-negative", "study", spec_yaml("budget", {"latency_ms": -5}),
         ("budget.latency_ms", "-5", "a finite number > 0")),
    Case("spec-budget-unknown", "study", spec_yaml("budget", {"latency_s": 5}),
         ("budget.latency_s", "unknown field", "latency_ms")),
    Case("spec-weight-bits", "study", spec_yaml("space.weight_bits", [4, 5]),
         ("space.weight_bits", "[5]", "values from 2, 3, 4, 8, 16")),
    Case("spec-sparsity-range", "study", spec_yaml("space.sparsity", {"max": 1.5}),
         ("space.sparsity.max", "1.5", "a fraction in [0, 1)")),
    Case("spec-objectives-length", "study", spec_yaml("objectives", ["quality"]),
         ("objectives", "['quality']", "two or three of")),
    Case("spec-sampler", "study", spec_yaml("sampler", "cmaes"), ("sampler", "'cmaes'", "auto, tpe, gp, nsga2")),
    Case("spec-storage-url", "study", spec_yaml("storage", "redis://db:6379/0"),
         ("storage", "redis://db:6379/0", "postgresql://")),
    Case("spec-unknown-hardware", "study", spec_yaml("hardware", "tpu-v9"),
         ("hardware", "'tpu-v9'", "h100-sxm")),
    Case("spec-unknown-model", "study", spec_yaml("model", "/no/such/checkpoint"),
         ("model", "/no/such/checkpoint", "shakespeare-char")),
    Case("spec-bare-2-4", "study", lambda: (yaml.safe_dump(edited(GOOD_SPEC, "space.structures", ["unstructured"]))
                                            .replace("- unstructured", "- 2:4")).encode(),
         ("space.structures", "124", "\"2:4\" in quotes")),
    Case("spec-fidelity", "study", spec_yaml("evaluator", {"fidelity": "medium"}),
         ("evaluator.fidelity", "'medium'", "multi, low, full")),
    Case("spec-gen-length", "study", spec_yaml("generation.gen_length", 0),
         ("generation.gen_length", "0", "an integer >= 1")),
    Case("spec-isolation", "study", spec_yaml("isolation", "thread"), ("isolation", "'thread'", "process, none")),
    Case("spec-steps-grid", "study", spec_yaml("space.steps", [64]), ("space.steps", "64", "at most gen_length")),
    Case("spec-data-files", "study", spec_yaml("evaluator", {"data_files": ["missing.txt"]}),
         ("evaluator.data_files", "missing.txt", "existing text files")),
    # Plans (dlmsearch validate, with --model for module names)
    Case("plan-empty", "plan", text(""), ("<file>", "valid JSON")),
    Case("plan-garbage", "plan", lambda: GARBAGE, ("<file>", "UTF-8")),
    Case("plan-truncated", "plan", lambda: json.dumps(GOOD_PLAN).encode()[:120], ("<file>", "line 1", "valid JSON")),
    Case("plan-steps-type", "plan", plan_json("sampler.steps", "64"), ("sampler.steps", "'64'", "integer")),
    Case("plan-unknown-key", "plan", plan_json("precision", "int4"), ("precision", "unknown")),
    Case("plan-weight-bits", "plan", plan_json("layers.weight_bits", [5, 4]),
         (f"layers.{Q_PROJ}.weight_bits", "5", "2, 3, 4, 8, 16")),
    Case("plan-sparsity", "plan", plan_json("layers.sparsity", 1.2), (f"layers.{Q_PROJ}.sparsity", "1.2", "[0, 1)")),
    Case("plan-bits-length", "plan", plan_json("layers.weight_bits", [4, 4, 4]),
         (f"layers.{Q_PROJ}.weight_bits", "[4, 4, 4]", "2")),
    Case("plan-unknown-module", "plan",
         lambda: json.dumps({**GOOD_PLAN, "layers": {"model.layers.0.attn.q": GOOD_PLAN["layers"][Q_PROJ]}}).encode(),
         ("layers.model.layers.0.attn.q", "model.layers.0.attn.q", Q_PROJ)),
    Case("plan-block-length", "plan", plan_json("sampler.block_length", 48), ("block_length", "48", "gen_length")),
    # hardware specs (dlmsearch hardware show)
    Case("hardware-empty", "hardware", text(""), ("YAML mapping", "NoneType")),
    Case("hardware-garbage", "hardware", lambda: GARBAGE, ("not valid YAML",)),
    Case("hardware-kind", "hardware", hardware_yaml("kind", "tpu"), ("kind", "'tpu'", "gpu")),
    Case("hardware-peak-negative", "hardware", hardware_yaml("peak_flops", {"fp32": -1}),
         ("peak_flops.fp32", "-1", "a number > 0")),
    Case("hardware-unknown-key", "hardware", hardware_yaml("hbm_gb", 80), ("hbm_gb", "unknown field", "peak_flops")),
    Case("hardware-missing-field", "hardware", hardware_yaml("memory_bytes", ...), ("memory_bytes", "missing")),
    Case("hardware-overhead", "hardware", hardware_yaml("launch_overhead_s", 5), ("launch_overhead_s", "5", "[0, 1)")),
    Case("hardware-kernels", "hardware", hardware_yaml("kernels", ["fp4_magic"]),
         ("kernels", "fp4_magic", "int8_weight_only")),
    # measured profiles (dlmsearch hardware show on a profile YAML)
    Case("profile-unknown-part", "profile", profile_yaml("format_efficiency.int3", [[1.0, 0.5]]),
         ("format_efficiency.int3", "unknown part", "int8_dynamic")),
    Case("profile-curve-type", "profile", profile_yaml("format_efficiency.fp32", [[1.0, "fast"]]),
         ("format_efficiency.fp32", "fast")),
    Case("profile-provenance", "profile", profile_yaml("profile", "yesterday"), ("profile", "'yesterday'", "mapping")),
    Case("profile-truncated", "profile", lambda: yaml.safe_dump(good_profile(), default_flow_style=True).encode()[:-40],
         ("not valid YAML",)),
]


def run_cli(case: Case, file: Path, tmp_path: Path) -> list[str]:
    if case.kind == "study":
        return ["run", str(file), "--out", str(tmp_path / "run")]
    if case.kind == "plan":
        return ["validate", str(file), "--model", "shakespeare-char"]
    return ["hardware", "show", str(file)]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_clear_error(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suffix = ".json" if case.kind == "plan" else ".yaml"
    file = tmp_path / f"{case.id}{suffix}"
    file.write_bytes(case.content())
    code = main(run_cli(case, file, tmp_path))
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert err.startswith("error: ") and err.count("error: ") == 1, err
    assert "Traceback" not in out + err
    assert str(file) in err, err
    for fragment in case.expect:
        assert fragment in err, f"{fragment!r} missing from: {err}"
    assert not (tmp_path / "run" / "journal.log").exists()  # nothing was started


def test_the_table_covers_every_file_kind_with_at_least_thirty_cases() -> None:
    kinds = {case.kind for case in CASES}
    assert kinds == {"study", "plan", "hardware", "profile"} and len(CASES) >= 30
