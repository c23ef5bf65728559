"""The int8 fbgemm CPU format: numerics, apply_plan_'s choice, per-timestep switching, save/load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlmsearch.compress import QuantizedLinear, apply_plan_, save_compressed
from dlmsearch.compress.kernels import (
    INT8_FBGEMM,
    KERNELS,
    fbgemm_full_range,
    fbgemm_reference,
    kernel_available,
    per_tensor_activations,
    symmetric_per_channel,
)
from dlmsearch.compress.quantize import quantize_activations, quantize_rtn
from dlmsearch.compress.quantized_linear import SIMULATED, QuantConfig, force_timestep_group
from dlmsearch.models.loading import build_random_model, load_model
from dlmsearch.models.sampler import generate
from dlmsearch.plan import uniform_plan

pytestmark = pytest.mark.skipif(not kernel_available(INT8_FBGEMM, "cpu"),
                                reason="this CPU build of torch has no fbgemm dynamic int8 linear")


def _max_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().abs().max() / b.detach().abs().max())


@pytest.mark.parametrize("group_size", [0, 32])
def test_kernel_matches_its_float_reference(group_size: int) -> None:
    kernel = KERNELS[INT8_FBGEMM]
    qw = quantize_rtn(torch.randn(48, 128) * 0.05 + 0.01, 8, group_size)
    x = torch.randn(9, 128) + 0.5
    out = kernel.linear(x, kernel.pack(qw, torch.float32))
    assert _max_error(out, fbgemm_reference(x, qw)) < 1e-4
    # the format's own error is small but real: per-tensor activations and a second weight rounding
    simulated = quantize_activations(x, 8) @ qw.dequantize().t()
    assert 1e-4 < _max_error(out, simulated) < 3e-2


def test_reduce_range_reference_is_seven_bit_and_the_probe_decides_it() -> None:
    x = torch.linspace(-1.0, 3.0, 401)
    assert per_tensor_activations(x, reduce_range=True).unique().numel() <= 128
    assert per_tensor_activations(x, reduce_range=False).unique().numel() > 128
    assert float(per_tensor_activations(torch.zeros(3), False).abs().max()) == 0.0
    weight = torch.randn(16, 64)
    x = torch.rand(4, 64) * 3
    packed = KERNELS[INT8_FBGEMM].pack(quantize_rtn(weight, 8, 0), torch.float32)
    assert packed.reduce_range == (not fbgemm_full_range())
    out = KERNELS[INT8_FBGEMM].linear(x, packed)
    assert _max_error(out, fbgemm_reference(x, quantize_rtn(weight, 8, 0))) < 1e-4


def test_symmetric_codes_reconstruct_the_weight() -> None:
    weight = torch.randn(8, 32)
    codes, scale = symmetric_per_channel(weight)
    assert codes.dtype == torch.int8 and int(codes.abs().max()) == 127
    assert float((codes.double() * scale[:, None] - weight.double()).abs().max()) <= float(scale.max()) / 2 + 1e-9


def test_apply_plan_chooses_it_on_cpu_for_w8a8_layers_only() -> None:
    adapter = build_random_model("llama", num_layers=1, hidden_size=64, num_heads=4)
    apply_plan_(adapter, uniform_plan(adapter, weight_bits=8, act_bits=8, group_size=32))
    layers = [m for m in adapter.model.modules() if isinstance(m, QuantizedLinear)]
    assert layers and all(layer.summary["kernels"] == [INT8_FBGEMM] for layer in layers)
    assert not any(layer.summary["simulated"][0] for layer in layers)
    for bits, act_bits, expected in ((8, 16, SIMULATED), (4, 8, f"{SIMULATED}+fake_act8")):
        other = build_random_model("llama", num_layers=1, hidden_size=64, num_heads=4)
        apply_plan_(other, uniform_plan(other, weight_bits=bits, act_bits=act_bits, group_size=32))
        kernels = {m.summary["kernels"][0] for m in other.model.modules() if isinstance(m, QuantizedLinear)}
        assert kernels == {expected}  # the Plan does not fit the format: dequantize-then-matmul
    off = build_random_model("llama", num_layers=1, hidden_size=64, num_heads=4)
    apply_plan_(off, uniform_plan(off, weight_bits=8, act_bits=8, group_size=32), use_kernels=False)
    assert {m.kernel_for(8, 8) for m in off.model.modules() if isinstance(m, QuantizedLinear)} == {
        f"{SIMULATED}+fake_act8"}


def test_per_timestep_switching_runs_fbgemm_only_in_its_groups() -> None:
    linear = nn.Linear(64, 32)
    config = QuantConfig((8, 4), (8, 8), timestep_boundaries=(0.5,), group_size=32)
    layer = QuantizedLinear.from_linear(linear, config)
    assert layer.summary["kernels"] == [INT8_FBGEMM, f"{SIMULATED}+fake_act8"]
    assert layer.summary["simulated"] == [False, True]
    x = torch.randn(2, 5, 64)
    with force_timestep_group(layer, 0):
        expected = fbgemm_reference(x.reshape(10, 64), layer.weight_for(8)).reshape(2, 5, 32) + linear.bias
        assert _max_error(layer(x), expected) < 1e-4
    with force_timestep_group(layer, 1):
        expected = F.linear(quantize_activations(x, 8), layer.weight_for(4).dequantize(), linear.bias)
        torch.testing.assert_close(layer(x), expected)


def test_compressed_model_saves_reloads_and_generates_identically(tmp_path: Path) -> None:
    adapter = load_model("shakespeare-char")
    apply_plan_(adapter, uniform_plan(adapter, weight_bits=8, act_bits=8, steps=8, gen_length=16))
    folder = save_compressed(adapter, tmp_path / "w8a8")
    reloaded = load_model(folder)
    kernels = {m.summary["kernels"][0] for m in reloaded.model.modules() if isinstance(m, QuantizedLinear)}
    assert kernels == {INT8_FBGEMM}
    ids = torch.as_tensor(adapter.tokenizer.encode("ROMEO:"))
    first = generate(adapter, ids, gen_length=16, steps=8, block_length=16)
    assert torch.equal(generate(reloaded, ids, gen_length=16, steps=8, block_length=16), first)
