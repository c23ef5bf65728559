"""SearchSpace: an Optuna trial's parameters -> a Plan, with fixed names and no conditional parameters.

Every parameter exists in every trial (multivariate TPE, GP and NSGA-II model them jointly). A knob
with a single allowed value creates no parameter. Names:

- ``<group>.w<t>``: weight bits of a layer group in timestep group ``t`` (``timestep_schedule: free``);
  with a monotone schedule, ``<group>.w`` (bits at the finest timestep group) and the global
  ``schedule.drop<k>`` (how many bit levels the schedule drops at boundary ``k``);
- ``<group>.a<t>`` / ``<group>.a``: activation bits, likewise (only when more than one is allowed);
- ``<group>.sparsity``; ``<group>.structure`` (only the structures every linear of the group can
  take); ``prune_method``; ``steps``; ``block_length``.

Layer groups (``layer_grouping``) are those of :func:`dlmsearch.models.grouping.layer_groups`:
``block_role`` = ``block<i>.attn`` / ``block<i>.mlp`` (the sensitivity table's groups), ``block`` =
``block<i>``, ``contiguous`` = ``blocks<i>-<j>.attn|mlp`` over ``layer_groups`` runs of consecutive
blocks, ``per_layer`` = each linear by module name.

Two repairs keep every Plan valid without conditional parameters, both deterministic: a
``block_length`` the sampler refuses for the trial's ``steps`` becomes the nearest accepted one
(ties: the longer), and ``2:4`` prunes exactly half of a group whose sampled sparsity is >= 0.25
and nothing below. Given the model's shape, head / channel sparsity snaps to the nearest ratio the
model can realise (whole KV-head groups, kept width a multiple of the quantization group), so the
cost model prices the Plan that actually runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from dlmsearch.compress.apply import realizable_ratio
from dlmsearch.models.adapters import LinearInfo, ModelShape
from dlmsearch.models.grouping import LayerGroup, layer_groups
from dlmsearch.models.sampler_rules import check_sampler_settings
from dlmsearch.plan import STRUCTURE_ROLES, LayerPlan, ModelRef, Plan, SamplerSettings
from dlmsearch.spaces.spec import GenerationSpec, SpaceSpec


class SearchSpaceError(ValueError):
    """The space cannot be built for this model (e.g. a group size that divides no layer)."""


class SearchSpace:
    """The knobs of a :class:`~dlmsearch.spaces.spec.SpaceSpec` for one model's linears."""

    def __init__(self, space: SpaceSpec, generation: GenerationSpec, model: ModelRef,
                 linears: Sequence[LinearInfo], shape: ModelShape | None = None) -> None:
        if not linears:
            raise SearchSpaceError("the model has no compressible linears")
        bad = sorted({info.in_features for info in linears if space.group_size and info.in_features % space.group_size})
        if bad:
            raise SearchSpaceError(f"space.group_size: {space.group_size} is not allowed for this model; allowed: 0 "
                                   f"(per channel) or a divisor of every layer's in_features (these are not: {bad})")
        self.space = space
        self.generation = generation
        self.model = model
        self.shape = shape
        self.groups = layer_groups(linears, space.layer_grouping, space.layer_groups)
        g = space.timestep_groups
        self.boundaries = tuple(round(i / g, 6) for i in range(1, g))
        self.weight_bits = tuple(sorted(space.weight_bits))
        self.act_bits = tuple(sorted(space.act_bits))
        self._distributions = self._build_distributions()

    # ------------------------------------------------------------ parameters

    @property
    def monotone(self) -> bool:
        """True for a rising / falling per-timestep schedule."""
        return self.space.timestep_schedule != "free"

    def group_structures(self, group: LayerGroup) -> tuple[str, ...]:
        """Structures every linear of ``group`` can take, in the spec's order."""
        return tuple(s for s in self.space.structures
                     if s not in STRUCTURE_ROLES or group.roles <= STRUCTURE_ROLES[s])

    def _build_distributions(self) -> dict[str, BaseDistribution]:
        s = self.space
        out: dict[str, BaseDistribution] = {}
        ts = range(s.timestep_groups)
        for group in self.groups:
            if len(self.weight_bits) > 1:
                for suffix in (["w"] if self.monotone else [f"w{t}" for t in ts]):
                    out[f"{group.name}.{suffix}"] = CategoricalDistribution(self.weight_bits)
            if len(self.act_bits) > 1:
                for suffix in (["a"] if self.monotone else [f"a{t}" for t in ts]):
                    out[f"{group.name}.{suffix}"] = CategoricalDistribution(self.act_bits)
            sparsities = s.sparsity.values()
            if len(sparsities) > 1:
                out[f"{group.name}.sparsity"] = FloatDistribution(sparsities[0], sparsities[-1], step=s.sparsity.step)
            structures = self.group_structures(group)
            if len(structures) > 1:
                out[f"{group.name}.structure"] = CategoricalDistribution(structures)
        if self.monotone and len(self.weight_bits) > 1:
            for k in range(s.timestep_groups - 1):
                out[f"schedule.drop{k}"] = IntDistribution(0, len(self.weight_bits) - 1)
        if len(s.prune_methods) > 1:
            out["prune_method"] = CategoricalDistribution(s.prune_methods)
        if len(s.steps) > 1:
            out["steps"] = CategoricalDistribution(s.steps)
        if len(s.block_lengths) > 1:
            out["block_length"] = CategoricalDistribution(s.block_lengths)
        return out

    def distributions(self) -> dict[str, BaseDistribution]:
        """Every parameter's Optuna distribution (fixed for the life of the study)."""
        return dict(self._distributions)

    def suggest(self, trial: optuna.trial.BaseTrial) -> Plan:
        """Draw every parameter from ``trial`` and build the Plan."""
        params = {name: _suggest(trial, name, dist) for name, dist in self._distributions.items()}
        return self.plan_from_params(params)

    # ------------------------------------------------------------ params -> Plan

    def plan_from_params(self, params: Mapping[str, Any]) -> Plan:
        """The Plan for a full set of parameter values (missing ones raise ``KeyError``)."""
        s = self.space
        missing = [name for name in self._distributions if name not in params]
        if missing:
            raise KeyError(f"parameters missing: {', '.join(missing)}")
        prune_method = params.get("prune_method", s.prune_methods[0])
        layers: dict[str, LayerPlan] = {}
        for group in self.groups:
            weight = self._bits_per_timestep(params, group, "w", self.weight_bits)
            act = self._bits_per_timestep(params, group, "a", self.act_bits)
            structure = params.get(f"{group.name}.structure", self.group_structures(group)[0])
            sparsity = float(params.get(f"{group.name}.sparsity", s.sparsity.values()[0]))
            if structure == "2:4":
                sparsity = 0.5 if sparsity >= 0.25 else 0.0
            elif structure in ("heads", "channels"):
                sparsity = self.structured_sparsity(structure, sparsity, weight)
            layer = LayerPlan(weight_bits=weight, act_bits=act, sparsity=round(sparsity, 6),
                              prune_method=prune_method, structure=structure, group_size=s.group_size,
                              quant_method=s.quant_method)
            layers.update(dict.fromkeys(group.modules, layer))
        steps = int(params.get("steps", s.steps[0]))
        block = self.repair_block_length(steps, int(params.get("block_length", s.block_lengths[0])))
        sampler = SamplerSettings(steps=steps, gen_length=self.generation.gen_length, block_length=block,
                                  remasking=self.generation.remasking)
        return Plan(self.model, sampler, self.boundaries, s.weight_storage, layers)

    def structured_sparsity(self, structure: str, sparsity: float, weight_bits: tuple[int, ...]) -> float:
        """The ratio of heads / channels the model can really remove nearest to ``sparsity``."""
        if self.shape is None or sparsity == 0:
            return sparsity
        group = self.space.group_size if any(b < 16 for b in weight_bits) else 0
        if structure == "heads":
            kv = self.shape.num_kv_heads
            return realizable_ratio(round(sparsity * kv) / kv, kv,
                                    self.shape.num_heads // kv * self.shape.head_dim, group)
        return realizable_ratio(sparsity, self.shape.intermediate_size, 1, group)

    def _bits_per_timestep(self, params: Mapping[str, Any], group: LayerGroup, kind: str,
                           allowed: tuple[int, ...]) -> tuple[int, ...]:
        g = self.space.timestep_groups
        if len(allowed) == 1:
            return (allowed[0],) * g
        if not self.monotone:
            return tuple(int(params[f"{group.name}.{kind}{t}"]) for t in range(g))
        top = int(params[f"{group.name}.{kind}"])
        if kind == "a":
            return (top,) * g
        drops = [int(params[f"schedule.drop{k}"]) for k in range(g - 1)]
        index = allowed.index(top)
        # rising: the finest precision in the last (refining) group, dropping towards the noisy start
        levels = [max(0, index - sum(drops[t:])) for t in range(g)]
        if self.space.timestep_schedule == "falling":
            levels = [max(0, index - sum(drops[: t])) for t in range(g)]
        return tuple(allowed[level] for level in levels)

    def repair_block_length(self, steps: int, block_length: int) -> int:
        """``block_length`` if the sampler accepts it with ``steps``, else the nearest accepted one."""
        gen = self.generation
        accepted = [b for b in self.space.block_lengths
                    if not check_sampler_settings(gen.gen_length, steps, b, gen.remasking)]
        if not accepted:
            raise SearchSpaceError(f"space.steps: {steps} has no accepted block length among "
                                   f"{list(self.space.block_lengths)} for gen_length={gen.gen_length}")
        if block_length in accepted:
            return block_length
        return min(accepted, key=lambda b: (abs(b - block_length), -b))

    # ------------------------------------------------------------ Plans -> params (warm starts)

    def preset_params(self, weight_bits: int | Mapping[str, int] = 16, act_bits: int = 16, sparsity: float = 0.0,
                      steps: int | None = None, block_length: int | None = None,
                      structured: bool = False) -> dict[str, Any] | None:
        """Parameters of a uniform setting (``weight_bits`` may map group name -> bits), or ``None``
        when a value is outside the space (such a preset cannot be enqueued). Each group prunes
        unstructured where the space allows it, or with ``structured`` with its first structure that
        removes whole heads or channels where it has one."""
        s = self.space
        per_group = weight_bits if isinstance(weight_bits, Mapping) else dict.fromkeys(
            (g.name for g in self.groups), weight_bits)
        steps = steps if steps is not None else max(s.steps)
        values: dict[str, Any] = {}
        for name, dist in self._distributions.items():
            group, _, knob = name.rpartition(".")
            if knob.startswith("w"):
                values[name] = per_group.get(group)
            elif knob.startswith("a"):
                values[name] = act_bits
            elif knob == "sparsity":
                values[name] = sparsity
            elif knob == "structure" and isinstance(dist, CategoricalDistribution):
                shaped = [c for c in dist.choices if c != "unstructured"]
                if structured and shaped:
                    values[name] = shaped[0]
                else:
                    values[name] = "unstructured" if "unstructured" in dist.choices else dist.choices[0]
            elif knob.startswith("drop"):
                values[name] = 0
            elif name == "prune_method":
                values[name] = s.prune_methods[0]
            elif name == "steps":
                values[name] = steps
            elif name == "block_length":
                values[name] = self.repair_block_length(steps, block_length or max(s.block_lengths))
        if not all(_allowed(self._distributions[name], value) for name, value in values.items()):
            return None
        fixed_ok = ((len(self.weight_bits) > 1 or set(per_group.values()) <= set(self.weight_bits))
                    and (len(s.steps) > 1 or steps == s.steps[0]))
        return values if fixed_ok else None


def _allowed(dist: BaseDistribution, value: Any) -> bool:
    if isinstance(dist, CategoricalDistribution):
        return value in dist.choices
    if isinstance(dist, (IntDistribution, FloatDistribution)):
        step = dist.step or 0
        on_grid = not step or abs((value - dist.low) / step - round((value - dist.low) / step)) < 1e-6
        return dist.low <= value <= dist.high and on_grid
    return False


def _suggest(trial: optuna.trial.BaseTrial, name: str, dist: BaseDistribution) -> Any:
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    raise TypeError(f"unsupported distribution for {name}: {dist!r}")
