"""QuantizedLinear: per-timestep switching, storage layouts, real kernels, state round trip."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from dlmsearch.compress.gptq import HessianAccumulator
from dlmsearch.compress.kernels import (
    INT4_WEIGHT_ONLY,
    INT8_DYNAMIC,
    INT8_FBGEMM,
    INT8_WEIGHT_ONLY,
    KERNELS,
    bf16_linear,
    kernel_available,
    kernels_for,
    select_kernel,
)
from dlmsearch.compress.quantize import nested_from_master, quantize_activations, quantize_rtn
from dlmsearch.compress.quantized_linear import (
    SIMULATED,
    QuantConfig,
    QuantizedLinear,
    force_timestep_group,
)
from dlmsearch.models.adapters import DLMAdapter
from dlmsearch.models.sampler import current_step, generate


def _linear(in_features: int = 64, out_features: int = 32, bias: bool = True) -> nn.Linear:
    return nn.Linear(in_features, out_features, bias=bias)


def _replace_linears(adapter: DLMAdapter, config: QuantConfig, use_kernels: bool) -> list[QuantizedLinear]:
    layers = []
    for info in adapter.linears():
        parent_name, _, child = info.name.rpartition(".")
        parent = adapter.get_module(parent_name)
        layer = QuantizedLinear.from_linear(getattr(parent, child), config, use_kernels=use_kernels)
        setattr(parent, child, layer)
        layers.append(layer)
    return layers


def _expected_output(layer: QuantizedLinear, x: torch.Tensor, bits: int, act_bits: int) -> torch.Tensor:
    weight = layer.weight16 if bits == 16 else layer.weight_for(bits).dequantize()
    assert weight is not None
    return F.linear(quantize_activations(x, act_bits), weight, layer.bias)


def _require_kernel(name: str) -> None:
    if not kernel_available(name, "cpu"):
        pytest.skip(f"{name} does not run on this CPU build of torch")


# ---------------------------------------------------------------- per-timestep switching


@pytest.mark.parametrize("use_kernels", [False, True])
def test_generation_switches_precision_per_timestep(tiny_llama: DLMAdapter, use_kernels: bool) -> None:
    config = QuantConfig(weight_bits=(8, 2, 16), act_bits=(16, 8, 16), timestep_boundaries=(0.5, 0.75))
    layers = _replace_linears(tiny_llama, config, use_kernels)
    seen: dict[int, set[tuple[int, int]]] = {}
    mismatches: list[float] = []

    def spy(module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        assert isinstance(module, QuantizedLinear)
        step = current_step()
        assert step is not None
        bits = module.current_bits()
        seen.setdefault(step.index, set()).add(bits)
        expected = _expected_output(module, inputs[0], *bits)
        mismatches.append(float((output - expected).abs().max() / expected.abs().max()))

    handles = [layer.register_forward_hook(spy) for layer in layers]
    generate(tiny_llama, torch.tensor([1, 2, 3]), gen_length=8, steps=8, block_length=8)
    for handle in handles:
        handle.remove()
    assert seen == {i: {(8, 16)} if i < 4 else {(2, 8)} if i < 6 else {(16, 16)} for i in range(8)}
    assert len(mismatches) == 8 * len(layers)
    assert max(mismatches) < (1e-6 if not use_kernels else 1e-4)


def test_outside_the_sampler_group_zero_unless_forced() -> None:
    layer = QuantizedLinear.from_linear(_linear(), QuantConfig((4, 8), (16, 16), (0.5,), group_size=32),
                                        use_kernels=False)
    model = nn.Sequential(layer)
    x = torch.randn(3, 64)
    torch.testing.assert_close(model(x), _expected_output(layer, x, 4, 16))
    with force_timestep_group(model, 1):
        assert layer.current_bits() == (8, 16)
        torch.testing.assert_close(model(x), _expected_output(layer, x, 8, 16))
    assert layer.active_group is None
    with pytest.raises(ValueError, match="group=2: the layer has 2 timestep groups"), force_timestep_group(model, 2):
        pass
    assert layer.active_group is None


# ---------------------------------------------------------------- storage layouts


def test_nested_storage_holds_one_code_tensor() -> None:
    linear = _linear()
    config = QuantConfig((2, 4, 8, 3), (16,) * 4, (0.25, 0.5, 0.75), group_size=16, storage="nested")
    layer = QuantizedLinear.from_linear(linear, config)
    tensors, _ = layer.state_tensors()
    assert layer.stored_bits == (8,)
    assert [name for name in tensors if name.endswith(".packed")] == ["w8.packed"]
    assert "weight16" not in tensors and layer.weight16 is None
    master = quantize_rtn(linear.weight, 8, 16)
    for bits in (2, 3, 4, 8):
        assert torch.equal(layer.weight_for(bits).codes, master.codes >> (8 - bits))
        torch.testing.assert_close(layer.weight_for(bits).dequantize(), nested_from_master(master, bits).dequantize())


def test_nested_storage_keeps_only_the_slice_it_needs() -> None:
    """A layer whose highest precision is 4 bits stores the master's top 4 bits, not all 8."""
    linear = _linear()
    layer = QuantizedLinear.from_linear(linear, QuantConfig((4, 2), (16, 16), (0.5,), group_size=16))
    tensors, _ = layer.state_tensors()
    assert layer.stored_bits == (4,)
    assert [name for name in tensors if name.endswith(".packed")] == ["w4.packed"]
    master = quantize_rtn(linear.weight, 8, 16)
    for bits in (2, 4):
        assert torch.equal(layer.weight_for(bits).codes, master.codes >> (8 - bits))


