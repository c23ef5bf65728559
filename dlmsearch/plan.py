"""Plan: the exported compression configuration, the one currency of dlmsearch.

A Plan says, for one model, how each linear layer is pruned and quantized (per timestep group)
and how the sampler runs. It is a tree of frozen dataclasses serialised as JSON::

    {"format": "dlmsearch.plan", "version": 1,
     "model": {"name": "shakespeare-char", "fingerprint": "llama/L6/..."},
     "sampler": {"steps": 64, "gen_length": 64, "block_length": 64,
                 "remasking": "low_confidence", "temperature": 0.0},
     "timestep_groups": [0.5],          # boundaries over denoising progress: 2 groups
     "weight_storage": "nested",
     "layers": {"model.layers.0.self_attn.q_proj":
                    {"sparsity": 0.5, "prune_method": "wanda", "structure": "unstructured",
                     "weight_bits": [8, 4], "act_bits": [16, 16], "group_size": 128}}}

Layers not listed stay dense at 16 bits. Loading validates every field and reports every problem
at once (path, value, allowed set); unknown or future versions are refused.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlmsearch.models.sampler_rules import check_sampler_settings

if TYPE_CHECKING:
    from dlmsearch.models.adapters import DLMAdapter

PLAN_FORMAT = "dlmsearch.plan"
PLAN_VERSION = 1
WEIGHT_BITS: tuple[int, ...] = (2, 3, 4, 8, 16)
ACT_BITS: tuple[int, ...] = (4, 8, 16)
PRUNE_METHODS: tuple[str, ...] = ("magnitude", "wanda", "sink_wanda")
QUANT_METHODS: tuple[str, ...] = ("rtn", "gptq")
STRUCTURES: tuple[str, ...] = ("unstructured", "2:4", "heads", "channels")
WEIGHT_STORAGES: tuple[str, ...] = ("nested", "copies")
GROUP_SIZES: tuple[int, ...] = (0, 32, 64, 128, 256)
#: Structured pruning removes whole heads (attention linears) or MLP channels (MLP linears).
STRUCTURE_ROLES: dict[str, frozenset[str]] = {
    "heads": frozenset({"q", "k", "v", "o"}),
    "channels": frozenset({"gate", "up", "down"}),
}


@dataclass(frozen=True)
class PlanIssue:
    """One invalid field: where it is, what it holds, and what is allowed."""

    path: str
    value: Any
    allowed: str

    def __str__(self) -> str:
        return f"{self.path}: {self.value!r} is not allowed; allowed: {self.allowed}"


class PlanValidationError(ValueError):
    """Raised with every problem of a Plan at once."""

    def __init__(self, issues: Sequence[PlanIssue], source: str = "plan") -> None:
        self.issues = list(issues)
        self.source = source
        lines = "\n".join(f"  - {issue}" for issue in self.issues)
        super().__init__(f"{source}: {len(self.issues)} invalid field(s):\n{lines}")


@dataclass(frozen=True)
class SamplerSettings:
    """How the compressed model generates (LLaDA's sampler arguments)."""

    steps: int = 64
    gen_length: int = 64
    block_length: int = 64
    remasking: str = "low_confidence"
    temperature: float = 0.0


@dataclass(frozen=True)
class LayerPlan:
    """Compression of one linear layer; ``weight_bits`` / ``act_bits`` hold one value per group."""

    weight_bits: tuple[int, ...] = (16,)
    act_bits: tuple[int, ...] = (16,)
    sparsity: float = 0.0
    prune_method: str = "wanda"
    structure: str = "unstructured"
    group_size: int = 64  # divides every hidden size that is a multiple of 64 (LLaDA, Dream, ours)
    quant_method: str = "rtn"  # "gptq" compensates rounding error with calibration data


@dataclass(frozen=True)
class ModelRef:
    """Which model a Plan was made for: a name or path, and its architecture fingerprint."""

    name: str
    fingerprint: str = ""


@dataclass(frozen=True)
class Plan:
    """A validated compression configuration (see the module docstring for the JSON layout)."""

    model: ModelRef
    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    timestep_groups: tuple[float, ...] = ()
    weight_storage: str = "nested"
    layers: Mapping[str, LayerPlan] = field(default_factory=dict)
    version: int = PLAN_VERSION

    def __post_init__(self) -> None:
        issues = _check_plan(self)
        if issues:
            raise PlanValidationError(issues)

    @property
    def num_timestep_groups(self) -> int:
        """Number of timestep groups (one more than the number of boundaries)."""
        return len(self.timestep_groups) + 1

    def timestep_group(self, progress: float) -> int:
        """Index of the group that denoising ``progress`` (0..1, steps taken / steps) falls in."""
        return sum(1 for boundary in self.timestep_groups if progress >= boundary)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary with the format header."""
        return {
            "format": PLAN_FORMAT,
            "version": self.version,
            "model": asdict(self.model),
            "sampler": asdict(self.sampler),
            "timestep_groups": list(self.timestep_groups),
            "weight_storage": self.weight_storage,
            "layers": {name: {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(lp).items()}
                       for name, lp in self.layers.items()},
        }

    def to_json(self) -> str:
        """Canonical JSON text (sorted layer order as stored, two-space indent)."""
        return json.dumps(self.to_dict(), indent=2)

    def save(self, path: str | Path) -> Path:
        """Write the Plan as JSON to ``path``."""
        out = Path(path)
        out.write_text(self.to_json() + "\n")
        return out

    @classmethod
    def from_dict(cls, data: Any, source: str = "plan") -> Plan:
        """Build a Plan from parsed JSON, reporting every invalid field at once."""
        issues: list[PlanIssue] = []
        plan = _parse_plan(data, issues)
        if issues or plan is None:
            raise PlanValidationError(issues, source)
        return plan


def load_plan(path: str | Path) -> Plan:
    """Read and validate a Plan JSON file (errors name the file and every bad field)."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanValidationError([PlanIssue("<file>", source, f"a readable UTF-8 JSON file ({exc})")],
                                  source) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanValidationError(
            [PlanIssue("<file>", f"line {exc.lineno} column {exc.colno}", f"valid JSON ({exc.msg})")],
            source) from None
    return Plan.from_dict(data, source)


