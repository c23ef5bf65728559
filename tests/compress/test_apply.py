"""apply_plan_, save_compressed and load_compressed: all-or-nothing, and an exact round trip."""

from __future__ import annotations

import copy
import io
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from dlmsearch.compress import CalibrationSet, CalibrationStatistics, QuantizedLinear, apply_plan_, save_compressed
from dlmsearch.compress import apply as apply_module
from dlmsearch.evaluators.plan_compressor import PlanCompressor
from dlmsearch.models.adapters import DLMAdapter
from dlmsearch.models.embedded import embedded_model_dir
from dlmsearch.models.loading import build_random_model, load_model
from dlmsearch.models.sampler import generate
from dlmsearch.plan import Plan, PlanValidationError, uniform_plan

ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


def _model() -> DLMAdapter:
    return build_random_model("llama", hidden_size=64, num_heads=4, intermediate_size=256)


def _calibration(adapter: DLMAdapter) -> CalibrationSet:
    ids = torch.randint(0, 60, (4000,), generator=torch.Generator().manual_seed(0))
    return CalibrationSet.from_ids(ids, adapter.mask_token_id, n_sequences=4, seq_len=32, timesteps=(0.2, 0.6))


def _mixed_plan(adapter: DLMAdapter) -> Plan:
    """Every knob at once: wanda + 4-bit, heads, channels with GPTQ, 16-bit groups, act bits."""
    data: dict[str, Any] = uniform_plan(adapter, weight_bits=4, sparsity=0.5, prune_method="wanda",
                                        timestep_groups=2).to_dict()
    for role in ATTN:
        data["layers"][f"model.layers.0.self_attn.{role}"].update(structure="heads", sparsity=0.5,
                                                                  weight_bits=[16, 16])
    for role in MLP:
        data["layers"][f"model.layers.1.mlp.{role}"].update(structure="channels", sparsity=0.5, quant_method="gptq",
                                                            weight_bits=[8, 4])
    data["layers"]["model.layers.1.self_attn.q_proj"].update(weight_bits=[8, 16], act_bits=[8, 16])
    return Plan.from_dict(data)


