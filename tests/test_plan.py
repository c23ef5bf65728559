"""Plan: JSON round trip and validation that reports every bad field at once."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from dlmsearch.compress import check_plan_fits, plan_issues
from dlmsearch.models.adapters import DLMAdapter
from dlmsearch.plan import (
    LayerPlan,
    ModelRef,
    Plan,
    PlanIssue,
    PlanValidationError,
    SamplerSettings,
    load_plan,
    uniform_plan,
)

Q0 = "model.layers.0.self_attn.q_proj"
UP1 = "model.layers.1.mlp.up_proj"


@pytest.fixture
def plan(tiny_llama: DLMAdapter) -> Plan:
    return uniform_plan(tiny_llama, weight_bits=4, sparsity=0.5, timestep_groups=2)


def test_round_trip_through_json_file(plan: Plan, tmp_path: Path) -> None:
    path = plan.save(tmp_path / "plan.json")
    data = json.loads(path.read_text())
    assert data["format"] == "dlmsearch.plan" and data["version"] == 1
    assert load_plan(path) == plan
    assert Plan.from_dict(plan.to_dict()) == plan


def test_uniform_plan_covers_every_linear(plan: Plan, tiny_llama: DLMAdapter) -> None:
    assert set(plan.layers) == {i.name for i in tiny_llama.linears()}
    assert plan.layers[Q0] == LayerPlan(weight_bits=(4, 4), act_bits=(16, 16), sparsity=0.5,
                                        group_size=64)
    assert plan.timestep_groups == (0.5,)
    assert plan.model.fingerprint == tiny_llama.shape.fingerprint


def test_timestep_group_lookup() -> None:
    plan = Plan(model=ModelRef("m"), timestep_groups=(0.25, 0.75))
    assert [plan.timestep_group(p) for p in (0.0, 0.24, 0.25, 0.5, 0.75, 0.99)] == [0, 0, 1, 1, 2, 2]


def _mutate(plan: Plan, change: Any) -> dict[str, Any]:
    data = copy.deepcopy(plan.to_dict())
    change(data)
    return data


BAD_CASES = [
    ("unknown top key", lambda d: d.update(colour="red"), "colour"),
    ("unknown layer key", lambda d: d["layers"][Q0].update(bitz=4), f"layers.{Q0}.bitz"),
    ("sparsity 1.0", lambda d: d["layers"][Q0].update(sparsity=1.0), f"layers.{Q0}.sparsity: 1.0"),
    ("negative sparsity", lambda d: d["layers"][Q0].update(sparsity=-0.1), "a fraction in [0, 1)"),
    ("sparsity as text", lambda d: d["layers"][Q0].update(sparsity="half"), "'half'"),
    ("5 bits", lambda d: d["layers"][Q0].update(weight_bits=[5, 4]), "weight_bits[0]: 5"),
    ("2 activation bits", lambda d: d["layers"][Q0].update(act_bits=[2, 16]), "act_bits[0]: 2"),
    ("bits per group count", lambda d: d["layers"][Q0].update(weight_bits=[4]), "a list of 2 values"),
    ("bits not a list", lambda d: d["layers"][Q0].update(weight_bits=4), "one value per timestep group"),
    ("prune method", lambda d: d["layers"][Q0].update(prune_method="sparsegpt"), "'sparsegpt'"),
    ("structure", lambda d: d["layers"][Q0].update(structure="blocks"), "'blocks'"),
    ("2:4 at 0.7", lambda d: d["layers"][Q0].update(structure="2:4", sparsity=0.7), "0.5 with structure"),
    ("group size", lambda d: d["layers"][Q0].update(group_size=100), "group_size: 100"),
    ("storage", lambda d: d.update(weight_storage="zip"), "weight_storage: 'zip'"),
    ("boundaries order", lambda d: d.update(timestep_groups=[0.6, 0.3]), "strictly increasing"),
    ("boundary at 1", lambda d: d.update(timestep_groups=[1.0]), "timestep_groups"),
    ("steps vs blocks", lambda d: d["sampler"].update(steps=63, block_length=32), "sampler.steps: 63"),
    ("gen vs block", lambda d: d["sampler"].update(block_length=48), "sampler.block_length: 48"),
    ("remasking", lambda d: d["sampler"].update(remasking="top"), "sampler.remasking: 'top'"),
    ("temperature", lambda d: d["sampler"].update(temperature=-1), "sampler.temperature"),
    ("unknown sampler key", lambda d: d["sampler"].update(top_p=0.9), "sampler.top_p"),
    ("model not object", lambda d: d.update(model="x"), "model: 'x'"),
    ("wrong format", lambda d: d.update(format="other"), "format: 'other'"),
    ("future version", lambda d: d.update(version=99), "newer dlmsearch"),
    ("unknown old version", lambda d: d.update(version=0), "version: 0"),
]


@pytest.mark.parametrize(("label", "change", "expected"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_each_bad_field_is_named(plan: Plan, label: str, change: Any, expected: str) -> None:
    with pytest.raises(PlanValidationError) as info:
        Plan.from_dict(_mutate(plan, change), "plan.json")
    assert expected in str(info.value)
    assert str(info.value).startswith("plan.json:")


def test_every_problem_is_reported_at_once(plan: Plan) -> None:
    def break_many(d: dict[str, Any]) -> None:
        d["layers"][Q0]["sparsity"] = 2
        d["layers"][UP1]["weight_bits"] = [7, 7]
        d["sampler"]["remasking"] = "x"

    with pytest.raises(PlanValidationError) as info:
        Plan.from_dict(_mutate(plan, break_many))
    assert len(info.value.issues) == 4  # sparsity, two bit values, remasking
    paths = {issue.path for issue in info.value.issues}
    assert paths == {f"layers.{Q0}.sparsity", f"layers.{UP1}.weight_bits[0]", f"layers.{UP1}.weight_bits[1]",
                     "sampler.remasking"}


def test_direct_construction_is_validated() -> None:
    with pytest.raises(PlanValidationError, match="sampler.block_length"):
        Plan(model=ModelRef("m"), sampler=SamplerSettings(gen_length=64, block_length=48))


def test_plan_checked_against_a_model(plan: Plan, tiny_llama: DLMAdapter, tiny_qwen2: DLMAdapter) -> None:
    assert plan_issues(plan, tiny_llama) == []
    data = plan.to_dict()
    data["layers"]["model.layers.1.mlp.upproj"] = data["layers"].pop(UP1)
    data["layers"][Q0]["structure"] = "channels"
    data["layers"]["model.layers.0.mlp.down_proj"]["structure"] = "heads"
    issues = {i.path: i for i in plan_issues(Plan.from_dict(data), tiny_llama)}
    assert "did you mean 'model.layers.1.mlp.up_proj'" in issues["layers.model.layers.1.mlp.upproj"].allowed
    assert "this one is 'q'" in issues[f"layers.{Q0}.structure"].allowed
    assert "this one is 'down'" in issues["layers.model.layers.0.mlp.down_proj.structure"].allowed
    with pytest.raises(PlanValidationError, match="model.fingerprint"):
        check_plan_fits(plan, tiny_qwen2)


def test_group_size_must_divide_layer_width(tiny_llama: DLMAdapter) -> None:
    data = uniform_plan(tiny_llama, weight_bits=4).to_dict()
    data["layers"][Q0]["group_size"] = 128  # in_features is 64
    issues = plan_issues(Plan.from_dict(data), tiny_llama)
    assert [i.path for i in issues] == [f"layers.{Q0}.group_size"]


@pytest.mark.parametrize(("content", "expected"), [
    (b"", "valid JSON"),
    (b'{"format": "dlmsearch.plan", "version": 1, "model": {"name"', "valid JSON"),
    (b"\x00\xff\xfe garbage", "readable UTF-8"),
    (b"[1, 2]", "a JSON object"),
])
def test_unreadable_files_are_explained(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "plan.json"
    path.write_bytes(content)
    with pytest.raises(PlanValidationError, match=expected) as info:
        load_plan(path)
    assert str(path) in str(info.value)


def test_structured_units_must_agree(tiny_llama: DLMAdapter) -> None:
    data = uniform_plan(tiny_llama).to_dict()
    for role in ("q_proj", "k_proj", "v_proj", "o_proj"):
        data["layers"][f"model.layers.0.self_attn.{role}"].update(structure="heads", sparsity=0.5)
    assert plan_issues(Plan.from_dict(data), tiny_llama) == []
    data["layers"]["model.layers.0.self_attn.v_proj"]["sparsity"] = 0.25
    issues = plan_issues(Plan.from_dict(data), tiny_llama)
    assert issues and "pruned together" in issues[0].allowed


def test_a_parsed_plan_is_field_checked_once(plan: Plan, monkeypatch: pytest.MonkeyPatch) -> None:
    import dlmsearch.plan as plan_module

    calls: list[Plan] = []
    real = plan_module._check_plan

    def counting(candidate: Plan) -> list[PlanIssue]:
        calls.append(candidate)
        return real(candidate)

    monkeypatch.setattr(plan_module, "_check_plan", counting)
    assert Plan.from_dict(plan.to_dict()) == plan
    assert len(calls) == 1