def test_copies_storage_holds_one_code_tensor_per_bit_width() -> None:
    linear = _linear()
    config = QuantConfig((2, 4, 4, 16), (16,) * 4, (0.25, 0.5, 0.75), group_size=16, storage="copies")
    layer = QuantizedLinear.from_linear(linear, config)
    tensors, _ = layer.state_tensors()
    assert layer.stored_bits == (2, 4)
    assert sorted(name for name in tensors if name.endswith(".packed")) == ["w2.packed", "w4.packed"]
    assert torch.equal(tensors["weight16"], linear.weight.detach())
    for bits in (2, 4):
        assert torch.equal(layer.weight_for(bits).codes, quantize_rtn(linear.weight, bits, 16).codes)
    with pytest.raises(ValueError, match="no 8-bit weights"):
        layer.weight_for(8)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_layer_error_is_within_half_a_step(bits: int) -> None:
    linear = _linear()
    layer = QuantizedLinear.from_linear(linear, QuantConfig((bits,), (16,), group_size=32, storage="copies"))
    qw = layer.weight_for(bits)
    step = qw.scale.repeat_interleave(32, dim=1)
    assert bool(((linear.weight - qw.dequantize()).abs() <= step / 2 * (1 + 1e-5) + 1e-7).all())


def test_gptq_method_needs_a_hessian_and_beats_rtn_on_its_data() -> None:
    linear = _linear(bias=False)
    directions = torch.randn(4, 64)
    x = torch.randn(256, 4) @ directions + 0.05 * torch.randn(256, 64)
    accumulator = HessianAccumulator(64)
    with accumulator.capture(linear):
        linear(x)
    config = QuantConfig((3,), (16,), group_size=32, storage="copies", method="gptq")
    with pytest.raises(ValueError, match="needs the layer's Hessian"):
        QuantizedLinear.from_linear(linear, config)
    gptq = QuantizedLinear.from_linear(linear, config, hessian=accumulator.hessian, use_kernels=False)
    rtn = QuantizedLinear.from_linear(linear, QuantConfig((3,), (16,), group_size=32, storage="copies"),
                                      use_kernels=False)
    reference = linear(x)
    assert (gptq(x) - reference).norm() < (rtn(x) - reference).norm()


def test_config_and_constructor_validation() -> None:
    with pytest.raises(ValueError, match="one value per timestep group"):
        QuantConfig((4, 8), (16,), (0.5,))
    with pytest.raises(ValueError, match="must increase strictly"):
        QuantConfig((4, 8, 8), (16,) * 3, (0.6, 0.5))
    with pytest.raises(ValueError, match="values must be in"):
        QuantConfig((5,), (16,))
    with pytest.raises(ValueError, match="does not divide in_features"):
        QuantizedLinear.from_linear(_linear(), QuantConfig((4,), (16,), group_size=48))


# ---------------------------------------------------------------- kernels and reporting


