"""Measured profiles: YAML round trip, the cache behind resolve_hardware, clear errors, calibrated costs.

No absolute-time asserts: timings on a shared CPU drift. A tiny random model keeps measuring fast.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from dlmsearch.cli import main
from dlmsearch.compress.apply import apply_plan_
from dlmsearch.cost_models import (
    AnalyticCostModel,
    HardwareSpecError,
    MeasuredCostModel,
    analytic,
    load_hardware,
    measure_profile,
    merge_profiles,
    resolve_hardware,
    spec_from_dict,
    tensor_bytes,
    time_generate,
)
from dlmsearch.cost_models import profile as profile_module
from dlmsearch.cost_models.hardware_spec import EfficiencyCurve, HardwareSpec
from dlmsearch.models.loading import build_random_model
from dlmsearch.plan import LayerPlan, ModelRef, Plan, SamplerSettings, uniform_plan

TINY = {"num_layers": 2, "hidden_size": 64, "num_heads": 2, "intermediate_size": 128, "vocab_size": 64}


@pytest.fixture(scope="module")
def tiny_profile() -> HardwareSpec:
    adapter = build_random_model("llama", **TINY)
    return measure_profile(adapter.shape, adapter.linears(), token_counts=(1, 8), reps=1, min_seconds=0.0,
                           max_rounds=1, progress=False)


def test_profile_is_a_spec_that_round_trips_through_yaml(tiny_profile: HardwareSpec, tmp_path: Path) -> None:
    assert tiny_profile.measured and tiny_profile.kind == "cpu"
    parts = {"fp32", "bf16", "attention", "elementwise", "mlp_act", "lm_head", "sampling"}
    assert parts <= set(tiny_profile.format_efficiency)
    assert tiny_profile.profile["format"] == "dlmsearch.profile" and tiny_profile.profile["samples"]
    for curve in tiny_profile.format_efficiency.values():
        assert [m for m, _ in curve.points] == [1.0, 8.0] and all(e > 0 for _, e in curve.points)
    loaded = load_hardware(tiny_profile.save(tmp_path / "profile.yaml"))
    assert loaded == tiny_profile


def _scaled(spec: HardwareSpec, factor: float) -> HardwareSpec:
    """The same profile as if every sample had taken ``factor`` times as long."""
    info = dict(spec.profile)
    info["samples"] = [[*row[:4], row[4] * factor, *row[5:]] for row in info["samples"]]
    return replace(spec, profile=info)


def test_merged_profile_takes_each_samples_median_over_the_passes(tiny_profile: HardwareSpec) -> None:
    adapter = build_random_model("llama", **TINY)
    shape, linears = adapter.shape, adapter.linears()
    same = merge_profiles(shape, linears, [tiny_profile, tiny_profile])
    def etas(spec: HardwareSpec, part: str) -> list[float]:
        return [e for _, e in spec.format_efficiency[part].points]

    for part in tiny_profile.format_efficiency:  # provenance keeps overheads to the nanosecond: not bit-exact
        assert etas(same, part) == pytest.approx(etas(tiny_profile, part), rel=1e-3)
    assert same.profile["passes"] == 2
    slow, fast = _scaled(tiny_profile, 3.0), _scaled(tiny_profile, 0.5)
    middle = merge_profiles(shape, linears, [slow, tiny_profile, fast])  # the median pass is the original
    assert etas(middle, "fp32") == pytest.approx(etas(tiny_profile, "fp32"), rel=1e-3)
    slower = merge_profiles(shape, linears, [slow, slow, tiny_profile])
    assert all(e < e0 for e, e0 in zip(etas(slower, "fp32"), etas(tiny_profile, "fp32"), strict=True))
    with pytest.raises(ValueError, match="passes"):
        merge_profiles(shape, linears, [])
    with pytest.raises(ValueError, match=r"passes\[0\].*not a measured profile"):
        merge_profiles(shape, linears, [load_hardware("x86-avx512-laptop")])


def test_old_specs_without_profile_fields_stay_valid() -> None:
    spec = load_hardware("x86-avx512-laptop")
    assert not spec.measured and spec.format_efficiency == {} and spec.profile == {}


def _profile_dict(spec: HardwareSpec) -> dict[str, Any]:
    return yaml.safe_load(yaml.safe_dump(spec.to_dict()))


@pytest.mark.parametrize(("change", "expected"), [
    (lambda d: d["format_efficiency"].update(int3_magic=[[1, 0.5]]), "format_efficiency.int3_magic: unknown part"),
    (lambda d: d["format_efficiency"].update(fp32=[[8, 0.5], [1, 0.4]]), "format_efficiency.fp32"),
    (lambda d: d["format_efficiency"].update(attention=[[1, -2]]), "format_efficiency.attention"),
    (lambda d: d.update(format_efficiency=[1, 2]), "format_efficiency: [1, 2]"),
    (lambda d: d.update(profile="measured yesterday"), "profile: 'measured yesterday'"),
])
def test_malformed_profile_names_the_field(tiny_profile: HardwareSpec, change: Any, expected: str) -> None:
    data = _profile_dict(tiny_profile)
    change(data)
    with pytest.raises(HardwareSpecError) as info:
        spec_from_dict(data, "profile.yaml")
    assert expected in str(info.value) and "profile.yaml" in str(info.value)


def test_resolve_hardware_loads_names_paths_and_the_cached_local_profile(
        tiny_profile: HardwareSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_hardware("a100-80gb") == load_hardware("a100-80gb")
    path = tiny_profile.save(tmp_path / "mine.yaml")
    assert resolve_hardware(str(path)) == tiny_profile
    monkeypatch.setenv("DLMSEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(profile_module, "QUICK_TOKEN_COUNTS", (1, 4))
    calls = []
    real = profile_module.measure_profile

    def counting(*args: Any, **kwargs: Any) -> HardwareSpec:
        calls.append(kwargs)
        return real(*args, **{**kwargs, "reps": 1, "min_seconds": 0.0, "max_rounds": 1})

    monkeypatch.setattr(profile_module, "measure_profile", counting)
    adapter = build_random_model("llama", **TINY)
    first = resolve_hardware("local", adapter.shape, adapter.linears())
    second = resolve_hardware("local", adapter.shape, adapter.linears())
    assert len(calls) == 1 and first == second and first.measured  # the second came from the cache
    assert list((tmp_path / "cache" / "profiles").glob("*.yaml"))
    with pytest.raises(HardwareSpecError, match="neither a shipped spec"):
        resolve_hardware("no-such-device")


def _plan(layer: LayerPlan, names: list[str], steps: int = 4) -> Plan:
    return Plan(ModelRef("toy"), SamplerSettings(steps=steps, gen_length=8, block_length=8), (), "nested",
                dict.fromkeys(names, layer))


def test_calibrated_model_divides_the_ideal_time_by_the_profile_curves(tiny_profile: HardwareSpec) -> None:
    adapter = build_random_model("llama", **TINY)
    names = [i.name for i in adapter.linears()]
    model = AnalyticCostModel(adapter.shape, adapter.linears(), prompt_length=8, dense_dtype="fp32", use_kernels=True)
    dense, int4 = _plan(LayerPlan(group_size=0), names), _plan(LayerPlan((4,), (16,), group_size=32), names)
    arrays = model.encode([dense, int4])
    ideal = model.ideal_part_times(arrays, tiny_profile)
    parts = model.step_times(arrays, tiny_profile)
    fp32, int4_eta = tiny_profile.format_efficiency["fp32"](16), tiny_profile.format_efficiency["int4_weight_only"](16)
    launch, calls = tiny_profile.launch_overhead_s, len(names)
    assert launch > 0
    assert parts["linear"][0, 0] == pytest.approx(ideal["linear:fp32"][0, 0] / fp32 + calls * launch)
    assert parts["linear"][1, 0] == pytest.approx(ideal["linear:int4_weight_only"][1, 0] / int4_eta + calls * launch)
    for part, launches in model.part_launches().items():
        eta = tiny_profile.format_efficiency[part](16)
        assert parts[part][0, 0] == pytest.approx(ideal[part][0, 0] / eta + launches * launch)
    slower = replace(tiny_profile, format_efficiency={**tiny_profile.format_efficiency,
                                                      "fp32": EfficiencyCurve(((1.0, fp32 / 2),))})
    dense_compute = parts["linear"][0, 0] - calls * launch
    assert model.step_times(arrays, slower)["linear"][0, 0] == pytest.approx(2 * dense_compute + calls * launch)
    assert model.step_times(arrays, slower)["linear"][1, 0] == pytest.approx(parts["linear"][1, 0])


def test_generate_is_timed_and_runtime_memory_matches_held_tensors(tiny_profile: HardwareSpec) -> None:
    adapter = build_random_model("llama", **TINY)
    plan = uniform_plan(adapter, weight_bits=4, group_size=32, steps=2, gen_length=8)
    apply_plan_(adapter, plan, use_kernels=True)
    timing = time_generate(adapter, plan.sampler, prompt_length=8, repeats=2)
    assert timing.median_ms > 0 and len(timing.times_ms) == 2 and timing.tokens == 16
    held = tensor_bytes(adapter.model)
    model = AnalyticCostModel(adapter.shape, adapter.linears(), prompt_length=8, dense_dtype="fp32",
                              layout="runtime", use_kernels=True)
    predicted = model.cost(plan, tiny_profile).breakdown["weights_bytes"]
    assert predicted == pytest.approx(held, rel=0.02)  # norms are the only tensors the model leaves out


def test_measured_cost_model_reports_measured_provenance(tiny_profile: HardwareSpec) -> None:
    model = MeasuredCostModel(lambda: build_random_model("llama", **TINY), prompt_length=4, repeats=1)
    adapter = build_random_model("llama", **TINY)
    result = model.cost(uniform_plan(adapter, weight_bits=8, group_size=0, steps=2, gen_length=8), tiny_profile)
    assert result.provenance == "measured" and result.latency_ms > 0 and result.peak_mem_bytes > 0
    with pytest.raises(ValueError, match="local device"):
        model.cost(uniform_plan(adapter, steps=2, gen_length=8), load_hardware("a100-80gb"))


def test_cli_profile_writes_a_loadable_spec(tiny_profile: HardwareSpec, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
                                            ) -> None:
    monkeypatch.setattr(profile_module, "local_profile", lambda *a, **k: tiny_profile)
    out = tmp_path / "p.yaml"
    assert main(["profile", "--out", str(out), "--quick"]) == 0
    assert load_hardware(out) == tiny_profile
    assert "fp32" in capsys.readouterr().out


def test_default_cpu_pricing_is_what_apply_plan_runs_by_default(tiny_profile: HardwareSpec) -> None:
    """On a CPU, apply_plan_'s default simulates every quantized layer; the cost model prices the same."""
    adapter = build_random_model("llama", **TINY)
    plan = uniform_plan(adapter, weight_bits=4, group_size=32, steps=2, gen_length=8)
    model = AnalyticCostModel(adapter.shape, adapter.linears(), prompt_length=8)
    kernels = replace(tiny_profile, kernels=("int4_weight_only", "int8_weight_only", "int8_dynamic"))
    for use_kernels in (None, True):
        fresh = build_random_model("llama", **TINY)
        apply_plan_(fresh, plan, use_kernels=use_kernels)
        ran = {m.summary["kernels"][0] for m in fresh.model.modules() if hasattr(m, "summary")}
        priced = AnalyticCostModel(adapter.shape, adapter.linears(), prompt_length=8, use_kernels=use_kernels)
        formats = {analytic.KERNEL_FORMATS[int(code)] for code in priced.formats(priced.encode([plan]), kernels).flat}
        assert ran == ({"simulated (dequantize+matmul)"} if use_kernels is None else {"int4_weight_only"})
        assert formats == ({"simulated"} if use_kernels is None else {"int4_weight_only"})
    calibrated = model.cost(plan, kernels).breakdown
    assert calibrated["linear_ms"] > 0 and model.dtype_for(kernels) == "fp32"


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_simulated_layers_are_priced_as_the_devices_dense_matmul_plus_the_layers_overhead(
        tiny_profile: HardwareSpec, monkeypatch: pytest.MonkeyPatch, device: str) -> None:
    """A GPU runs a bf16 model, whose dequantized layers multiply in bf16 (float32 on a CPU): calibrated
    from this CPU's samples as if they were a GPU's, ``simulated`` costs the bf16 matmul plus the overhead."""
    import torch

    from dlmsearch.compress import kernels as kernels_module

    monkeypatch.setattr(profile_module, "device_fingerprint", lambda device="cpu": f"{device}/test")
    monkeypatch.setattr(profile_module, "_memory_capacity", lambda device: 2**34)
    monkeypatch.setattr(kernels_module, "kernel_available", lambda name, device: False)
    info = tiny_profile.profile
    samples = [profile_module.Sample(part, tuple(key), count, tokens, ms / 1e3, spread, rounds)
               for part, key, count, tokens, ms, spread, rounds in info["samples"]]
    adapter = build_random_model("llama", **TINY)
    overhead = 3e-6
    spec = profile_module.calibrate(adapter.shape, adapter.linears(), samples, dict(tiny_profile.peak_flops),
                                    tiny_profile.memory_bandwidth_bytes_per_s, torch.device(device),
                                    ["fp32", "bf16", "simulated"], int(info["probe_vocab"]), 0.0, overhead)
    assert spec.kind == ("gpu" if device == "cuda" else "cpu")
    model = AnalyticCostModel(adapter.shape, adapter.linears())
    names = [i.name for i in adapter.linears()]
    arrays = model.encode([_plan(LayerPlan(group_size=0), names), _plan(LayerPlan((8,), (16,), group_size=32), names)])
    assert {analytic.KERNEL_FORMATS.get(int(c), "dense") for c in model.formats(arrays, spec)[1].flat} == {"simulated"}
    linear = model.step_times(arrays, spec)["linear"][:, 0]  # M = 8, a measured token count
    assert model.dtype_for(spec) == ("bf16" if device == "cuda" else "fp32")
    assert linear[1] - linear[0] == pytest.approx(len(names) * overhead, rel=1e-6)


def test_merging_refuses_a_pass_of_an_older_profile_version(tiny_profile: HardwareSpec) -> None:
    adapter = build_random_model("llama", **TINY)
    old = replace(tiny_profile, profile={**tiny_profile.profile, "version": 4})
    with pytest.raises(ValueError, match="passes\\[1\\]: measured by profile version 4"):
        merge_profiles(adapter.shape, adapter.linears(), [tiny_profile, old])


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="reads Linux /proc")
def test_busy_cores_count_other_processes_and_not_this_one() -> None:
    """The profile's load check sees a process spinning beside it, and not its own work."""
    import subprocess
    import sys
    import threading

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        assert (profile_module.others_busy_cores(0.5) or 0.0) >= 0.6
    finally:
        spinner.kill()
        spinner.wait()
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            pass

    before = profile_module.others_busy_cores(0.5)
    own = threading.Thread(target=spin)
    own.start()
    try:
        spinning = profile_module.others_busy_cores(0.5)
    finally:
        stop.set()
        own.join()
    assert before is not None and spinning is not None
    assert spinning - before < 0.6  # a core of this process's own work is not counted