def uniform_plan(adapter: DLMAdapter, *, weight_bits: int = 16, act_bits: int = 16,
                 sparsity: float = 0.0, prune_method: str = "wanda", structure: str = "unstructured",
                 group_size: int | None = None, timestep_groups: int = 1, steps: int = 64,
                 gen_length: int = 64, block_length: int | None = None,
                 weight_storage: str = "nested") -> Plan:
    """The same settings for every linear of ``adapter``'s model (a starting point to edit).

    ``group_size=None`` picks the largest of 128, 64, 32 that divides every layer's input size. Like any
    Plan it is checked against the model where it meets one (:func:`~dlmsearch.compress.apply_plan_`):
    ``structure="heads"`` on every linear, say, is refused there.
    """
    if group_size is None:
        widths = {info.in_features for info in adapter.linears()}
        group_size = next((g for g in (128, 64, 32) if all(w % g == 0 for w in widths)), 0)
    groups = tuple(round(i / timestep_groups, 6) for i in range(1, timestep_groups))
    layer = LayerPlan(weight_bits=(weight_bits,) * timestep_groups, act_bits=(act_bits,) * timestep_groups,
                      sparsity=sparsity, prune_method=prune_method, structure=structure,
                      group_size=group_size)
    sampler = SamplerSettings(steps=steps, gen_length=gen_length,
                              block_length=block_length or gen_length)
    return Plan(model=ModelRef(adapter.name, adapter.shape.fingerprint), sampler=sampler,
                timestep_groups=groups, weight_storage=weight_storage,
                layers={info.name: layer for info in adapter.linears()})


# ---------------------------------------------------------------- validation helpers


def _allowed(values: Iterable[Any]) -> str:
    return "{" + ", ".join(repr(v) if isinstance(v, str) else str(v) for v in values) + "}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_plan(plan: Plan) -> list[PlanIssue]:
    """Every invariant of a constructed Plan (also guards direct construction in code)."""
    issues: list[PlanIssue] = []
    if plan.version != PLAN_VERSION:
        issues.append(PlanIssue("version", plan.version, f"{PLAN_VERSION} (this dlmsearch reads version "
                                                        f"{PLAN_VERSION} Plans)"))
    s = plan.sampler
    for key, value, allowed in check_sampler_settings(s.gen_length, s.steps, s.block_length, s.remasking):
        issues.append(PlanIssue(f"sampler.{key}", value, allowed))
    if not _is_number(s.temperature) or not math.isfinite(s.temperature) or s.temperature < 0:
        issues.append(PlanIssue("sampler.temperature", s.temperature, "a finite number >= 0"))
    bounds = plan.timestep_groups
    numeric = all(_is_number(b) for b in bounds)
    if not numeric or any(not 0 < b < 1 for b in bounds) or list(bounds) != sorted(set(bounds)):
        issues.append(PlanIssue("timestep_groups", list(bounds),
                                "strictly increasing boundaries in (0, 1), e.g. [0.5]"))
    if plan.weight_storage not in WEIGHT_STORAGES:
        issues.append(PlanIssue("weight_storage", plan.weight_storage, _allowed(WEIGHT_STORAGES)))
    groups = len(bounds) + 1
    for name, layer in plan.layers.items():
        issues.extend(_check_layer(f"layers.{name}", layer, groups))
    return issues


