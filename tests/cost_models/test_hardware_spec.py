"""Hardware registry: shipped specs load, bad files are explained field by field, specs round-trip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from dlmsearch.cli import main
from dlmsearch.cost_models import HardwareSpecError, list_hardware, load_hardware, spec_from_dict

REQUIRED = {"h100-sxm", "h200", "a100-80gb", "l4", "rtx-4090", "jetson-agx-orin-64gb", "apple-m2-max",
            "x86-avx512-laptop"}


def test_every_required_target_ships_with_dense_figures() -> None:
    assert set(list_hardware()) >= REQUIRED
    h100, a100, l4 = load_hardware("h100-sxm"), load_hardware("a100-80gb"), load_hardware("l4")
    assert h100.peak("bf16") == pytest.approx(989.4e12)  # dense, not the 1979 sparse figure
    assert a100.peak("int4") == pytest.approx(1248e12) and a100.memory_bytes == 80 * 2**30
    assert l4.peak("fp8") == pytest.approx(242.5e12)
    assert l4.peak("int4") == l4.peak("int8")  # no int4 units: runs at the next wider type
    assert load_hardware("x86-avx512-laptop").kind == "cpu"


def test_efficiency_curve_interpolates_in_log_tokens() -> None:
    curve = load_hardware("a100-80gb").compute_efficiency
    assert curve(0.5) == curve(1) == 0.02
    assert curve(16) == pytest.approx(0.25)
    assert 0.25 < curve(45) < 0.55 and curve(10**6) == 0.78


def _base() -> dict[str, Any]:
    return yaml.safe_load((Path(__file__).parents[2] / "dlmsearch/cost_models/hardware/l4.yaml").read_text())


BAD = [
    ("unknown field", lambda d: d.update(colour="green"), "colour: unknown field"),
    ("missing bandwidth", lambda d: d.pop("memory_bandwidth_bytes_per_s"), "memory_bandwidth_bytes_per_s: missing"),
    ("bad kind", lambda d: d.update(kind="tpu"), "kind: 'tpu'"),
    ("negative peak", lambda d: d["peak_flops"].update(fp16=-1), "peak_flops.fp16: -1"),
    ("unknown dtype", lambda d: d["peak_flops"].update(fp4=1e15), "peak_flops.fp4: unknown dtype"),
    ("peak as words", lambda d: d["peak_flops"].update(bf16="fast"), "peak_flops.bf16: 'fast'"),
    ("unknown kernel", lambda d: d.update(kernels=["int3_magic"]), "kernels: ['int3_magic']"),
    ("efficiency above 1", lambda d: d["efficiency"].update(compute=[[1, 1.5]]), "efficiency.compute"),
    ("efficiency order", lambda d: d["efficiency"].update(memory=[[64, 0.5], [8, 0.6]]), "efficiency.memory"),
    ("overhead", lambda d: d.update(launch_overhead_s=3), "launch_overhead_s: 3"),
]


@pytest.mark.parametrize(("label", "change", "expected"), BAD, ids=[b[0] for b in BAD])
def test_malformed_spec_names_the_field(label: str, change: Any, expected: str) -> None:
    data = _base()
    change(data)
    with pytest.raises(HardwareSpecError, match="my.yaml") as info:
        spec_from_dict(data, "my.yaml")
    assert expected in str(info.value)


@pytest.mark.parametrize("content", [b"", b"name: [unclosed", b"\x89PNG\r\n\x1a\n\x00\xff"])
def test_unreadable_files_are_explained(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "gpu.yaml"
    path.write_bytes(content)
    with pytest.raises(HardwareSpecError, match="gpu.yaml"):
        load_hardware(path)


def test_unknown_name_lists_the_registry() -> None:
    with pytest.raises(HardwareSpecError, match="neither a shipped spec .*h100-sxm"):
        load_hardware("h100-pcie-2")


def test_spec_round_trips_through_yaml(tmp_path: Path) -> None:
    spec = load_hardware("rtx-4090")
    assert load_hardware(spec.save(tmp_path / "copy.yaml")) == spec


def test_cli_lists_and_shows(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hardware", "list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in REQUIRED)
    assert main(["hardware", "show", "h200"]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("h200 (gpu)") and "140.4 GiB at 4800 GB/s" in shown
    assert main(["hardware", "show", "nope"]) == 2