def _logits(adapter: DLMAdapter, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return adapter.forward_logits(ids)


def test_apply_save_load_generate_round_trip(tmp_path: Path) -> None:
    adapter = _model()
    record = apply_plan_(adapter, _mixed_plan(adapter), _calibration(adapter))
    attention = adapter.get_module("model.layers.0.self_attn")
    assert attention.q_proj.out_features == 32 and attention.o_proj.in_features == 32  # 2 of 4 heads kept
    assert adapter.get_module("model.layers.1.mlp.down_proj").in_features == 128  # half the channels
    assert isinstance(adapter.get_module("model.layers.1.mlp.down_proj"), QuantizedLinear)
    assert "model.layers.0.self_attn.q_proj" not in record.quantized  # 16-bit groups only: stays dense
    ids = torch.randint(0, 60, (2, 24))
    before = _logits(adapter, ids)
    folder = save_compressed(adapter, tmp_path / "compressed")
    reloaded = load_model(folder)
    assert torch.equal(_logits(reloaded, ids), before)
    prompt = ids[0, :4]
    assert torch.equal(generate(reloaded, prompt, gen_length=16, steps=8, block_length=8),
                       generate(adapter, prompt, gen_length=16, steps=8, block_length=8))
    assert reloaded.compression.plan == record.plan


def test_unstructured_sparsity_is_applied_per_layer() -> None:
    adapter = _model()
    plan = uniform_plan(adapter, sparsity=0.5, prune_method="magnitude")
    apply_plan_(adapter, plan)
    for info in adapter.linears():
        weight = adapter.get_module(info.name).weight
        assert (weight == 0).float().mean().item() == pytest.approx(0.5, abs=1e-6)


def test_statistics_rank_each_dense_weight_once_and_rerank_a_changed_one() -> None:
    adapter = _model()
    statistics = CalibrationStatistics()
    name = "model.layers.0.mlp.up_proj"
    weight = adapter.get_module(name).weight.detach()
    ranks = statistics.ranks(name, weight, "magnitude", None)
    assert statistics.ranks(name, weight.clone(), "magnitude", None) is ranks  # an equal copy: kept ranks
    changed = weight.clone()
    changed[0, 0] = 100.0
    reranked = statistics.ranks(name, changed, "magnitude", None)
    assert reranked[0, 0] == weight.shape[1] - 1 and ranks[0, 0] != reranked[0, 0]
    sliced = weight[:8]
    assert torch.equal(statistics.ranks(name, sliced, "magnitude", None), ranks[:8])


def test_compressing_plans_with_shared_statistics_equals_compressing_each_afresh() -> None:
    dense = _model()
    compressor = PlanCompressor(dense, calibration=_calibration(dense), keep_last=False)
    plans = [uniform_plan(dense, weight_bits=bits, sparsity=sparsity, prune_method=method)
             for bits, sparsity, method in ((4, 0.5, "wanda"), (8, 0.3, "wanda"), (16, 0.3, "magnitude"),
                                            (4, 0.5, "sink_wanda"), (16, 0.5, "magnitude"))]
    plans.append(_mixed_plan(dense))
    for plan in plans + plans:  # the second pass reads every rank from the statistics
        shared = compressor.compressed(plan)
        alone = copy.deepcopy(dense)
        apply_plan_(alone, plan, _calibration(dense), use_kernels=False, progress=False)
        ids = torch.randint(0, 60, (2, 24), generator=torch.Generator().manual_seed(1))
        assert torch.equal(_logits(shared, ids), _logits(alone, ids))
        for name, param in alone.model.state_dict().items():
            assert torch.equal(shared.model.state_dict()[name], param), name


def test_invalid_plan_leaves_model_untouched() -> None:
    adapter = _model()
    original = {k: v.clone() for k, v in adapter.model.state_dict().items()}
    data = uniform_plan(adapter, weight_bits=4).to_dict()
    data["layers"]["model.layers.7.mlp.up_proj"] = data["layers"]["model.layers.0.mlp.up_proj"]
    with pytest.raises(PlanValidationError, match="model.layers.7.mlp.up_proj"):
        apply_plan_(adapter, Plan.from_dict(data))
    assert all(torch.equal(v, original[k]) for k, v in adapter.model.state_dict().items())


def test_failure_midway_rolls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    adapter = _model()
    ids = torch.randint(0, 60, (1, 16))
    before = _logits(adapter, ids)
    shapes = [(i.in_features, i.out_features) for i in adapter.linears()]
    calls = {"n": 0}
    real = apply_module._replacement

    def failing(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("simulated failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(apply_module, "_replacement", failing)
    with pytest.raises(RuntimeError, match="simulated failure"):
        apply_plan_(adapter, _mixed_plan(adapter), _calibration(adapter))
    assert [(i.in_features, i.out_features) for i in adapter.linears()] == shapes  # heads pruning undone
    assert torch.equal(_logits(adapter, ids), before)
    assert adapter.compression is None


def test_four_bit_folder_is_about_a_quarter_of_fp16(tmp_path: Path) -> None:
    adapter = load_model("shakespeare-char")
    apply_plan_(adapter, uniform_plan(adapter, weight_bits=4))
    folder = save_compressed(adapter, tmp_path / "w4")
    fp16_size = (embedded_model_dir() / "model.safetensors").stat().st_size
    ratio = (folder / "model.safetensors").stat().st_size / fp16_size
    assert 0.2 < ratio < 0.4, ratio


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_show_on_a_terminal_and_evaluators_hide_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """A user's apply shows its steps; a search's evaluators, compressing a copy per trial, show none."""
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    adapter = _model()
    plan = _mixed_plan(adapter)
    apply_plan_(copy.deepcopy(adapter), plan, calibration=_calibration(adapter))
    assert "apply plan" in terminal.getvalue() and "calibration" in terminal.getvalue()
    terminal.seek(0)
    terminal.truncate()
    PlanCompressor(adapter, calibration=_calibration(adapter)).compressed(plan)
    assert "apply plan" not in terminal.getvalue() and "calibration" not in terminal.getvalue()