def _check_layer(path: str, layer: LayerPlan, groups: int) -> list[PlanIssue]:
    issues = []
    for key, allowed in (("weight_bits", WEIGHT_BITS), ("act_bits", ACT_BITS)):
        values = getattr(layer, key)
        if len(values) != groups:
            issues.append(PlanIssue(f"{path}.{key}", list(values),
                                    f"a list of {groups} values, one per timestep group"))
        for i, bits in enumerate(values):
            if bits not in allowed or not _is_int(bits):
                issues.append(PlanIssue(f"{path}.{key}[{i}]", bits, _allowed(allowed)))
    if not _is_number(layer.sparsity) or not 0 <= layer.sparsity < 1:
        issues.append(PlanIssue(f"{path}.sparsity", layer.sparsity, "a fraction in [0, 1)"))
    if layer.prune_method not in PRUNE_METHODS:
        issues.append(PlanIssue(f"{path}.prune_method", layer.prune_method, _allowed(PRUNE_METHODS)))
    if layer.structure not in STRUCTURES:
        issues.append(PlanIssue(f"{path}.structure", layer.structure, _allowed(STRUCTURES)))
    elif layer.structure == "2:4" and layer.sparsity not in (0, 0.5):
        issues.append(PlanIssue(f"{path}.sparsity", layer.sparsity, "0 or 0.5 with structure '2:4'"))
    if layer.quant_method not in QUANT_METHODS:
        issues.append(PlanIssue(f"{path}.quant_method", layer.quant_method, _allowed(QUANT_METHODS)))
    if layer.group_size not in GROUP_SIZES or not _is_int(layer.group_size):
        issues.append(PlanIssue(f"{path}.group_size", layer.group_size,
                                _allowed(GROUP_SIZES) + " (0 = per output channel)"))
    return issues


_TOP_KEYS = ("format", "version", "model", "sampler", "timestep_groups", "weight_storage", "layers")
_LAYER_KEYS = tuple(LayerPlan.__dataclass_fields__)
_SAMPLER_KEYS = tuple(SamplerSettings.__dataclass_fields__)


def _unknown_keys(path: str, data: Mapping[str, Any], known: Sequence[str], issues: list[PlanIssue]) -> None:
    for key in data:
        if key not in known:
            issues.append(PlanIssue(f"{path}{key}" if path else key, data[key],
                                    f"no such field; known fields: {', '.join(known)}"))


def _parse_plan(data: Any, issues: list[PlanIssue]) -> Plan | None:
    if not isinstance(data, dict):
        issues.append(PlanIssue("<root>", type(data).__name__, "a JSON object"))
        return None
    if data.get("format") != PLAN_FORMAT:
        issues.append(PlanIssue("format", data.get("format"), repr(PLAN_FORMAT)))
    version = data.get("version")
    if version != PLAN_VERSION:
        newer = isinstance(version, int) and not isinstance(version, bool) and version > PLAN_VERSION
        issues.append(PlanIssue("version", version,
                                f"{PLAN_VERSION}" + (" (this Plan is from a newer dlmsearch; upgrade)"
                                                     if newer else "")))
        return None
    _unknown_keys("", data, _TOP_KEYS, issues)

    model = data.get("model")
    model_ref = None
    if isinstance(model, dict) and isinstance(model.get("name"), str):
        _unknown_keys("model.", model, ("name", "fingerprint"), issues)
        fingerprint = model.get("fingerprint", "")
        if not isinstance(fingerprint, str):
            issues.append(PlanIssue("model.fingerprint", fingerprint, "a string"))
            fingerprint = ""
        model_ref = ModelRef(model["name"], fingerprint)
    else:
        issues.append(PlanIssue("model", model, 'an object {"name": ..., "fingerprint": ...}'))

    sampler_data = data.get("sampler", {})
    sampler = SamplerSettings()
    if isinstance(sampler_data, dict):
        _unknown_keys("sampler.", sampler_data, _SAMPLER_KEYS, issues)
        kwargs = {k: v for k, v in sampler_data.items() if k in _SAMPLER_KEYS}
        sampler = SamplerSettings(**kwargs)
    else:
        issues.append(PlanIssue("sampler", sampler_data, "an object of sampler settings"))

    bounds = data.get("timestep_groups", [])
    if not isinstance(bounds, list):
        issues.append(PlanIssue("timestep_groups", bounds, "a list of boundaries in (0, 1)"))
        bounds = []
    storage = data.get("weight_storage", "nested")

    layers: dict[str, LayerPlan] = {}
    layers_data = data.get("layers", {})
    if not isinstance(layers_data, dict):
        issues.append(PlanIssue("layers", type(layers_data).__name__, "an object keyed by module name"))
        layers_data = {}
    for name, entry in layers_data.items():
        path = f"layers.{name}"
        if not isinstance(entry, dict):
            issues.append(PlanIssue(path, entry, "an object of layer settings"))
            continue
        _unknown_keys(path + ".", entry, _LAYER_KEYS, issues)
        kwargs = {k: v for k, v in entry.items() if k in _LAYER_KEYS}
        for key in ("weight_bits", "act_bits"):
            if key in kwargs:
                value = kwargs[key]
                if not isinstance(value, list):
                    issues.append(PlanIssue(f"{path}.{key}", value, "a list with one value per timestep group"))
                    kwargs.pop(key)
                else:
                    kwargs[key] = tuple(value)
        layers[name] = LayerPlan(**kwargs)

    candidate = object.__new__(Plan)
    for key, value in (("model", model_ref or ModelRef("")), ("sampler", sampler),
                       ("timestep_groups", tuple(bounds)), ("weight_storage", storage),
                       ("layers", layers), ("version", PLAN_VERSION)):
        object.__setattr__(candidate, key, value)
    issues.extend(_check_plan(candidate))  # built without __post_init__, so checked once, here
    return None if issues else candidate
