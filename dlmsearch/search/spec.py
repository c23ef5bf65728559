"""StudySpec: the YAML a user writes to describe one search, validated before anything loads.

A minimal spec (every other field has a default)::

    study: quickstart
    model: shakespeare-char          # embedded name or a local checkpoint folder
    hardware: local                  # registry name, hardware / profile YAML, or "local"
    budget: {latency_ms: 400}        # optional: latency_ms, latency_per_step_ms, peak_mem_bytes | peak_mem_gb,
                                     # or relative to the dense model: latency_fraction, peak_mem_fraction
    objectives: [quality, latency_ms]
    n_trials: 40
    isolation: process               # default: Plans are scored in a child process replaced every
    recycle_after: 25                # 25 evaluations (memory stays flat); "none": in this process
    verify_front: 20                 # after the trials, re-score at most 20 front Plans with the full
    verify_settings: {draws: 2}      # evaluator (FullSettings overrides); 0: no verification
    quality_reference: null          # the quality at the hypervolume's reference point; null: 1.1 x the
                                     # proxy score of the space's most compressed Plan, measured once

Loading reports every bad field at once (path, value, what is allowed) as one
:class:`StudySpecError`; nothing is loaded or measured before the spec is valid.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from dlmsearch.cost_models.hardware_spec import list_hardware, yaml_error_summary, yaml_number
from dlmsearch.evaluators.base import FIDELITIES
from dlmsearch.evaluators.full import FullSettings
from dlmsearch.evaluators.proxy import ProxySettings
from dlmsearch.models.embedded import EMBEDDED_MODEL_NAME, EMBEDDED_MODELS
from dlmsearch.models.grouping import LAYER_GROUPINGS
from dlmsearch.models.sampler_rules import REMASKING_STRATEGIES, check_sampler_settings
from dlmsearch.plan import ACT_BITS, GROUP_SIZES, PRUNE_METHODS, QUANT_METHODS, STRUCTURES, WEIGHT_BITS, WEIGHT_STORAGES
from dlmsearch.spaces.spec import TIMESTEP_SCHEDULES, GenerationSpec, SpaceSpec, SparsityRange

OBJECTIVES: tuple[str, ...] = ("quality", "latency_ms", "peak_mem_bytes")
SAMPLERS: tuple[str, ...] = ("auto", "tpe", "gp", "nsga2", "random")
#: A study's evaluator fidelities: the evaluators' own, or multi (low first, full for front candidates).
SEARCH_FIDELITIES: tuple[str, ...] = ("multi", *FIDELITIES)
ISOLATIONS: tuple[str, ...] = ("process", "none")
BUDGET_KEYS: tuple[str, ...] = ("latency_ms", "latency_per_step_ms", "peak_mem_bytes", "peak_mem_gb",
                                "latency_fraction", "peak_mem_fraction")
#: ProxySettings fields a study may override: all but the data split (a study scores on the evaluation
#: split) and batch_size (how the states are batched, not what is measured).
EVALUATOR_SETTINGS: tuple[str, ...] = tuple(f.name for f in fields(ProxySettings)
                                            if f.name not in ("split", "batch_size"))
#: Those of them that are term weights (any number >= 0); the others are counts or seeds.
_WEIGHT_SETTINGS = tuple(f.name for f in fields(ProxySettings) if isinstance(f.default, float))
#: Evaluator settings that may be 0 (a term switched off, no cap, or seed 0).
_ZERO_OK_SETTINGS = ("seed", "unconditional_rows", "low_fidelity_prompts", "low_fidelity_free_rows",
                     "low_fidelity_free_steps", "low_fidelity_infill_windows", "trajectory_prompts", "infill_windows",
                     "infill_window_length", "free_max_steps")


class StudySpecError(ValueError):
    """A study spec with one or more bad fields; the message lists every one."""

    def __init__(self, problems: Sequence[str], source: str = "study spec") -> None:
        self.problems = list(problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class EvaluatorSpec:
    """The quality evaluator: the proxy, at one fidelity or multi-fidelity (low first)."""

    fidelity: str = "multi"  # multi: low fidelity first, full only for Plans that could enter the front
    settings: Mapping[str, Any] = field(default_factory=dict)  # ProxySettings overrides
    data_files: tuple[str, ...] = ()  # held-out text files instead of the embedded plays
    calibration_files: tuple[str, ...] = ()


@dataclass(frozen=True)
class Budget:
    """Hardware budget; each limit is optional and becomes an Optuna constraint."""

    latency_ms: float | None = None
    latency_per_step_ms: float | None = None
    peak_mem_bytes: int | None = None
    latency_fraction: float | None = None  # of the dense Plan's latency: a budget that travels across machines
    peak_mem_fraction: float | None = None

    def limits(self, dense: Mapping[str, float] | None = None) -> dict[str, float]:
        """The limits by metric name; fractions become absolute with ``dense`` (the dense Plan's
        ``latency_ms`` and ``peak_mem_bytes``), which they require."""
        out = {k: float(v) for k, v in asdict(self).items() if v is not None and not k.endswith("_fraction")}
        for name, fraction in (("latency_ms", self.latency_fraction), ("peak_mem_bytes", self.peak_mem_fraction)):
            if fraction is not None:
                if dense is None:
                    raise ValueError(f"budget.{name.split('_')[0]}_fraction needs the dense Plan's cost")
                out[name] = fraction * float(dense[name])
        return out


@dataclass(frozen=True)
class StudySpec:
    """One search (see the module docstring)."""

    study: str
    model: str = EMBEDDED_MODEL_NAME
    trust_remote_code: bool = False
    hardware: str = "local"
    budget: Budget = field(default_factory=Budget)
    objectives: tuple[str, ...] = ("quality", "latency_ms", "peak_mem_bytes")
    space: SpaceSpec = field(default_factory=SpaceSpec)
    generation: GenerationSpec = field(default_factory=GenerationSpec)
    evaluator: EvaluatorSpec = field(default_factory=EvaluatorSpec)
    sampler: str = "auto"
    n_trials: int | None = 50
    timeout_s: float | None = None
    trial_timeout_s: float | None = None
    storage: str | None = None  # None: a journal file in the run folder
    seed: int = 0
    warm_start: bool = True
    quality_reference: float | None = None  # proxy score at the hypervolume's reference point (None: measured)
    isolation: str = "process"  # process: model work in a child process, replaced every recycle_after evaluations
    recycle_after: int = 25
    verify_front: int = 20  # front Plans re-scored by the full evaluator after the trials (0: none)
    verify_settings: Mapping[str, Any] = field(default_factory=dict)  # FullSettings overrides for verification

    def to_dict(self) -> dict[str, Any]:
        """Plain data (the resolved spec a run folder keeps)."""
        return _plain(asdict(self))

    def to_yaml(self) -> str:
        """The resolved spec as YAML."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ---------------------------------------------------------------- parsing and validation


