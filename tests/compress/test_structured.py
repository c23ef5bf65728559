"""Structured pruning: heads (by KV group) and MLP channels really shrink the matrices; the model still runs."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from dlmsearch.compress import apply_plan_
from dlmsearch.compress.calibration import CalibrationSet, collect_input_statistics
from dlmsearch.compress.structured import (
    channel_scores,
    head_group_scores,
    head_layout,
    prune_channels_,
    prune_heads_,
    reconstruct_columns_,
)
from dlmsearch.models.adapters import DLMAdapter
from dlmsearch.models.sampler import generate
from dlmsearch.plan import uniform_plan

IDS = torch.randint(0, 60, (2, 12), generator=torch.Generator().manual_seed(0))


def _shapes(adapter: DLMAdapter, block: int) -> dict[str, tuple[int, int]]:
    return {info.role: (info.in_features, info.out_features) for info in adapter.linears() if info.block == block}


def _logits(adapter: DLMAdapter) -> torch.Tensor:
    with torch.no_grad():
        return adapter.forward_logits(IDS)


def test_head_pruning_shrinks_attention_and_the_model_generates(tiny_llama: DLMAdapter) -> None:
    kept = prune_heads_(tiny_llama, 0, 0.5, head_group_scores(tiny_llama, 0))
    assert kept.numel() == 2
    shapes = _shapes(tiny_llama, 0)
    assert shapes["q"] == shapes["k"] == shapes["v"] == (64, 32) and shapes["o"] == (32, 64)
    assert shapes["gate"] == (64, 128)
    assert _shapes(tiny_llama, 1)["q"] == (64, 64)  # other blocks untouched
    assert head_layout(tiny_llama, 0) == (2, 2, 16)
    assert torch.isfinite(_logits(tiny_llama)).all()
    with tiny_llama.capture_attention() as capture, torch.no_grad():  # eager attention runs too
        tiny_llama.forward_logits(IDS)
    assert capture.mass[0][0].shape == (2, 12)
    out = generate(tiny_llama, torch.tensor([1, 2, 3]), gen_length=8, steps=4, block_length=8)
    assert out.shape == (1, 11) and (out != tiny_llama.mask_token_id).all()


def test_gqa_model_keeps_whole_groups(tiny_qwen2: DLMAdapter) -> None:
    attention = tiny_qwen2.get_module("model.layers.1.self_attn")
    assert head_layout(tiny_qwen2, 1) == (4, 2, 16)
    kept = prune_heads_(tiny_qwen2, 1, 0.5, torch.tensor([1.0, 5.0, 2.0, 3.0]))  # per query head: groups 6 vs 5
    assert kept.tolist() == [0]
    assert head_layout(tiny_qwen2, 1) == (2, 1, 16)
    assert attention.num_key_value_groups == 2
    shapes = _shapes(tiny_qwen2, 1)
    assert shapes["q"] == (64, 32) and shapes["k"] == (64, 16) and shapes["v"] == (64, 16) and shapes["o"] == (32, 64)
    assert attention.q_proj.bias.shape == (32,) and attention.k_proj.bias.shape == (16,)
    assert torch.isfinite(_logits(tiny_qwen2)).all()
    out = generate(tiny_qwen2, torch.tensor([1, 2]), gen_length=4, steps=4, block_length=4)
    assert out.shape == (1, 6)


def test_removing_a_silent_head_keeps_the_logits(tiny_qwen2: DLMAdapter) -> None:
    o_proj = tiny_qwen2.get_module("model.layers.0.self_attn.o_proj")
    with torch.no_grad():
        o_proj.weight[:, 32:] = 0.0  # KV group 1 (query heads 2 and 3) writes nothing
    before = _logits(tiny_qwen2)
    scores = head_group_scores(tiny_qwen2, 0)
    assert scores[1] < scores[0]
    assert prune_heads_(tiny_qwen2, 0, 0.5, scores).tolist() == [0]
    torch.testing.assert_close(_logits(tiny_qwen2), before, rtol=1e-5, atol=1e-5)


def test_removing_silent_channels_keeps_the_logits(tiny_llama: DLMAdapter) -> None:
    down = tiny_llama.get_module("model.layers.1.mlp.down_proj")
    silent = torch.arange(0, 128, 2)
    with torch.no_grad():
        down.weight[:, silent] = 0.0
    before = _logits(tiny_llama)
    kept = prune_channels_(tiny_llama, 1, 0.5, channel_scores(tiny_llama, 1))
    assert kept.tolist() == list(range(1, 128, 2))
    shapes = _shapes(tiny_llama, 1)
    assert shapes["gate"] == (64, 64) and shapes["up"] == (64, 64) and shapes["down"] == (64, 64)
    assert tiny_llama.get_module("model.layers.1.mlp").intermediate_size == 64
    torch.testing.assert_close(_logits(tiny_llama), before, rtol=1e-5, atol=1e-5)
    generate(tiny_llama, torch.tensor([1, 2]), gen_length=4, steps=2, block_length=4)


def test_ratio_zero_is_a_no_op(tiny_qwen2: DLMAdapter) -> None:
    before = _logits(tiny_qwen2)
    weights = {name: p.clone() for name, p in tiny_qwen2.model.named_parameters()}
    assert prune_heads_(tiny_qwen2, 0, 0.0, head_group_scores(tiny_qwen2, 0)).tolist() == [0, 1]
    assert prune_channels_(tiny_qwen2, 0, 0.0, channel_scores(tiny_qwen2, 0)).numel() == 128
    assert all(torch.equal(p, weights[name]) for name, p in tiny_qwen2.model.named_parameters())
    assert torch.equal(_logits(tiny_qwen2), before)


def test_wanda_scores_use_calibration_statistics(tiny_llama: DLMAdapter) -> None:
    calib = CalibrationSet(IDS, tiny_llama.mask_token_id, timesteps=(0.5,))
    stats = collect_input_statistics(tiny_llama, calib)
    assert head_group_scores(tiny_llama, 0, stats).shape == (4,)
    scores = channel_scores(tiny_llama, 0, stats)
    assert scores.shape == (128,) and scores.sum().item() == pytest.approx(3.0, rel=1e-5)  # 3 matrices, 1 each
    assert not torch.allclose(scores, channel_scores(tiny_llama, 0))


def test_pruning_twice_and_keeping_one_group(tiny_llama: DLMAdapter) -> None:
    prune_heads_(tiny_llama, 0, 0.5, head_group_scores(tiny_llama, 0))
    kept = prune_heads_(tiny_llama, 0, 0.9, head_group_scores(tiny_llama, 0))  # never removes every group
    assert kept.numel() == 1 and head_layout(tiny_llama, 0) == (1, 1, 16)
    assert torch.isfinite(_logits(tiny_llama)).all()
    with pytest.raises(ValueError, match="KV groups"):
        prune_heads_(tiny_llama, 0, 0.5, torch.ones(3))
    with pytest.raises(ValueError, match="ratio"):
        prune_channels_(tiny_llama, 0, 1.0, channel_scores(tiny_llama, 0))


def test_reconstruction_fits_the_dense_output_better_than_slicing() -> None:
    generator = torch.Generator().manual_seed(1)
    mixing = torch.randn(24, 24, generator=generator)
    inputs = torch.randn(400, 24, generator=generator) @ mixing  # correlated columns: kept ones can stand in
    dense = torch.nn.Linear(24, 10, bias=True)
    kept = torch.arange(0, 24, 2)
    sliced = torch.nn.Linear(12, 10, bias=True)
    sliced.weight.data = dense.weight.data[:, kept].clone()
    sliced.bias.data = dense.bias.data.clone()
    refit = copy.deepcopy(sliced)
    reconstruct_columns_(refit, dense.weight, kept, inputs.T @ inputs)
    with torch.no_grad():
        target = dense(inputs)
        error = {name: float((layer(inputs[:, kept]) - target).pow(2).mean()) for name, layer in
                 (("sliced", sliced), ("refit", refit))}
    assert error["refit"] < 0.5 * error["sliced"]
    assert torch.equal(refit.bias, dense.bias)
    with pytest.raises(ValueError, match="columns"):
        reconstruct_columns_(refit, dense.weight, torch.arange(5), inputs.T @ inputs)


@pytest.mark.parametrize("structure", ["heads", "channels"])
def test_apply_plan_refits_the_layer_reading_pruned_units(tiny_llama: DLMAdapter, structure: str) -> None:
    calib = CalibrationSet(IDS, tiny_llama.mask_token_id, timesteps=(0.3, 0.7))
    roles = ("q", "k", "v", "o") if structure == "heads" else ("gate", "up", "down")
    reader = "o" if structure == "heads" else "down"
    plan = uniform_plan(tiny_llama)
    layers = {name: (dataclasses.replace(lp, structure=structure, sparsity=0.5, prune_method="wanda")
                     if any(name.endswith(tiny_llama.role_suffixes()[r]) for r in roles) and ".layers.0." in name
                     else lp) for name, lp in plan.layers.items()}
    plan = dataclasses.replace(plan, layers=layers)
    models = {}
    for reconstruct in (False, True):
        models[reconstruct] = copy.deepcopy(tiny_llama)
        apply_plan_(models[reconstruct], plan, calib, reconstruct=reconstruct, progress=False)
    name = f"model.layers.0.{tiny_llama.role_suffixes()[reader]}"
    sliced, refit = (models[r].get_module(name).weight for r in (False, True))
    assert sliced.shape == refit.shape and not torch.allclose(sliced, refit)
    shapes = [(i.in_features, i.out_features) for i in models[True].linears()]
    assert shapes == [(i.in_features, i.out_features) for i in models[False].linears()]  # same speed
    dense = _logits(tiny_llama)
    drift = {r: float((_logits(m) - dense).pow(2).mean()) for r, m in models.items()}
    assert drift[True] < drift[False]  # closer to the dense model's logits on these (calibration) ids
