"""Hardware targets: named YAML specs (datasheet figures) and measured profiles of the local machine.

A spec says what a device can do at best (dense peak FLOP/s per compute dtype, memory bandwidth
and capacity, which low-bit kernels exist, per-call launch overhead) and how far from that best
real matmuls get: efficiency curves ``eta(M)`` for compute and memory, as ``[M, eta]`` points over
the token count M, interpolated linearly in log M and held flat outside the points.

A measured profile (:mod:`dlmsearch.cost_models.profile`) adds two optional fields:
``format_efficiency``, one ``eta_f(M)`` curve per matmul format or model part (see
:data:`EFFICIENCY_PARTS`): the fraction of the ideal roofline time (peak FLOP/s of the part's
compute dtype, full memory bandwidth, no launch overhead) that the part reaches on this device, so
``time = ideal / eta_f(M) + launch_overhead_s`` per call; a value above 1 means faster than the DRAM
roofline (a working set that stays in cache); and ``profile``, free-form provenance (device, torch
version, raw medians and spreads).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

HARDWARE_KINDS: tuple[str, ...] = ("gpu", "cpu")
COMPUTE_DTYPES: tuple[str, ...] = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8", "int4")
KERNELS: tuple[str, ...] = ("int8_weight_only", "int4_weight_only", "int8_dynamic", "int8_fbgemm", "fp8",
                             "sparse_2_4")
#: Matmul formats with their own measured efficiency curve (dense dtypes and the real low-bit kernels).
MATMUL_FORMATS: tuple[str, ...] = ("fp32", "bf16", "fp16", "int8_dynamic", "int8_weight_only", "int4_weight_only",
                                   "int8_fbgemm", "simulated")
#: Keys of ``format_efficiency``: matmul formats and the non-linear parts of a denoising step.
EFFICIENCY_PARTS: tuple[str, ...] = (*MATMUL_FORMATS, "act_quant", "attention", "elementwise", "mlp_act", "lm_head",
                                     "sampling")
_FIELDS: tuple[str, ...] = ("name", "kind", "peak_flops", "memory_bandwidth_bytes_per_s", "memory_bytes", "kernels",
                            "launch_overhead_s", "efficiency", "format_efficiency", "profile", "source")


class HardwareSpecError(ValueError):
    """A hardware file or name that cannot be used, with every problem listed."""


@dataclass(frozen=True)
class EfficiencyCurve:
    """eta(M): fraction of the peak reached at M tokens, from ``[M, eta]`` points."""

    points: tuple[tuple[float, float], ...]

    def __call__(self, tokens: float) -> float:
        """Efficiency at ``tokens`` (log-linear interpolation, flat outside the points)."""
        pts = self.points
        if tokens <= pts[0][0]:
            return pts[0][1]
        for (m0, e0), (m1, e1) in zip(pts, pts[1:], strict=False):
            if tokens <= m1:
                w = (math.log(tokens) - math.log(m0)) / (math.log(m1) - math.log(m0))
                return e0 + w * (e1 - e0)
        return pts[-1][1]

    def many(self, tokens: Any) -> Any:
        """Vectorised :meth:`__call__` over a numpy array of token counts."""
        import numpy as np

        ms = np.log([p[0] for p in self.points])
        return np.interp(np.log(np.asarray(tokens, dtype=np.float64)), ms, [p[1] for p in self.points])


@dataclass(frozen=True)
class HardwareSpec:
    """One hardware target (see the module docstring)."""

    name: str
    kind: str
    peak_flops: Mapping[str, float]  # dense FLOP/s (OP/s for integer types) per compute dtype
    memory_bandwidth_bytes_per_s: float
    memory_bytes: int
    kernels: tuple[str, ...] = ()
    launch_overhead_s: float = 0.0
    compute_efficiency: EfficiencyCurve = field(default_factory=lambda: EfficiencyCurve(((1.0, 1.0),)))
    memory_efficiency: EfficiencyCurve = field(default_factory=lambda: EfficiencyCurve(((1.0, 1.0),)))
    source: str = ""
    format_efficiency: Mapping[str, EfficiencyCurve] = field(default_factory=dict)  # measured profiles only
    profile: Mapping[str, Any] = field(default_factory=dict)  # provenance of a measured profile

    @property
    def measured(self) -> bool:
        """True for a measured profile (it carries per-format efficiency curves)."""
        return bool(self.format_efficiency)

    def part_efficiency(self, part: str) -> EfficiencyCurve | None:
        """The measured ``eta_f(M)`` of a matmul format or step part, or None (use the generic curves)."""
        return self.format_efficiency.get(part)

    def has_kernel(self, kernel: str) -> bool:
        """True when the device has a real kernel called ``kernel`` (see :data:`KERNELS`)."""
        return kernel in self.kernels

    def peak(self, dtype: str) -> float:
        """Peak FLOP/s for ``dtype``; a dtype the device lacks runs at the next wider one it has."""
        order = ("int4", "int8", "fp8", "fp16", "bf16", "tf32", "fp32")
        for candidate in order[order.index(dtype):]:
            if candidate in self.peak_flops:
                return float(self.peak_flops[candidate])
        return float(self.peak_flops["fp32"])

    def to_dict(self) -> dict[str, Any]:
        """The YAML form."""
        return {"name": self.name, "kind": self.kind, "peak_flops": {k: float(v) for k, v in self.peak_flops.items()},
                "memory_bandwidth_bytes_per_s": self.memory_bandwidth_bytes_per_s, "memory_bytes": self.memory_bytes,
                "kernels": list(self.kernels), "launch_overhead_s": self.launch_overhead_s,
                "efficiency": {"compute": [list(p) for p in self.compute_efficiency.points],
                               "memory": [list(p) for p in self.memory_efficiency.points]},
                **({"format_efficiency": {k: [list(p) for p in c.points] for k, c in self.format_efficiency.items()}}
                   if self.format_efficiency else {}),
                **({"profile": _plain(self.profile)} if self.profile else {}),
                **({"source": self.source} if self.source else {})}

    def save(self, path: str | Path) -> Path:
        """Write the spec as YAML."""
        out = Path(path)
        out.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return out


def _plain(value: Any) -> Any:
    """Mappings, sequences and numpy scalars as plain YAML-safe Python values."""
    if isinstance(value, str):
        return str(value)  # str subclasses (torch's TorchVersion) are not YAML-safe
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _curve(data: Any, path: str, problems: list[str], capped: bool = True) -> EfficiencyCurve | None:
    ok = isinstance(data, list) and data and all(
        isinstance(p, list) and len(p) == 2 and _positive(p[0]) and _positive(p[1]) and (p[1] <= 1 or not capped)
        for p in data)
    if not ok or [p[0] for p in data] != sorted({p[0] for p in data}):
        allowed = "efficiency in (0, 1]" if capped else "efficiency > 0"
        problems.append(f"{path}: {data!r} is not allowed; allowed: a list of [tokens, efficiency] pairs with "
                        f"increasing tokens > 0 and {allowed}")
        return None
    return EfficiencyCurve(tuple((float(m), float(e)) for m, e in data))


def yaml_error_summary(exc: Exception) -> str:
    """One line for a YAML parse error: what was expected and where (line and column, 1-based)."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def yaml_number(value: Any) -> Any:
    """YAML 1.1 reads ``19.5e12`` (no sign in the exponent) as a string: accept such numbers."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _numbers(data: dict[str, Any]) -> dict[str, Any]:
    out = dict(data)
    if isinstance(out.get("peak_flops"), dict):
        out["peak_flops"] = {k: yaml_number(v) for k, v in out["peak_flops"].items()}
    for key in ("memory_bandwidth_bytes_per_s", "memory_bytes", "launch_overhead_s"):
        if key in out:
            out[key] = yaml_number(out[key])
    return out


def spec_from_dict(data: Any, source: str = "hardware spec") -> HardwareSpec:
    """Validate parsed YAML and build the spec; every problem is reported at once with its field."""
    if not isinstance(data, dict):
        raise HardwareSpecError(f"{source}: the file must hold a YAML mapping of fields, got {type(data).__name__}")
    data = _numbers(data)
    problems = [f"{key}: unknown field; allowed: {', '.join(_FIELDS)}" for key in data if key not in _FIELDS]
    for key in ("name", "kind", "peak_flops", "memory_bandwidth_bytes_per_s", "memory_bytes"):
        if key not in data:
            problems.append(f"{key}: missing (required)")
    if "name" in data and (not isinstance(data["name"], str) or not data["name"]):
        problems.append(f"name: {data['name']!r} is not allowed; allowed: a non-empty string")
    if "kind" in data and data["kind"] not in HARDWARE_KINDS:
        problems.append(f"kind: {data['kind']!r} is not allowed; allowed: {', '.join(HARDWARE_KINDS)}")
    peaks = data.get("peak_flops", {})
    if not isinstance(peaks, dict) or "fp32" not in peaks:
        problems.append(f"peak_flops: {peaks!r} is not allowed; allowed: a mapping of dtype to FLOP/s with fp32")
        peaks = {}
    for dtype, value in peaks.items():
        if dtype not in COMPUTE_DTYPES:
            problems.append(f"peak_flops.{dtype}: unknown dtype; allowed: {', '.join(COMPUTE_DTYPES)}")
        elif not _positive(value):
            problems.append(f"peak_flops.{dtype}: {value!r} is not allowed; allowed: a number > 0 (FLOP/s)")
    for key in ("memory_bandwidth_bytes_per_s", "memory_bytes"):
        if key in data and not _positive(data[key]):
            problems.append(f"{key}: {data[key]!r} is not allowed; allowed: a number > 0")
    overhead = data.get("launch_overhead_s", 0.0)
    if not isinstance(overhead, (int, float)) or isinstance(overhead, bool) or not 0 <= overhead < 1:
        problems.append(f"launch_overhead_s: {overhead!r} is not allowed; allowed: seconds in [0, 1)")
    kernels = data.get("kernels", [])
    if not isinstance(kernels, list) or any(k not in KERNELS for k in kernels):
        problems.append(f"kernels: {kernels!r} is not allowed; allowed: a list from {', '.join(KERNELS)}")
        kernels = []
    efficiency = data.get("efficiency", {})
    if not isinstance(efficiency, dict) or set(efficiency) - {"compute", "memory"}:
        problems.append(f"efficiency: {efficiency!r} is not allowed; allowed: a mapping with 'compute' and 'memory'")
        efficiency = {}
    curves = {part: _curve(efficiency[part], f"efficiency.{part}", problems) if part in efficiency
              else EfficiencyCurve(((1.0, 1.0),)) for part in ("compute", "memory")}
    measured = data.get("format_efficiency", {})
    if not isinstance(measured, dict):
        problems.append(f"format_efficiency: {measured!r} is not allowed; allowed: a mapping of part to "
                        f"[tokens, efficiency] pairs, parts from {', '.join(EFFICIENCY_PARTS)}")
        measured = {}
    format_curves: dict[str, EfficiencyCurve] = {}
    for part, points in measured.items():
        if part not in EFFICIENCY_PARTS:
            problems.append(f"format_efficiency.{part}: unknown part; allowed: {', '.join(EFFICIENCY_PARTS)}")
            continue
        curve = _curve(points, f"format_efficiency.{part}", problems, capped=False)
        if curve is not None:
            format_curves[part] = curve
    provenance = data.get("profile", {})
    if not isinstance(provenance, dict):
        problems.append(f"profile: {provenance!r} is not allowed; allowed: a mapping (measured-profile provenance)")
        provenance = {}
    if problems:
        listing = "\n".join(f"  - {p}" for p in problems)
        raise HardwareSpecError(f"{source}: {len(problems)} invalid field(s):\n{listing}")
    compute, memory = curves["compute"], curves["memory"]
    assert compute is not None and memory is not None
    return HardwareSpec(name=data["name"], kind=data["kind"], peak_flops={k: float(v) for k, v in peaks.items()},
                        memory_bandwidth_bytes_per_s=float(data["memory_bandwidth_bytes_per_s"]),
                        memory_bytes=int(data["memory_bytes"]), kernels=tuple(kernels),
                        launch_overhead_s=float(overhead), compute_efficiency=compute, memory_efficiency=memory,
                        source=str(data.get("source", "")), format_efficiency=format_curves, profile=provenance)


def _registry() -> dict[str, Path]:
    folder = resources.files("dlmsearch.cost_models").joinpath("hardware")
    return {Path(str(f)).stem: Path(str(f)) for f in folder.iterdir() if str(f).endswith(".yaml")}


def list_hardware() -> list[str]:
    """Names of the shipped hardware specs."""
    return sorted(_registry())


def load_hardware(name_or_path: str | Path) -> HardwareSpec:
    """A shipped spec by name (``h100-sxm``) or a user's YAML file / measured profile by path."""
    registry = _registry()
    path = registry.get(str(name_or_path)) or Path(name_or_path)
    if not path.is_file():
        raise HardwareSpecError(f"hardware={str(name_or_path)!r} is neither a shipped spec "
                                f"({', '.join(sorted(registry))}) nor a YAML file")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise HardwareSpecError(f"{path}: not valid YAML ({yaml_error_summary(exc)})") from None
    return spec_from_dict(data, str(path))


def describe(spec: HardwareSpec, token_counts: Sequence[int] = (1, 128, 4096)) -> str:
    """Human-readable summary for ``dlmsearch hardware show``."""
    peaks = ", ".join(f"{k} {v / 1e12:g} T" for k, v in spec.peak_flops.items())
    etas = ", ".join(f"M={m}: {spec.compute_efficiency(m):.2f}/{spec.memory_efficiency(m):.2f}" for m in token_counts)
    return (f"{spec.name} ({spec.kind})\n  dense peak FLOP/s: {peaks}\n"
            f"  memory: {spec.memory_bytes / 2**30:.1f} GiB at {spec.memory_bandwidth_bytes_per_s / 1e9:g} GB/s\n"
            f"  kernels: {', '.join(spec.kernels) or 'none'}\n  launch overhead: {spec.launch_overhead_s * 1e6:g} us\n"
            f"  efficiency compute/memory: {etas}"
            + "".join(f"\n  measured {part}: " + ", ".join(f"M={m}: {curve(m):.3g}" for m in token_counts)
                      for part, curve in spec.format_efficiency.items()))