def test_summary_reports_real_and_simulated_kernels() -> None:
    _require_kernel(INT8_WEIGHT_ONLY)
    _require_kernel(INT4_WEIGHT_ONLY)
    config = QuantConfig((8, 4, 3, 16), (16, 16, 4, 8), (0.25, 0.5, 0.75), group_size=0)
    layer = QuantizedLinear.from_linear(_linear(), config, use_kernels=True)
    summary = layer.summary
    assert summary["kernels"] == [INT8_WEIGHT_ONLY, INT4_WEIGHT_ONLY, f"{INT4_WEIGHT_ONLY}+fake_act4",
                                  "dense_float32+fake_act8"]
    assert summary["simulated"] == [False, False, True, True]
    json.dumps(summary)
    grouped = QuantizedLinear.from_linear(_linear(), QuantConfig((8,), (16,), group_size=32), use_kernels=True)
    assert grouped.kernel_for(8) == SIMULATED and grouped.simulated(8)
    off = QuantizedLinear.from_linear(_linear(), config, use_kernels=False)
    assert off.kernel_for(4) == SIMULATED and off.simulated(4)
    default = QuantizedLinear.from_linear(_linear(), config)  # on a CPU only fast kernels: none of these
    assert default.summary["kernels"] == [SIMULATED, SIMULATED, f"{SIMULATED}+fake_act4", "dense_float32+fake_act8"]


def test_select_kernel_rules() -> None:
    for name in KERNELS:
        _require_kernel(name)

    def name_of(*args: Any) -> str | None:
        kernel = select_kernel(*args)
        return None if kernel is None else kernel.name

    assert name_of(8, 16, 0, 32, 64, "cpu") == INT8_WEIGHT_ONLY
    assert name_of(8, 8, 0, 32, 64, "cpu") == INT8_FBGEMM  # W8A8 prefers the kernel fast on the device
    assert name_of(8, 8, 32, 32, 64, "cpu") == INT8_FBGEMM  # it requantizes per channel
    assert name_of(8, 8, 0, 32, 64, "cpu", torch.float32, None) == INT8_FBGEMM  # the fast ones only
    assert name_of(8, 16, 0, 32, 64, "cpu", torch.float32, None) is None
    assert name_of(8, 8, 0, 32, 64, "cpu", torch.float32, False) is None
    assert name_of(8, 4, 0, 32, 64, "cpu") == INT8_WEIGHT_ONLY
    assert name_of(8, 16, 32, 32, 64, "cpu") is None
    assert name_of(3, 16, 32, 32, 64, "cpu") == INT4_WEIGHT_ONLY
    assert name_of(4, 8, 16, 32, 64, "cpu") is None  # tinygemm groups are 32..256
    assert name_of(4, 16, 32, 24, 64, "cpu") is None  # CPU int4 needs N % 16 == 0
    assert name_of(4, 16, 32, 32, 64, "cpu", torch.float64) is None


def test_by_default_only_kernels_measured_faster_than_the_float_matmul_run() -> None:
    """CPUs: fbgemm's int8 only; CUDA: none (on an H200 each was slower than bf16, bench/RESULTS.md)."""
    assert kernels_for("cpu", None) == {INT8_FBGEMM}
    assert kernels_for("cuda", None) == frozenset()
    for device_type in ("cpu", "cuda"):
        assert kernels_for(device_type, True) == set(KERNELS)  # every kernel stays available on request
        assert kernels_for(device_type, False) == frozenset()
    for bits, act_bits, group_size in ((8, 16, 0), (4, 16, 32), (8, 8, 0)):  # no kernel considered, none probed
        assert select_kernel(bits, act_bits, group_size, 32, 64, "cuda", torch.bfloat16, None) is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_weight_only_kernel_matches_dequantize(dtype: torch.dtype) -> None:
    _require_kernel(INT8_WEIGHT_ONLY)
    kernel = KERNELS[INT8_WEIGHT_ONLY]
    qw = quantize_rtn(torch.randn(48, 96) + 0.3, 8, 0)
    x = torch.randn(5, 96)
    out = kernel.linear(x.to(dtype), kernel.pack(qw, dtype)).float()
    reference = x.to(dtype).float() @ qw.dequantize().t()
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    assert float((out - reference).abs().max()) <= tolerance * float(reference.abs().max())


@pytest.mark.parametrize(("bits", "group_size"), [(4, 0), (4, 32), (4, 64), (3, 32), (2, 128)])
def test_int4_weight_only_kernel_matches_dequantize(bits: int, group_size: int) -> None:
    _require_kernel(INT4_WEIGHT_ONLY)
    kernel = KERNELS[INT4_WEIGHT_ONLY]
    qw = nested_from_master(quantize_rtn(torch.randn(32, 128), 8, group_size), bits)
    x = torch.randn(7, 128)
    out = kernel.linear(x, kernel.pack(qw, torch.float32))
    reference = x @ qw.dequantize().t()
    assert float((out - reference).abs().max()) <= 1e-5 * float(reference.abs().max())


