"""The proxy evaluator: zero for the dense model, monotone in damage, deterministic, cached."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from dlmsearch.compress import force_timestep_group
from dlmsearch.evaluators import ProxyEvaluator, ProxySettings, QualityResult
from dlmsearch.evaluators import proxy as proxy_module
from dlmsearch.evaluators import reference as reference_module
from dlmsearch.evaluators.full import distinct_ngrams
from dlmsearch.evaluators.masked_states import MaskedStates, build_masked_states, mask_like_sampler
from dlmsearch.evaluators.proxy_terms import FreeGap, MaskedKL
from dlmsearch.models.adapters import DLMAdapter
from dlmsearch.plan import Plan, PlanValidationError, uniform_plan
from tests.evaluators.tiny import tiny_data, tiny_model

SETTINGS = ProxySettings(windows=6, window_length=32, repeats=2, low_fidelity_windows=2, trajectory_prompts=2,
                         prompt_length=8, infill_windows=8)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLMSEARCH_CACHE", str(tmp_path / "cache"))


def _evaluator(adapter: DLMAdapter, settings: ProxySettings = SETTINGS) -> ProxyEvaluator:
    ids, calib = tiny_data(adapter)
    return ProxyEvaluator(adapter, settings, text_ids=ids, calibration=calib)


def _plan(adapter: DLMAdapter, **knobs: object) -> Plan:
    return uniform_plan(adapter, gen_length=8, block_length=8, **{"steps": 8, **knobs})  # type: ignore[arg-type]


def test_dense_plan_scores_zero_and_damage_costs() -> None:
    adapter = tiny_model()
    evaluator = _evaluator(adapter)
    dense = evaluator.evaluate(_plan(adapter))
    assert dense.score == 0.0 and dense.metrics["trajectory_agreement"] == 1.0
    assert dense.metrics["infill_agreement"] == 1.0 and dense.metrics["free_gap"] == 0.0
    w8 = evaluator.evaluate(_plan(adapter, weight_bits=8)).metrics
    w2 = evaluator.evaluate(_plan(adapter, weight_bits=2)).metrics
    assert 0 < w8["kl"] < w2["kl"]
    assert w2["infill_agreement"] < w8["infill_agreement"] <= 1.0
    assert evaluator.evaluate(_plan(adapter, sparsity=0.5, prune_method="wanda")).metrics["kl"] > 0


def test_scores_are_deterministic_and_the_dense_model_is_untouched() -> None:
    adapter = tiny_model()
    before = {k: v.clone() for k, v in adapter.model.state_dict().items()}
    evaluator = _evaluator(adapter)
    plan = _plan(adapter, weight_bits=4, sparsity=0.3, prune_method="sink_wanda", steps=4)
    first = evaluator.evaluate(plan)
    assert evaluator.evaluate(plan) == first
    assert isinstance(first, QualityResult) and first.fidelity == "full"
    assert all(torch.equal(v, before[k]) for k, v in adapter.model.state_dict().items())


def test_per_timestep_bits_are_scored_per_group() -> None:
    adapter = tiny_model()
    evaluator = _evaluator(adapter)
    early_low = _plan(adapter, timestep_groups=2)
    data = early_low.to_dict()
    for layer in data["layers"].values():
        layer["weight_bits"] = [2, 16]
    mixed = evaluator.evaluate(Plan.from_dict(data)).metrics["kl"]
    all_low = evaluator.evaluate(_plan(adapter, weight_bits=2, timestep_groups=2)).metrics["kl"]
    assert 0 < mixed < all_low


def test_reference_outputs_are_cached_on_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    adapter = tiny_model()
    calls = {"n": 0}
    real = reference_module.cached_tensors

    def counting(kind: str, key: str, compute: object) -> dict[str, torch.Tensor]:
        def wrapped() -> dict[str, torch.Tensor]:
            calls["n"] += 1
            return compute()  # type: ignore[operator]
        return real(kind, key, wrapped)

    monkeypatch.setattr("dlmsearch.evaluators.proxy.cached_tensors", counting)
    plan = _plan(adapter, weight_bits=2)
    first = _evaluator(adapter).evaluate(plan)
    computed = calls["n"]
    assert computed > 0  # the first evaluator computed the dense outputs for this sampler layout
    assert _evaluator(adapter).evaluate(plan) == first
    assert calls["n"] == computed  # the second evaluator reads the first one's reference


def test_low_fidelity_and_bad_fidelity() -> None:
    adapter = tiny_model()
    evaluator = _evaluator(adapter)
    low = evaluator.evaluate(_plan(adapter, weight_bits=2, steps=2), fidelity="low")
    assert low.fidelity == "low" and low.score > 0
    # low fidelity: no trajectory or infill term; free rows at its own step count, whatever the Plan's
    assert low.metrics["trajectory"] == 0.0 and "trajectory_agreement" not in low.metrics
    assert "infill_agreement" not in low.metrics and low.metrics["free_steps"] == 8.0
    assert evaluator.evaluate(_plan(adapter), fidelity="low").score == 0.0
    generating = _evaluator(adapter, dataclasses.replace(SETTINGS, low_fidelity_free_rows=0,
                                                         low_fidelity_infill_windows=1))
    metrics = generating.evaluate(_plan(adapter, weight_bits=2), fidelity="low").metrics
    assert "free_gap" not in metrics and 0.0 <= metrics["infill_agreement"] < 1.0
    with pytest.raises(ValueError, match="fidelity='medium'; allowed: low, full"):
        evaluator.evaluate(_plan(adapter), fidelity="medium")


def test_infill_windows_of_their_own_length() -> None:
    adapter = tiny_model()
    settings = dataclasses.replace(SETTINGS, trajectory_prompts=0, unconditional_rows=3, infill_windows=5,
                                   infill_window_length=16, infill_spans=1, infill_span=3)
    evaluator = _evaluator(adapter, settings)
    assert tuple(evaluator.infill_task.windows.shape) == (5, 16) and evaluator.infill_task.per_window == 3
    dense = evaluator.evaluate(_plan(adapter))
    assert dense.score == 0.0 and dense.metrics["infill_agreement"] == 1.0
    assert evaluator.evaluate(_plan(adapter, weight_bits=2, steps=2)).metrics["infill_agreement"] < 1.0
    # the reference fill uses the Plan's own passes: the dense model at few steps agrees with itself
    assert evaluator.evaluate(_plan(adapter, steps=2)).metrics["infill_agreement"] == 1.0
    fewer = _evaluator(adapter, dataclasses.replace(settings, infill_windows=1))
    assert torch.equal(fewer.windows, evaluator.windows)  # the KL windows do not move with the infill count


def _states_of(states: MaskedStates, chunks: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.cat([torch.arange(*states.chunks[c]) for c in chunks])
    return states.progress[rows], states.window[rows]


@pytest.mark.parametrize(("low", "full"), [(2, 6), (6, 2), (3, 3)])
def test_each_fidelity_scores_a_stratified_grid_of_its_own_windows(low: int, full: int) -> None:
    windows = torch.randint(0, 60, (6, 32), generator=torch.Generator().manual_seed(0))
    states = build_masked_states(windows, 63, repeats=4, seed=0, low_windows=low, full_windows=full, block_length=8,
                                 batch_size=5)

    def grid(count: int) -> list[float]:  # the whole denoising range, evenly
        return ((torch.arange(count * 4) + 0.5) / (count * 4)).tolist()

    full_grid = grid(low) + grid(full - low) if low <= full else grid(full)  # the low part extended, or its own
    for count, chunks, expected in ((low, states.low_chunks, grid(low)), (full, states.full_chunks, full_grid)):
        ratios, window = _states_of(states, chunks)
        assert sorted(window.tolist()) == sorted(list(range(count)) * 4)  # every window, repeats times
        assert sorted(ratios.tolist()) == pytest.approx(sorted(expected), abs=1e-6)
    shared = set(states.low_chunks) & set(states.full_chunks)
    assert shared == (set(states.low_chunks) if low <= full else set())  # a subset, or states of their own
    with pytest.raises(ValueError, match="windows: 6 rows, but the fidelities need 7"):
        build_masked_states(windows, 63, repeats=4, seed=0, low_windows=7, full_windows=2, block_length=8)


def test_more_low_fidelity_windows_than_full_fidelity_ones() -> None:
    adapter = tiny_model()
    evaluator = _evaluator(adapter, dataclasses.replace(SETTINGS, windows=2, low_fidelity_windows=5))
    plan = _plan(adapter, weight_bits=2)
    model = evaluator.compressed(plan)
    low, full = (MaskedKL(fidelity).measure(evaluator, model, plan)["kl"] for fidelity in ("low", "full"))
    assert low > 0 and full > 0 and low != full
    assert evaluator.evaluate(plan, "low").metrics["kl"] == low and evaluator.evaluate(plan).metrics["kl"] == full


def test_the_dense_step_term_takes_its_own_nelbo_masks(monkeypatch: pytest.MonkeyPatch) -> None:
    repeats: list[int] = []
    real = proxy_module.evaluate_nelbo

    def spy(*args: object, **kwargs: object) -> float:
        repeats.append(kwargs["repeats"])  # type: ignore[arg-type]
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(proxy_module, "evaluate_nelbo", spy)
    adapter = tiny_model()
    evaluator = _evaluator(adapter, dataclasses.replace(SETTINGS, trajectory_prompts=0, nelbo_repeats=3,
                                                        step_nelbo_repeats=5, unconditional_rows=2))
    plan = _plan(adapter, weight_bits=2, steps=4)
    free_gap = FreeGap(evaluator.settings, "full")
    free_gap.measure(evaluator, evaluator.compressed(plan), plan)
    assert repeats == [3, 3]  # the Plan's rows, then the dense rows under the same masks (once: cached)
    evaluator.step_term(plan.sampler)
    assert repeats == [3, 3] + [5] * 4  # the dense rows at the Plan's steps and at one token per step
    free_gap.measure(evaluator, evaluator.compressed(plan), plan)
    evaluator.step_term(plan.sampler)
    assert repeats == [3, 3] + [5] * 4 + [3]


FRESH_PROCESS_SCRIPT = """
import torch
from tests.evaluators.test_proxy import _evaluator, _plan
from tests.evaluators.tiny import tiny_model
adapter = tiny_model()
print(repr(_evaluator(adapter).evaluate(_plan(adapter, weight_bits=3, sparsity=0.2, prune_method="wanda")).score))
"""


def test_a_fresh_process_gives_the_same_score() -> None:
    import subprocess
    import sys

    adapter = tiny_model()
    here = _evaluator(adapter).evaluate(_plan(adapter, weight_bits=3, sparsity=0.2, prune_method="wanda")).score
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", FRESH_PROCESS_SCRIPT], cwd=root, capture_output=True, text=True,
                         check=True)
    assert abs(float(out.stdout.strip().splitlines()[-1]) - here) <= 1e-6


def test_no_infill_windows_means_no_infill_term() -> None:
    adapter = tiny_model()
    evaluator = _evaluator(adapter, dataclasses.replace(SETTINGS, infill_windows=0, trajectory_prompts=0))
    result = evaluator.evaluate(_plan(adapter, weight_bits=2))
    assert "infill_agreement" not in result.metrics and result.score >= result.metrics["kl"] > 0


@pytest.mark.parametrize("fidelity", ["low", "full"])
def test_each_named_weight_scales_its_own_term_and_changes_no_measurement(fidelity: str) -> None:
    adapter = tiny_model()
    plan = _plan(adapter, weight_bits=2, steps=2)
    base = _evaluator(adapter).evaluate(plan, fidelity)
    free_weight = "low_fidelity_free_weight" if fidelity == "low" else "free_gap_weight"
    kl_only = {name: 0.0 for name in ("trajectory_weight", free_weight, "dense_step_weight",
                                      "step_diversity_weight", "step_cost_weight", "infill_weight")}
    only = _evaluator(adapter, dataclasses.replace(SETTINGS, **kl_only)).evaluate(plan, fidelity)
    assert only.metrics == base.metrics and only.score == base.metrics["kl"]
    doubled = dataclasses.replace(SETTINGS, step_cost_weight=2 * SETTINGS.step_cost_weight)
    extra = _evaluator(adapter, doubled).evaluate(plan, fidelity).score - base.score
    assert base.metrics["step_cost"] > 0
    assert extra == pytest.approx(SETTINGS.step_cost_weight * base.metrics["step_cost"], rel=1e-9)


def test_weights_do_not_enter_the_reference_cache_key() -> None:
    adapter = tiny_model()
    reweighted = _evaluator(adapter, dataclasses.replace(SETTINGS, free_gap_weight=1.0, kl_weight=2.0))
    remeasured = _evaluator(adapter, dataclasses.replace(SETTINGS, nelbo_repeats=3))
    key = _evaluator(adapter).reference_key(kind="x")
    assert reweighted.reference_key(kind="x") == key != remeasured.reference_key(kind="x")


def test_masked_states_are_shaped_like_the_sampler_s() -> None:
    ids = torch.arange(32).repeat(5, 1)  # (5, 32): four blocks of 8
    progress = torch.tensor([0.0, 0.1, 0.3, 0.74, 1.0])
    corrupted, masked = mask_like_sampler(ids, progress, 8, 99, torch.Generator().manual_seed(0))
    for row, block in enumerate([0, 0, 1, 2, 3]):
        start, end = 8 * block, 8 * block + 8
        assert torch.equal(corrupted[row, :start], ids[row, :start])  # earlier blocks: clean text
        assert bool((corrupted[row, end:] == 99).all())  # later blocks: all [MASK], not scored
        assert not masked[row, :start].any() and not masked[row, end:].any() and masked[row, start:end].any()
        assert bool((corrupted[row][masked[row]] == 99).all())
    assert int(masked[0].sum()) == 8  # at the start of a block all of it is still masked
    assert int(masked[4].sum()) == 1  # at the very end, one position is left to commit
    with pytest.raises(ValueError, match="block_length=5: must divide the state length 32"):
        mask_like_sampler(ids, progress, 5, 99, torch.Generator())


def test_low_fidelity_free_rows_use_a_fixed_step_count() -> None:
    adapter = tiny_model()
    fixed = FreeGap(dataclasses.replace(SETTINGS, low_fidelity_free_steps=6), "low")
    two_blocks = uniform_plan(adapter, gen_length=8, block_length=4, steps=2).sampler
    assert fixed.sampler(two_blocks).steps == 6  # a multiple of the 2 blocks
    assert fixed.sampler(dataclasses.replace(two_blocks, steps=8)).steps == 6
    capped = FreeGap(dataclasses.replace(SETTINGS, low_fidelity_free_steps=32), "low")
    assert capped.sampler(two_blocks).steps == 8  # at most one token per step
    assert FreeGap(dataclasses.replace(SETTINGS, low_fidelity_free_steps=0), "low").sampler(two_blocks) == two_blocks
    assert FreeGap(SETTINGS, "full").sampler(two_blocks) == two_blocks  # full fidelity: the Plan's own steps
    plans_own = _evaluator(adapter, dataclasses.replace(SETTINGS, low_fidelity_free_steps=0))
    plan = _plan(adapter, weight_bits=2, steps=2)
    assert plans_own.evaluate(plan, "low").metrics["free_steps"] == 2.0


def test_full_fidelity_free_rows_run_the_plans_steps_up_to_the_cap() -> None:
    adapter = tiny_model()
    capped = FreeGap(dataclasses.replace(SETTINGS, free_max_steps=4), "full")
    two_blocks = uniform_plan(adapter, gen_length=8, block_length=4, steps=8).sampler
    assert capped.sampler(two_blocks).steps == 4
    assert capped.sampler(dataclasses.replace(two_blocks, steps=2)).steps == 2  # under the cap: the Plan's
    assert FreeGap(dataclasses.replace(SETTINGS, free_max_steps=3), "full").sampler(two_blocks).steps == 2  # blocks
    one_per_token = uniform_plan(adapter, gen_length=32, block_length=16, steps=32).sampler
    assert FreeGap(ProxySettings(), "full").sampler(one_per_token).steps == 16  # the default cap
    low = FreeGap(dataclasses.replace(SETTINGS, free_max_steps=4, low_fidelity_free_steps=6), "low")
    assert low.sampler(two_blocks).steps == 6  # the cap is the full fidelity's
    assert "free_max_steps" not in SETTINGS.measurement()  # no dense reference depends on it
    evaluator = _evaluator(adapter, dataclasses.replace(SETTINGS, free_max_steps=2))
    assert evaluator.evaluate(_plan(adapter, weight_bits=2, steps=8)).metrics["free_steps"] == 2.0


def test_the_masked_token_nelbo_gap_is_the_log_likelihood_lost_on_the_held_out_characters() -> None:
    adapter = tiny_model()
    evaluator = _evaluator(adapter)
    plan = _plan(adapter, weight_bits=2)
    model = evaluator.compressed(plan)
    states, _ = evaluator.masked_states(plan.sampler)
    rows = torch.cat([torch.arange(*states.chunks[c]) for c in states.full_chunks])
    with torch.no_grad(), force_timestep_group(model.model, 0):
        logq = torch.log_softmax(model.forward_logits(states.ids[rows]).float(), dim=-1)
    with torch.no_grad():
        logp = torch.log_softmax(adapter.forward_logits(states.ids[rows]).float(), dim=-1)
    truth = states.text[rows][:, :, None]
    lost = (logp.gather(2, truth) - logq.gather(2, truth))[..., 0][states.masked[rows]]
    assert MaskedKL("full").measure(evaluator, model, plan)["nelbo_gap"] == pytest.approx(float(lost.mean()), rel=1e-4)
    assert evaluator.evaluate(_plan(adapter)).metrics["nelbo_gap"] == 0.0


def test_the_step_diversity_term_is_the_dense_prompted_rows_lost_variety() -> None:
    adapter = tiny_model()
    evaluator = _evaluator(adapter)
    sampler = _plan(adapter, steps=2).sampler
    parts = evaluator.step_term(sampler)
    prompts = evaluator.prompts(SETTINGS.step_rows, sampler.gen_length)
    few = evaluator.dense_generation(sampler, prompts, nelbo_repeats=SETTINGS.step_nelbo_repeats)[0]
    best = evaluator.dense_generation(dataclasses.replace(sampler, steps=sampler.gen_length), prompts,
                                       nelbo_repeats=SETTINGS.step_nelbo_repeats)[0]
    start = prompts.shape[1]
    expected = max(0.0, distinct_ngrams(best[:, start:]) - distinct_ngrams(few[:, start:]))
    assert parts["steps_prompted_diversity_gap"] == pytest.approx(expected)
    assert evaluator.step_term(_plan(adapter).sampler)["steps_prompted_diversity_gap"] == 0.0  # one token per step


def test_heavier_compression_of_the_same_layers_scores_worse_on_average_over_seeds() -> None:
    adapter = tiny_model()
    evaluators = [_evaluator(adapter, dataclasses.replace(SETTINGS, seed=seed)) for seed in range(3)]

    def mean_score(**knobs: object) -> float:
        return sum(e.evaluate(_plan(adapter, **knobs)).score for e in evaluators) / len(evaluators)

    dense, w8, w4, w2 = mean_score(), mean_score(weight_bits=8), mean_score(weight_bits=4), mean_score(weight_bits=2)
    assert dense == 0.0 < w8 < w4 < w2
    assert w2 > 10 * w8  # 2-bit everywhere is far worse than 8-bit everywhere
    light, heavy = mean_score(sparsity=0.2, prune_method="wanda"), mean_score(sparsity=0.6, prune_method="wanda")
    assert 0.0 < light < heavy


def test_the_free_gap_compares_with_the_dense_model_at_the_plans_own_steps() -> None:
    """The dense model at few steps has no compression to charge (free gap exactly 0): its step count is
    charged by the step terms only, as the full evaluator's step cost does, so a few-step Plan gets no
    credit for the dense model's own few-step rows being likelier than its one-token-per-step rows."""
    adapter = tiny_model()
    evaluator = _evaluator(adapter, dataclasses.replace(SETTINGS, infill_windows=0, trajectory_prompts=0))
    few = evaluator.evaluate(_plan(adapter, steps=2))
    assert few.metrics["free_gap"] == 0.0
    assert few.metrics["step_cost"] > 0 and few.score >= SETTINGS.step_cost_weight * few.metrics["step_cost"]
    harsh = evaluator.evaluate(_plan(adapter, weight_bits=2, steps=2))
    assert harsh.metrics["step_cost"] == few.metrics["step_cost"] and harsh.score > few.score


def test_a_plan_is_checked_against_the_model_once_per_evaluation(monkeypatch: pytest.MonkeyPatch) -> None:
    from dlmsearch.compress import apply as apply_module

    checked: list[Plan] = []
    real = apply_module.check_plan_fits
    monkeypatch.setattr(apply_module, "check_plan_fits", lambda plan, adapter: (checked.append(plan),
                                                                                 real(plan, adapter))[1])
    adapter = tiny_model()
    evaluator = _evaluator(adapter)
    plan = _plan(adapter, weight_bits=4)
    evaluator.evaluate(plan)
    assert checked == [plan]  # where the Plan meets the model: apply_plan_
    bad = Plan.from_dict({**plan.to_dict(), "layers": {"model.layers.0.mlp.upproj": {"weight_bits": [4]}}})
    with pytest.raises(PlanValidationError, match="did you mean 'model.layers.0.mlp.up_proj'"):
        evaluator.evaluate(bad)
