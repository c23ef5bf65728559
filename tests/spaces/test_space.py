"""Trial -> Plan: deterministic, every knob reaches the Plan, only sampler-valid settings, warm starts."""

from __future__ import annotations

from typing import Any

import optuna
import pytest

from dlmsearch.compress import check_plan_fits
from dlmsearch.models.loading import build_random_model
from dlmsearch.models.sampler_rules import check_sampler_settings
from dlmsearch.plan import ModelRef
from dlmsearch.search.spec import spec_from_dict
from dlmsearch.spaces import SearchSpace, SearchSpaceError

ADAPTER = build_random_model("llama", num_layers=4, hidden_size=64, num_heads=4, intermediate_size=128)
LINEARS = list(ADAPTER.linears())
MODEL = ModelRef(ADAPTER.name, ADAPTER.shape.fingerprint)


def space_of(**space: Any) -> SearchSpace:
    spec = spec_from_dict({"study": "s", "space": {"steps": [8, 16, 32], "block_lengths": [8, 32], **space},
                           "generation": {"gen_length": 32}})
    return SearchSpace(spec.space, spec.generation, MODEL, LINEARS)


def draw(space: SearchSpace, sampler: optuna.samplers.BaseSampler, n: int) -> list[Any]:
    study = optuna.create_study(sampler=sampler)
    plans = []
    for _ in range(n):
        trial = study.ask()
        plans.append(space.suggest(trial))
        study.tell(trial, 0.0)
    return plans


def test_parameter_names_are_fixed_and_unconditional() -> None:
    space = space_of()
    names = set(space.distributions())
    assert "block0.attn.w0" in names and "block3.mlp.w1" in names and "block0.attn.sparsity" in names
    assert {"steps", "block_length"} <= names
    assert not any(n.endswith(".a0") for n in names)  # one allowed act width: no parameter
    assert len(names) == 8 * 3 + 2
    for plan in draw(space, optuna.samplers.RandomSampler(seed=1), 20):
        check_plan_fits(plan, ADAPTER)
        s = plan.sampler
        assert not check_sampler_settings(s.gen_length, s.steps, s.block_length, s.remasking)


def test_same_params_same_plan_and_same_seed_same_sequence() -> None:
    space = space_of()
    first = draw(space, optuna.samplers.TPESampler(seed=3, n_startup_trials=3), 6)
    second = draw(space, optuna.samplers.TPESampler(seed=3, n_startup_trials=3), 6)
    assert [p.to_json() for p in first] == [p.to_json() for p in second]
    other = draw(space, optuna.samplers.TPESampler(seed=4, n_startup_trials=3), 6)
    assert [p.to_json() for p in first] != [p.to_json() for p in other]


def test_every_parameter_changes_the_plan() -> None:
    space = space_of(act_bits=[8, 16], prune_methods=["wanda", "magnitude"], structures=["unstructured", "heads"])
    base = space.preset_params(16)
    assert base is not None
    reference = space.plan_from_params(base).to_json()
    for name, dist in space.distributions().items():
        changed = dict(base)
        options = getattr(dist, "choices", None) or [dist.high]  # type: ignore[attr-defined]
        alternative = next(v for v in options if v != base[name])
        changed[name] = alternative
        if name == "prune_method":  # the method only shows where something is pruned
            changed["block0.mlp.sparsity"] = 0.2
            base_pruned = space.plan_from_params({**base, "block0.mlp.sparsity": 0.2}).to_json()
            assert space.plan_from_params(changed).to_json() != base_pruned
            continue
        if name.endswith(".structure"):
            changed[name.replace("structure", "sparsity")] = 0.5
            group = next(g for g in space.groups if f"{g.name}.structure" == name)
            assert space.plan_from_params(changed).layers[group.modules[0]].structure == "heads"
            continue
        assert space.plan_from_params(changed).to_json() != reference, name


def test_block_length_is_repaired_to_the_nearest_accepted() -> None:
    space = space_of()
    # 8 steps over 32 tokens: block 8 means 4 blocks of 2 steps (fine); 32 is also fine
    assert space.repair_block_length(8, 8) == 8
    # 16 steps: block 8 gives 4 blocks x 4 steps (fine)
    assert space.repair_block_length(16, 32) == 32
    spec = spec_from_dict({"study": "s", "space": {"steps": [2, 32], "block_lengths": [8, 32]},
                           "generation": {"gen_length": 32}})
    narrow = SearchSpace(spec.space, spec.generation, MODEL, LINEARS)
    assert narrow.repair_block_length(2, 8) == 32  # 2 steps cannot cover 4 blocks


def test_two_four_prunes_half_or_nothing() -> None:
    space = space_of(structures=["2:4"])
    params = space.preset_params(16)
    assert params is not None
    for sampled, expected in ((0.1, 0.0), (0.3, 0.5), (0.5, 0.5)):
        plan = space.plan_from_params({**params, "block1.mlp.sparsity": sampled})
        layer = plan.layers[next(g for g in space.groups if g.name == "block1.mlp").modules[0]]
        assert layer.structure == "2:4" and layer.sparsity == expected


@pytest.mark.parametrize(("schedule", "expected"), [("rising", (4, 8, 16)), ("falling", (16, 8, 4))])
def test_monotone_schedules(schedule: str, expected: tuple[int, ...]) -> None:
    space = space_of(timestep_groups=3, timestep_schedule=schedule, weight_bits=[2, 4, 8, 16])
    names = space.distributions()
    assert "block0.attn.w" in names and "schedule.drop0" in names and "block0.attn.w0" not in names
    params = space.preset_params(16)
    assert params is not None
    plan = space.plan_from_params({**params, "schedule.drop0": 1, "schedule.drop1": 1})
    assert plan.layers[LINEARS[0].name].weight_bits == expected


def test_presets_outside_the_space_are_refused_and_group_sizes_checked() -> None:
    space = space_of(weight_bits=[4, 16])
    assert space.preset_params(8) is None
    assert space.preset_params(4, steps=8) is not None
    spec = spec_from_dict({"study": "s", "space": {"group_size": 256}})
    with pytest.raises(SearchSpaceError, match="space.group_size: 256"):
        SearchSpace(spec.space, spec.generation, MODEL, LINEARS)


def test_structured_sparsity_snaps_to_what_the_model_can_remove(caplog: pytest.LogCaptureFixture) -> None:
    spec = spec_from_dict({"study": "s", "space": {"structures": ["heads", "channels"], "weight_bits": [4, 16],
                                                   "group_size": 32}})
    space = SearchSpace(spec.space, spec.generation, MODEL, LINEARS, ADAPTER.shape)
    params = space.preset_params(4)
    assert params is not None
    plan = space.plan_from_params({**params, "block0.attn.sparsity": 0.4, "block0.mlp.sparsity": 0.3})
    by_name = {info.name: info for info in LINEARS}
    block0 = {by_name[n].role: lp for n, lp in plan.layers.items() if by_name[n].block == 0}
    assert block0["q"].structure == "heads" and block0["q"].sparsity == 0.5  # whole heads, kept width % 32 == 0
    assert block0["up"].structure == "channels" and block0["up"].sparsity == 0.25  # 96 of 128 channels kept
    import torch

    from dlmsearch.compress import CalibrationSet, apply_plan_

    model = build_random_model("llama", num_layers=4, hidden_size=64, num_heads=4, intermediate_size=128)
    ids = torch.randint(0, 60, (2000,), generator=torch.Generator().manual_seed(0))
    apply_plan_(model, plan, CalibrationSet.from_ids(ids, model.mask_token_id, n_sequences=2, seq_len=32))
    assert "adjusted" not in caplog.text