def test_int8_dynamic_kernel_matches_fake_quant() -> None:
    _require_kernel(INT8_DYNAMIC)
    kernel = KERNELS[INT8_DYNAMIC]
    qw = quantize_rtn(torch.randn(40, 64) - 0.2, 8, 0)
    x = torch.randn(2, 3, 64)
    out = kernel.linear(x.reshape(6, 64), kernel.pack(qw, torch.float32))
    reference = quantize_activations(x.reshape(6, 64), 8) @ qw.dequantize().t()
    assert float((out - reference).abs().max()) <= 1e-5 * float(reference.abs().max())


def test_bf16_benchmark_kernel_matches_float() -> None:
    weight = torch.randn(32, 64)
    x = torch.randn(4, 64)
    reference = x @ weight.t()
    bf16 = bf16_linear(x, weight.bfloat16())
    assert bf16.dtype == torch.float32
    assert float((bf16 - reference).abs().max()) <= 2e-2 * float(reference.abs().max())


def test_layer_with_kernels_matches_simulation_and_handles_other_dtypes() -> None:
    config = QuantConfig((8, 4, 8), (16, 16, 4), (0.3, 0.6), group_size=0)
    linear = _linear(128, 48)
    fast = QuantizedLinear.from_linear(linear, config, use_kernels=True)
    slow = QuantizedLinear.from_linear(linear, config, use_kernels=False)
    x = torch.randn(2, 5, 128)
    for group in range(3):
        with force_timestep_group(fast, group), force_timestep_group(slow, group):
            expected = slow(x)
            torch.testing.assert_close(fast(x), expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
            assert fast(x.double()).dtype == torch.float64  # no kernel takes float64: simulated
    fast.to(torch.bfloat16)
    assert fast.scale_8.dtype == torch.float32 and fast.zero_8.dtype == torch.float32  # exact through casts
    with force_timestep_group(fast, 0):
        out = fast(x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), slow(x), rtol=3e-2, atol=3e-2 * float(out.abs().max()))


# ---------------------------------------------------------------- state round trip


@pytest.mark.parametrize(("storage", "method"), [("nested", "rtn"), ("copies", "rtn"), ("nested", "gptq")])
def test_state_round_trip_through_safetensors_gives_identical_outputs(tmp_path: Path, storage: str,
                                                                      method: str) -> None:
    linear = _linear()
    x = torch.randn(3, 5, 64)
    hessian = 2 * x.reshape(-1, 64).t() @ x.reshape(-1, 64) / 15 if method == "gptq" else None
    config = QuantConfig((3, 8, 16), (8, 16, 4), (0.4, 0.8), group_size=32, storage=storage, method=method)
    layer = QuantizedLinear.from_linear(linear, config, hessian=hessian)
    tensors, metadata = layer.state_tensors()
    save_file(tensors, tmp_path / "layer.safetensors", metadata={"layer": json.dumps(metadata)})
    restored_meta = json.loads(json.dumps(metadata))
    again = QuantizedLinear.from_state_tensors(load_file(tmp_path / "layer.safetensors"), restored_meta)
    assert again.config == layer.config and again.stored_bits == layer.stored_bits
    for group in range(3):
        with force_timestep_group(layer, group), force_timestep_group(again, group):
            assert torch.equal(layer(x), again(x))


def test_quantized_model_stays_close_at_8_bits(tiny_llama: DLMAdapter) -> None:
    ids = torch.randint(0, 63, (2, 16))
    with torch.no_grad():
        reference = tiny_llama.forward_logits(ids)
    _replace_linears(tiny_llama, QuantConfig((8,), (16,), group_size=32), use_kernels=True)
    with torch.no_grad():
        logits = tiny_llama.forward_logits(ids)
    assert float((logits - reference).abs().max()) < 0.05 * float(reference.abs().max())


def test_packed_size_reflects_compression() -> None:
    linear = _linear(256, 256, bias=False)
    layer = QuantizedLinear.from_linear(linear, QuantConfig((4,), (16,), group_size=128, storage="copies"))
    tensors, _ = layer.state_tensors()
    stored = sum(t.numel() * t.element_size() for t in tensors.values())
    fp16 = 256 * 256 * 2
    assert stored < 0.285 * fp16  # 4/16 for the codes plus 64 bits of scale and zero per 128 weights (1/32)