class _Checker:
    """Collects every problem as ``path: value is not allowed; allowed: ...``."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def bad(self, path: str, value: Any, allowed: str) -> None:
        self.problems.append(f"{path}: {value!r} is not allowed; allowed: {allowed}")

    def mapping(self, path: str, data: Any, known: Sequence[str]) -> dict[str, Any]:
        if data is None:
            return {}
        if not isinstance(data, Mapping):
            self.bad(path, data, f"a mapping with keys {', '.join(known)}")
            return {}
        for key in data:
            if key not in known:
                self.problems.append(f"{path}.{key}: unknown field; allowed: {', '.join(known)}")
        return dict(data)

    def integer(self, path: str, value: Any, low: int, high: int | None = None) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
            self.bad(path, value, f"an integer >= {low}" + (f" and <= {high}" if high is not None else ""))
            return None
        return value

    def number(self, path: str, value: Any, low: float = 0.0, low_open: bool = True) -> float | None:
        value = yaml_number(value)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or value < low or (low_open and value == low):
            self.bad(path, value, f"a finite number {'>' if low_open else '>='} {low:g}")
            return None
        return float(value)

    def choice(self, path: str, value: Any, allowed: Sequence[Any]) -> Any:
        if value not in allowed or isinstance(value, bool):
            self.bad(path, value, ", ".join(map(str, allowed)))
            return None
        return value

    def choices(self, path: str, value: Any, allowed: Sequence[Any]) -> tuple[Any, ...] | None:
        if not isinstance(value, list) or not value:
            self.bad(path, value, f"a non-empty list of {', '.join(map(str, allowed))}")
            return None
        bad = [v for v in value if v not in allowed or isinstance(v, bool)]
        if bad:
            self.bad(path, bad, f"values from {', '.join(map(str, allowed))}")
            return None
        if len(set(value)) != len(value):
            self.bad(path, value, "distinct values")
            return None
        return tuple(value)

    def string(self, path: str, value: Any) -> str | None:
        if not isinstance(value, str) or not value.strip():
            self.bad(path, value, "a non-empty string")
            return None
        return value


_TOP_KEYS = ("study", "model", "trust_remote_code", "hardware", "budget", "objectives", "space", "generation",
             "evaluator", "sampler", "n_trials", "timeout_s", "trial_timeout_s", "storage", "seed", "warm_start",
             "quality_reference", "isolation", "recycle_after", "verify_front", "verify_settings")


def spec_from_dict(data: Any, source: str = "study spec") -> StudySpec:
    """Validate parsed YAML and build the spec; every problem is reported at once."""
    c = _Checker()
    if not isinstance(data, Mapping):
        raise StudySpecError([f"the file must hold a YAML mapping of fields ({', '.join(_TOP_KEYS)}), "
                              f"got {type(data).__name__}"], source)
    top = c.mapping("", data, _TOP_KEYS)
    c.problems = [p.lstrip(".") for p in c.problems]
    if "study" not in top:
        c.problems.append("study: missing (required): a name for the study")
    values: dict[str, Any] = {}
    study = c.string("study", top.get("study", "x"))
    if study is not None and "study" in top:
        values["study"] = study
    for key in ("model", "hardware", "storage"):
        if key in top and top[key] is not None and c.string(key, top[key]) is not None:
            values[key] = top[key]
    if isinstance(values.get("model"), str):
        _check_model(c, values["model"])
    if isinstance(values.get("hardware"), str):
        _check_hardware(c, values["hardware"])
    for key in ("trust_remote_code", "warm_start"):
        if key in top:
            if isinstance(top[key], bool):
                values[key] = top[key]
            else:
                c.bad(key, top[key], "true or false")
    if "storage" in top and isinstance(top["storage"], str):
        _check_storage(c, top["storage"])
    if "objectives" in top:
        objectives = c.choices("objectives", top["objectives"], OBJECTIVES)
        if objectives is not None and len(objectives) < 2:
            c.bad("objectives", top["objectives"], f"two or three of {', '.join(OBJECTIVES)}")
        elif objectives is not None:
            values["objectives"] = objectives
    if "sampler" in top and c.choice("sampler", top["sampler"], SAMPLERS) is not None:
        values["sampler"] = top["sampler"]
    if "isolation" in top and c.choice("isolation", top["isolation"], ISOLATIONS) is not None:
        values["isolation"] = top["isolation"]
    for key in ("n_trials", "seed", "recycle_after", "verify_front"):
        if key in top and top[key] is not None:
            number = c.integer(key, top[key], 0 if key in ("seed", "verify_front") else 1)
            if number is not None:
                values[key] = number
    if "n_trials" in top and top["n_trials"] is None:
        values["n_trials"] = None
    for key in ("timeout_s", "trial_timeout_s"):
        if key in top and top[key] is not None:
            seconds = c.number(key, top[key])
            if seconds is not None:
                values[key] = seconds
    if top.get("quality_reference") is not None:
        ref = c.number("quality_reference", top["quality_reference"])
        if ref is not None:
            values["quality_reference"] = ref
    if values.get("n_trials", 1) is None and values.get("timeout_s") is None:
        c.bad("n_trials", None, "a positive integer, unless timeout_s is set")
    values["budget"] = _budget(c, top.get("budget"))
    values["space"] = _space(c, top.get("space"))
    values["generation"] = _generation(c, top.get("generation"))
    values["evaluator"] = _evaluator(c, top.get("evaluator"))
    if "verify_settings" in top:
        values["verify_settings"] = _verify_settings(c, top["verify_settings"])
    _check_sampler_grid(c, values["space"], values["generation"])
    if c.problems:
        raise StudySpecError(c.problems, source)
    return StudySpec(**values)


def _check_model(c: _Checker, model: str) -> None:
    if model in EMBEDDED_MODELS:
        return
    folder = Path(model).expanduser()
    if not (folder / "config.json").is_file():
        c.bad("model", model, f"an embedded model ({', '.join(EMBEDDED_MODELS)}) or a local checkpoint folder with "
              "config.json" + (f" ({folder} has none)" if folder.is_dir() else ""))


def _check_hardware(c: _Checker, hardware: str) -> None:
    if hardware != "local" and hardware not in list_hardware() and not Path(hardware).is_file():
        c.bad("hardware", hardware, f"local (this machine, measured), a shipped spec ({', '.join(list_hardware())}) "
              "or a hardware / profile YAML file")


def _check_storage(c: _Checker, url: str) -> None:
    allowed = "an Optuna storage URL (sqlite:///file.db, postgresql://user@host:port/db, mysql://...) or a " \
              "journal file path ending in .journal / .log"
    if "://" in url:
        scheme = url.split("://", 1)[0].split("+", 1)[0]
        if scheme not in ("sqlite", "postgresql", "mysql"):
            c.bad("storage", url, allowed)
    elif not url.endswith((".journal", ".log", ".jsonl")):
        c.bad("storage", url, allowed)


def _budget(c: _Checker, data: Any) -> Budget:
    raw = c.mapping("budget", data, BUDGET_KEYS)
    values: dict[str, Any] = {}
    for key in ("latency_ms", "latency_per_step_ms"):
        if raw.get(key) is not None:
            values[key] = c.number(f"budget.{key}", raw[key])
    for key in ("latency_fraction", "peak_mem_fraction"):
        if raw.get(key) is not None:
            values[key] = c.number(f"budget.{key}", raw[key])
    exclusive = (("peak_mem_gb", ("peak_mem_bytes", "peak_mem_fraction")), ("peak_mem_fraction", ("peak_mem_bytes",)),
                 ("latency_fraction", ("latency_ms",)))
    for key, others in exclusive:
        for other in others:
            if raw.get(key) is not None and raw.get(other) is not None:
                c.bad(f"budget.{key}", raw[key], f"only one of {key} and {other}")
    if raw.get("peak_mem_bytes") is not None:
        number = c.number("budget.peak_mem_bytes", raw["peak_mem_bytes"])
        values["peak_mem_bytes"] = None if number is None else int(number)
    elif raw.get("peak_mem_gb") is not None:
        number = c.number("budget.peak_mem_gb", raw["peak_mem_gb"])
        values["peak_mem_bytes"] = None if number is None else int(number * 1e9)  # GB, not GiB
    return Budget(**values)


def _space(c: _Checker, data: Any) -> SpaceSpec:
    known = tuple(f.name for f in fields(SpaceSpec))
    raw = c.mapping("space", data, known)
    default = SpaceSpec()
    values: dict[str, Any] = {}
    if "layer_grouping" in raw:
        values["layer_grouping"] = c.choice("space.layer_grouping", raw["layer_grouping"], LAYER_GROUPINGS)
    if "layer_groups" in raw:
        values["layer_groups"] = c.integer("space.layer_groups", raw["layer_groups"], 1)
    if "timestep_groups" in raw:
        values["timestep_groups"] = c.integer("space.timestep_groups", raw["timestep_groups"], 1, 8)
    if "timestep_schedule" in raw:
        values["timestep_schedule"] = c.choice("space.timestep_schedule", raw["timestep_schedule"],
                                               TIMESTEP_SCHEDULES)
    for key, allowed in (("weight_bits", WEIGHT_BITS), ("act_bits", ACT_BITS), ("prune_methods", PRUNE_METHODS),
                         ("structures", STRUCTURES)):
        if key == "structures" and isinstance(raw.get(key), list) and 124 in raw[key]:
            c.bad("space.structures", raw[key], "structure names; write \"2:4\" in quotes (YAML reads a bare 2:4 as "
                  "the base-60 number 124)")
        elif key in raw:
            values[key] = c.choices(f"space.{key}", raw[key], allowed)
    for key in ("steps", "block_lengths"):
        if key in raw:
            ok = isinstance(raw[key], list) and raw[key] and all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in raw[key])
            if ok and len(set(raw[key])) == len(raw[key]):
                values[key] = tuple(sorted(raw[key]))
            else:
                c.bad(f"space.{key}", raw[key], "a non-empty list of distinct positive integers")
    if "quant_method" in raw:
        values["quant_method"] = c.choice("space.quant_method", raw["quant_method"], QUANT_METHODS)
    if "group_size" in raw:
        values["group_size"] = c.choice("space.group_size", raw["group_size"], GROUP_SIZES)
    if "weight_storage" in raw:
        values["weight_storage"] = c.choice("space.weight_storage", raw["weight_storage"], WEIGHT_STORAGES)
    if "sparsity" in raw:
        values["sparsity"] = _sparsity(c, raw["sparsity"])
    values = {k: v for k, v in values.items() if v is not None}
    structured = {"heads", "channels"} & set(values.get("structures", default.structures))
    if structured and values.get("layer_grouping", default.layer_grouping) == "per_layer":
        c.bad("space.structures", sorted(structured), "unstructured or 2:4 with layer_grouping per_layer (heads and "
              "channels prune a whole attention / MLP unit, which needs block_role or contiguous grouping)")
    return SpaceSpec(**values)


def _sparsity(c: _Checker, data: Any) -> SparsityRange | None:
    raw = c.mapping("space.sparsity", data, ("min", "max", "step"))
    if not raw:
        return None
    values = {}
    for key in ("min", "max", "step"):
        if key in raw:
            number = yaml_number(raw[key])
            ok = isinstance(number, (int, float)) and not isinstance(number, bool) and 0 <= number < 1
            if not ok or (key == "step" and number == 0):
                c.bad(f"space.sparsity.{key}", raw[key], "a fraction in [0, 1)" + (", > 0" if key == "step" else ""))
                return None
            values[key] = float(number)
    result = SparsityRange(**values)
    if result.max < result.min:
        c.bad("space.sparsity.max", result.max, f"at least min={result.min}")
        return None
    return result


def _generation(c: _Checker, data: Any) -> GenerationSpec:
    raw = c.mapping("generation", data, tuple(f.name for f in fields(GenerationSpec)))
    values: dict[str, Any] = {}
    if "gen_length" in raw:
        values["gen_length"] = c.integer("generation.gen_length", raw["gen_length"], 1)
    if "prompt_length" in raw:
        values["prompt_length"] = c.integer("generation.prompt_length", raw["prompt_length"], 0)
    if "remasking" in raw:
        values["remasking"] = c.choice("generation.remasking", raw["remasking"], REMASKING_STRATEGIES)
    return GenerationSpec(**{k: v for k, v in values.items() if v is not None})


def _evaluator(c: _Checker, data: Any) -> EvaluatorSpec:
    raw = c.mapping("evaluator", data, tuple(f.name for f in fields(EvaluatorSpec)))
    values: dict[str, Any] = {}
    if "fidelity" in raw:
        values["fidelity"] = c.choice("evaluator.fidelity", raw["fidelity"], SEARCH_FIDELITIES)
    if "settings" in raw:
        settings = c.mapping("evaluator.settings", raw["settings"], EVALUATOR_SETTINGS)
        for key, value in settings.items():
            if key in _WEIGHT_SETTINGS:
                c.number(f"evaluator.settings.{key}", value, low_open=False)
            elif key in EVALUATOR_SETTINGS:
                c.integer(f"evaluator.settings.{key}", value, 0 if key in _ZERO_OK_SETTINGS else 1)
        values["settings"] = {k: v for k, v in settings.items() if k in EVALUATOR_SETTINGS}
    for key in ("data_files", "calibration_files"):
        if key in raw:
            files = raw[key]
            if not isinstance(files, list) or not all(isinstance(f, str) and f for f in files):
                c.bad(f"evaluator.{key}", files, "a list of text file paths")
                continue
            missing = [f for f in files if not Path(f).is_file()]
            if missing:
                c.bad(f"evaluator.{key}", missing, "existing text files")
            values[key] = tuple(files)
    return EvaluatorSpec(**{k: v for k, v in values.items() if v is not None})


def _verify_settings(c: _Checker, data: Any) -> dict[str, Any]:
    """Overrides of the full evaluator's settings, checked against :class:`FullSettings` itself."""
    defaults = {f.name: f.default for f in fields(FullSettings)}
    raw = c.mapping("verify_settings", data, tuple(defaults))
    values = {}
    for key, value in raw.items():
        if key not in defaults:
            continue
        default, path = defaults[key], f"verify_settings.{key}"
        if isinstance(default, str):
            checked: Any = c.string(path, value)
        elif isinstance(default, float):
            checked = c.number(path, value, low_open=False)
        else:
            checked = c.integer(path, value, 1 if key == "draws" else 0)
        if checked is not None:
            values[key] = checked
    if values:
        try:
            FullSettings(**values)
        except ValueError as exc:
            c.bad("verify_settings", dict(raw), f"settings the full evaluator accepts ({exc})")
    return values


def _check_sampler_grid(c: _Checker, space: SpaceSpec, generation: GenerationSpec) -> None:
    """Every step count needs at least one block length the sampler accepts."""
    for steps in space.steps:
        if all(check_sampler_settings(generation.gen_length, steps, block, generation.remasking)
               for block in space.block_lengths):
            c.bad("space.steps", steps, f"step counts that at least one of block_lengths "
                  f"{list(space.block_lengths)} accepts for gen_length={generation.gen_length} (steps must be a "
                  "multiple of gen_length // block_length and at most gen_length)")


def load_study_spec(path: str | Path) -> StudySpec:
    """Read and validate a study spec YAML file."""
    file = Path(path)
    if not file.is_file():
        raise StudySpecError([f"no such file {str(file)!r}; allowed: a YAML study spec (see studies/quickstart.yaml)"],
                             str(file))
    try:
        data = yaml.safe_load(file.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise StudySpecError([f"not valid YAML: {yaml_error_summary(exc)}"], str(file)) from None
    return spec_from_dict(data, str(file))
