"""Analytic roofline: hand-checked counts and the documented effects of each knob."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dlmsearch.compress.kernels import kernels_for
from dlmsearch.cost_models import analytic
from dlmsearch.cost_models.analytic import AnalyticCostModel, steps_per_group
from dlmsearch.cost_models.hardware_spec import EfficiencyCurve, HardwareSpec, load_hardware
from dlmsearch.models.adapters import LinearInfo, ModelShape
from dlmsearch.plan import LayerPlan, ModelRef, Plan, SamplerSettings

SHAPE = ModelShape("llama", 1, 256, 4, 4, 64, 1024, 1000, 512)
LINEARS = [LinearInfo("q", "q", 0, 256, 256), LinearInfo("k", "k", 0, 256, 256), LinearInfo("v", "v", 0, 256, 256),
           LinearInfo("o", "o", 0, 256, 256), LinearInfo("gate", "gate", 0, 256, 1024),
           LinearInfo("up", "up", 0, 256, 1024), LinearInfo("down", "down", 0, 1024, 256)]
ONE = EfficiencyCurve(((1.0, 1.0),))


def _hardware(kernels: tuple[str, ...] = (), flops: float = 1e12, bandwidth: float = 1e11) -> HardwareSpec:
    return HardwareSpec("toy", "gpu", {"fp32": flops, "bf16": flops, "int8": 2 * flops}, bandwidth, 2**34, kernels,
                        0.0, ONE, ONE)


def _plan(steps: int = 8, layer: LayerPlan | None = None, storage: str = "nested", boundaries: tuple = ()) -> Plan:
    layers = {info.name: layer for info in LINEARS} if layer else {}
    return Plan(ModelRef("toy"), SamplerSettings(steps=steps, gen_length=64, block_length=64), boundaries, storage,
                layers)


def test_single_linear_time_is_the_hand_computed_roofline() -> None:
    model = AnalyticCostModel(SHAPE, LINEARS[:1])
    arrays = model.encode([_plan()])
    parts = model.step_times(arrays, _hardware())
    m, k, n = 64, 256, 256
    flops = 2 * m * k * n
    data = k * n * 2 + m * k * 2 + m * n * 2
    assert parts["linear"][0, 0] == pytest.approx(max(flops / 1e12, data / 1e11))


def test_attention_and_lm_head_flops() -> None:
    model = AnalyticCostModel(SHAPE, LINEARS)
    parts = model.step_times(model.encode([_plan()]), _hardware(bandwidth=1e18))  # compute-bound
    assert parts["attention"][0, 0] == pytest.approx(4 * 64 * 64 * 4 * 64 / 1e12)
    assert parts["lm_head"][0, 0] == pytest.approx(2 * 64 * 256 * 1000 / 1e12)


def test_halving_steps_halves_latency() -> None:
    model = AnalyticCostModel(SHAPE, LINEARS)
    hw = _hardware()
    assert model.cost(_plan(steps=8), hw).latency_ms == pytest.approx(2 * model.cost(_plan(steps=4), hw).latency_ms)


def test_four_bit_weights_cut_weight_bytes_with_scales_only_with_a_kernel() -> None:
    model = AnalyticCostModel(SHAPE, LINEARS[:1], use_kernels=True)  # the toy GPU runs no kernel by default
    w4 = _plan(layer=LayerPlan((4,), (16,), group_size=64))
    membound = _hardware(("int4_weight_only",), flops=1e18)
    dense_s = model.step_times(model.encode([_plan()]), membound)["linear"][0, 0]
    w4_s = model.step_times(model.encode([w4]), membound)["linear"][0, 0]
    m, k, n = 64, 256, 256
    expected = (k * n * 4 / 8 + k * n / 64 * 4 + m * k * 2 + m * n * 2) / (k * n * 2 + m * k * 2 + m * n * 2)
    assert w4_s / dense_s == pytest.approx(expected)
    no_kernel = model.step_times(model.encode([w4]), _hardware(flops=1e18))["linear"][0, 0]
    assert no_kernel == pytest.approx(dense_s)  # dequantize-then-matmul moves 16-bit weights


def test_unstructured_sparsity_costs_dense_time_but_structure_does_not() -> None:
    model = AnalyticCostModel(SHAPE, LINEARS)
    hw = _hardware()
    dense = model.cost(_plan(), hw).latency_ms
    assert model.cost(_plan(layer=LayerPlan(sparsity=0.5)), hw).latency_ms == dense
    channels = {info.name: LayerPlan(sparsity=0.5, structure="channels") for info in LINEARS
                if info.role in ("gate", "up", "down")}
    plan = Plan(ModelRef("toy"), SamplerSettings(steps=8, gen_length=64, block_length=64), layers=channels)
    assert model.cost(plan, hw).latency_ms < dense


def test_mlp_channel_pruning_shrinks_only_the_mlp_activation_among_the_non_linear_parts() -> None:
    """Norms, rotary and residual adds run over the hidden width, which channel pruning keeps."""
    model = AnalyticCostModel(SHAPE, LINEARS)
    hw = _hardware(flops=1e18)  # memory-bound: time is bytes
    channels = {info.name: LayerPlan(sparsity=0.5, structure="channels") for info in LINEARS
                if info.role in ("gate", "up", "down")}
    pruned = Plan(ModelRef("toy"), SamplerSettings(steps=8, gen_length=64, block_length=64), layers=channels)
    dense_parts, pruned_parts = (model.step_times(model.encode([p]), hw) for p in (_plan(), pruned))
    assert pruned_parts["elementwise"][0, 0] == dense_parts["elementwise"][0, 0]
    assert pruned_parts["mlp_act"][0, 0] == pytest.approx(dense_parts["mlp_act"][0, 0] / 2)
    assert dense_parts["mlp_act"][0, 0] == pytest.approx(64 * 3 * 1024 * 2 / 1e11)  # 3 bf16 passes over (M, I)


def test_per_timestep_bits_are_costed_per_group() -> None:
    assert steps_per_group(10, (0.25, 0.5)) == [3, 2, 5]
    model = AnalyticCostModel(SHAPE, LINEARS, use_kernels=True)
    hw = _hardware(("int8_dynamic",))
    w8a8 = model.cost(_plan(layer=LayerPlan((8,), (8,), group_size=0)), hw).latency_ms
    dense = model.cost(_plan(), hw).latency_ms
    half = model.cost(_plan(layer=LayerPlan((8, 16), (8, 16), group_size=0), boundaries=(0.5,)), hw).latency_ms
    assert w8a8 < half < dense
    assert half == pytest.approx((w8a8 + dense) / 2)


def test_nested_and_copies_memory_differ_as_documented() -> None:
    model = AnalyticCostModel(SHAPE, LINEARS)
    hw = _hardware()
    layer = LayerPlan((8, 4, 2), (16, 16, 16), group_size=64)
    nested = model.cost(_plan(layer=layer, boundaries=(0.3, 0.6)), hw).breakdown["weights_bytes"]
    copies = model.cost(_plan(layer=layer, boundaries=(0.3, 0.6), storage="copies"), hw).breakdown["weights_bytes"]
    params = sum(i.in_features * i.out_features for i in LINEARS)
    scales = params / 64 * 4
    embeddings = 2 * 1000 * 256 * 2
    assert nested == pytest.approx(params * 8 / 8 + scales + embeddings)  # one master at the top precision
    assert copies == pytest.approx(params * (8 + 4 + 2) / 8 + 3 * scales + embeddings)  # one copy per bit-width


def test_costing_plans_together_changes_no_plan() -> None:
    model = AnalyticCostModel(SHAPE, LINEARS)
    hw = _hardware(("int4_weight_only",))
    one_group = _plan(layer=LayerPlan((4,), (16,), group_size=64))
    two_groups = _plan(layer=LayerPlan((8, 4), (16, 16), group_size=64), boundaries=(0.5,))
    alone = model.cost(one_group, hw)
    together = model.cost_many([one_group, two_groups], hw)[0]
    assert together.latency_ms == pytest.approx(alone.latency_ms)
    assert together.peak_mem_bytes == alone.peak_mem_bytes  # padding adds no 16-bit copy


def test_int8_kernels_need_per_channel_weights() -> None:
    model = AnalyticCostModel(SHAPE, LINEARS, use_kernels=True)
    hw = _hardware(("int8_weight_only", "int8_dynamic"))
    per_group = model.formats(model.encode([_plan(layer=LayerPlan((8,), (8,), group_size=64))]), hw)
    per_channel = model.formats(model.encode([_plan(layer=LayerPlan((8,), (8,), group_size=0))]), hw)
    assert (per_group == 4).all() and (per_channel == 1).all()  # simulated (dequantized) vs int8_dynamic


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_kernel_decision_is_apply_plans_default(kind: str) -> None:
    listed = ("int4_weight_only", "int8_weight_only", "int8_dynamic", "int8_fbgemm")
    hw = replace(_hardware(listed), kind=kind)
    device_type = analytic.target_device_type(hw)
    assert analytic.kernels_that_run(hw) == kernels_for(device_type, None) & set(listed)
    assert analytic.kernels_that_run(hw) == ({"int8_fbgemm"} if kind == "cpu" else set())  # none beat bf16 on CUDA
    assert analytic.kernels_that_run(hw, use_kernels=True) == set(listed)
    assert analytic.kernels_that_run(hw, use_kernels=False) == set()
    model = AnalyticCostModel(SHAPE, LINEARS)
    formats = model.formats(model.encode([_plan(layer=LayerPlan((4,), (16,), group_size=64))]), hw)
    assert (formats == analytic.SIMULATED).all()
    forced = AnalyticCostModel(SHAPE, LINEARS, use_kernels=True)
    assert (forced.formats(forced.encode([_plan(layer=LayerPlan((4,), (16,), group_size=64))]), hw)
            == analytic.INT4_WEIGHT_ONLY).all()


@pytest.mark.parametrize("target", ["h200", "h100-sxm", "a100-80gb", "l4", "rtx-4090"])
def test_gpu_targets_price_no_low_bit_speed_up_that_the_default_does_not_run(target: str) -> None:
    """On CUDA apply_plan_ dequantizes every quantized layer by default (its kernels were slower than bf16
    on an H200), so a GPU target prices those layers as dense bf16 matmuls, plus fake-quant for W8A8."""
    hw = load_hardware(target)
    default, forced = AnalyticCostModel(SHAPE, LINEARS), AnalyticCostModel(SHAPE, LINEARS, use_kernels=True)
    dense = default.cost(_plan(), hw)
    for layer in (LayerPlan((4,), (16,), group_size=64), LayerPlan((8,), (16,), group_size=0),
                  LayerPlan((8,), (8,), group_size=0)):
        plan = _plan(layer=layer)
        assert (default.formats(default.encode([plan]), hw) == analytic.SIMULATED).all()
        cost = default.cost(plan, hw)
        assert cost.breakdown["linear_ms"] == pytest.approx(dense.breakdown["linear_ms"])
        assert cost.latency_ms >= dense.latency_ms * (1 - 1e-12)
        assert (forced.formats(forced.encode([plan]), hw) != analytic.SIMULATED).all()  # the kernels, on request


def test_w8a8_runs_fbgemm_on_cpus_at_any_group_size() -> None:
    cpu = replace(_hardware(("int8_dynamic", "int8_fbgemm")), kind="cpu")
    model = AnalyticCostModel(SHAPE, LINEARS)
    for group_size in (0, 64):
        w8a8 = model.formats(model.encode([_plan(layer=LayerPlan((8,), (8,), group_size=group_size))]), cpu)
        assert (w8a8 == analytic.INT8_FBGEMM).all()
    weight_only = model.formats(model.encode([_plan(layer=LayerPlan((8,), (16,), group_size=0))]), cpu)
    assert (weight_only == analytic.SIMULATED).all()  # fbgemm would quantize activations the Plan keeps
    without = replace(cpu, kernels=("int8_dynamic",))
    assert (model.formats(model.encode([_plan(layer=LayerPlan((8,), (8,), group_size=0))]), without)
            == analytic.SIMULATED).all()
    fast = replace(cpu, peak_flops={**cpu.peak_flops, "int8": 100 * cpu.peak("fp32")})
    dense_ms = model.cost(_plan(), fast).latency_ms
    assert model.cost(_plan(layer=LayerPlan((8,), (8,), group_size=64)), fast).latency_ms < dense_ms


def test_dense_dtype_follows_the_target_unless_given() -> None:
    gpu, cpu = _hardware(), replace(_hardware(), kind="cpu")
    model = AnalyticCostModel(SHAPE, LINEARS[:1])
    assert model.dtype_for(gpu) == "bf16" and model.dtype_for(cpu) == "fp32"
    arrays = model.encode([_plan()])
    fp32 = model.ideal_part_times(arrays, replace(cpu, peak_flops={"fp32": 1e18, "bf16": 1e18}))
    bf16 = model.ideal_part_times(arrays, replace(gpu, peak_flops={"fp32": 1e18, "bf16": 1e18}))
    assert fp32["linear:fp32"][0, 0] == pytest.approx(2 * bf16["linear:bf16"][0, 0])  # memory-bound: 4 vs 2 bytes
    assert AnalyticCostModel(SHAPE, LINEARS, dense_dtype="bf16").dtype_for(cpu) == "bf16"
