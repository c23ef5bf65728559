"""``apply_plan_``: turn a model into the compressed model a Plan describes, all or nothing.

Order of work, each step reading the model as the previous one left it:

1. validate the Plan against the model (every mismatch reported at once);
2. calibration statistics on the dense model (Wanda column norms, sink-down-weighted norms for
   ``sink_wanda``, Hessians for GPTQ), only what the Plan's methods need;
3. structured pruning (whole KV groups / MLP channels), which shrinks matrices;
4. unstructured or 2:4 pruning masks, computed out of place;
5. quantization into :class:`~dlmsearch.compress.quantized_linear.QuantizedLinear` layers;
6. one swap of every replaced module.

Steps 3-5 build new tensors and modules instead of editing weights in place, and the attributes
that structured pruning changes are snapshotted first, so an error at any point restores the
model exactly as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from dlmsearch.compress.calibration import CalibrationSet, LinearInputStats, collect_input_statistics
from dlmsearch.compress.plan_fit import check_plan_fits
from dlmsearch.compress.prune import (
    keep_mask,
    pruning_scores,
    pruning_statistics,
    row_ranks,
    unstructured_keep_mask,
)
from dlmsearch.compress.quantized_linear import QuantConfig, QuantizedLinear
from dlmsearch.compress.structured import (
    channel_scores,
    head_group_scores,
    head_layout,
    prune_channels_,
    prune_heads_,
    reconstruct_columns_,
)
from dlmsearch.models.adapters import DLMAdapter, LinearInfo
from dlmsearch.plan import LayerPlan, Plan

logger = logging.getLogger("dlmsearch.compress.apply")

#: Memory the pruning ranks of dense weights may keep (:meth:`CalibrationStatistics.ranks`): the embedded
#: model's three methods take about 46 MiB; a multi-billion-parameter model keeps its first layers only.
RANK_CACHE_BYTES = 256 * 2**20

#: Module attributes that structured pruning rewrites (recorded so a saved model reloads).
SHAPE_ATTRIBUTES: tuple[str, ...] = ("num_heads", "num_key_value_heads", "intermediate_size")


@dataclass
class CompressionRecord:
    """What :func:`apply_plan_` did to a model: enough to save it and rebuild it without the original."""

    plan: Plan
    linear_shapes: dict[str, tuple[int, int]] = field(default_factory=dict)  # (in_features, out_features)
    module_attributes: dict[str, dict[str, int]] = field(default_factory=dict)
    quantized: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the Plan is stored beside it in its own file)."""
        return {"linear_shapes": {k: list(v) for k, v in self.linear_shapes.items()},
                "module_attributes": self.module_attributes, "quantized": self.quantized}


class _ModuleSnapshot:
    """Shallow copies of module state (parameters, buffers, submodules, attributes) to roll back to."""

    def __init__(self, modules: Mapping[str, nn.Module]) -> None:
        self._saved = {name: (module, self._copy(module)) for name, module in modules.items()}

    @staticmethod
    def _copy(module: nn.Module) -> dict[str, Any]:
        state = dict(module.__dict__)
        for key in ("_parameters", "_buffers", "_modules"):
            state[key] = dict(module.__dict__[key])
        return state

    def restore(self) -> None:
        for module, state in self._saved.values():
            module.__dict__.clear()
            module.__dict__.update(state)


def _prunes_units(lp: LayerPlan) -> bool:
    """Whether ``lp`` removes whole heads or MLP channels (structured pruning that shrinks the matrices)."""
    return lp.structure in ("heads", "channels") and lp.sparsity > 0


def _needs_calibration(plan: Plan, infos: Mapping[str, LinearInfo], reconstruct: bool = True
                       ) -> tuple[set[str], set[str]]:
    """(pruning methods needing statistics, names of the layers that need their input Gram matrix: those
    quantized with GPTQ and, with ``reconstruct``, the o / down layers re-fitted after data-driven
    structured pruning)."""
    methods = {lp.prune_method for lp in plan.layers.values()
               if lp.sparsity > 0 and lp.prune_method != "magnitude"}
    gram = {name for name, lp in plan.layers.items()
            if lp.quant_method == "gptq" and any(b < 16 for b in lp.weight_bits)}
    if reconstruct:
        gram |= {name for name, lp in plan.layers.items()
                 if infos[name].role in ("o", "down") and _prunes_units(lp) and lp.prune_method != "magnitude"}
    return methods, gram


def realizable_ratio(ratio: float, units: int, unit_width: int, group_size: int) -> float:
    """Structured pruning ratio adjusted so the kept width stays a multiple of the quantization group.

    The quantized layer that reads the pruned units (o or down) needs its input width divisible
    by its group size, so the kept count is rounded to the nearest multiple that allows it.
    """
    if not group_size or unit_width % group_size == 0:
        return ratio
    step = group_size // unit_width if group_size % unit_width == 0 else group_size
    keep = min(units, max(step, round((1 - ratio) * units / step) * step))
    return 1 - keep / units


def _unit_ratio(ratio: float, units: int, unit_width: int, group_size: int, where: str) -> float:
    adjusted = realizable_ratio(ratio, units, unit_width, group_size)
    if abs(adjusted - ratio) > 1e-6:  # Plans store ratios to 6 decimals
        logger.warning("%s: pruning ratio %.3f adjusted to %.3f so the kept width divides group_size=%d",
                       where, ratio, adjusted, group_size)
    return adjusted


def _structured_pruning(adapter: DLMAdapter, plan: Plan, infos: Mapping[str, LinearInfo],
                        stats: Mapping[str, LinearInputStats] | None,
                        grams: Mapping[str, LinearInputStats]) -> dict[str, torch.Tensor]:
    """Prune heads / channels block by block, re-fitting the o / down layer where ``grams`` holds its
    inputs' Gram matrix; returns kept input columns of o / down per layer name."""
    kept_columns: dict[str, torch.Tensor] = {}
    by_block: dict[tuple[int, str], tuple[float, int]] = {}
    for name, lp in plan.layers.items():
        if _prunes_units(lp):
            info = infos[name]
            if info.role in ("o", "down"):
                group = lp.group_size if any(b < 16 for b in lp.weight_bits) else 0
                by_block[(info.block, lp.structure)] = (lp.sparsity, group)
    for (block, structure), (ratio, group) in sorted(by_block.items()):
        suffix = adapter.role_suffixes()["o" if structure == "heads" else "down"]
        target = f"{adapter.block_prefix(block)}.{suffix}"
        reader = adapter.get_module(target)
        assert isinstance(reader, nn.Linear)
        dense_weight = reader.weight.detach().clone()
        if structure == "heads":
            heads, kv_heads, head_dim = head_layout(adapter, block)
            width = heads // kv_heads * head_dim
            scores = head_group_scores(adapter, block, stats)
            kept = prune_heads_(adapter, block, _unit_ratio(ratio, kv_heads, width, group, target), scores)
            columns = (kept[:, None] * width + torch.arange(width)[None, :]).flatten()
        else:
            scores = channel_scores(adapter, block, stats)
            columns = prune_channels_(adapter, block, _unit_ratio(ratio, scores.numel(), 1, group, target), scores)
        gram = grams.get(target)
        if gram is not None and gram.hessian is not None and columns.numel() < dense_weight.shape[1]:
            reconstruct_columns_(reader, dense_weight, columns, gram.hessian)
        kept_columns[target] = columns
    return kept_columns


def _pruned_weight(name: str, linear: nn.Linear, lp: LayerPlan, statistics: CalibrationStatistics) -> torch.Tensor:
    weight = linear.weight.detach()
    if lp.sparsity == 0 or lp.structure not in ("unstructured", "2:4"):
        return weight
    stats = (statistics.by_method.get(lp.prune_method) or {}).get(name)
    if lp.structure == "unstructured":
        mask = unstructured_keep_mask(statistics.ranks(name, weight, lp.prune_method, stats), lp.sparsity)
    else:
        mask = keep_mask(pruning_scores(weight, lp.prune_method, stats), lp.sparsity, lp.structure)
    return weight * mask.to(weight.dtype)


def _replacement(linear: nn.Linear, weight: torch.Tensor, lp: LayerPlan, plan: Plan,
                 hessian: torch.Tensor | None, use_kernels: bool | None) -> nn.Module | None:
    """The module that takes ``linear``'s place, or None when it stays as it is."""
    quantized = any(b < 16 for b in lp.weight_bits) or any(b < 16 for b in lp.act_bits)
    if not quantized:
        if weight is linear.weight.detach():
            return None
        dense = nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None,
                          device=weight.device, dtype=weight.dtype)
        dense.weight = nn.Parameter(weight, requires_grad=False)
        dense.bias = linear.bias
        return dense
    source = nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
    source.weight = nn.Parameter(weight, requires_grad=False)
    source.bias = linear.bias
    config = QuantConfig(weight_bits=lp.weight_bits, act_bits=lp.act_bits, timestep_boundaries=plan.timestep_groups,
                         group_size=lp.group_size, storage=plan.weight_storage, method=lp.quant_method)
    return QuantizedLinear.from_linear(source, config, hessian=hessian, use_kernels=use_kernels)


@dataclass
class CalibrationStatistics:
    """Dense-model statistics that pruning and GPTQ read: per pruning method, and Hessians per layer.

    They depend on the model and the calibration data, not on the Plan, so an evaluator that
    applies many Plans computes them once (:meth:`compute`) and passes them to every
    :func:`apply_plan_` call.
    """

    by_method: dict[str, dict[str, LinearInputStats] | None] = field(default_factory=dict)
    hessians: dict[str, LinearInputStats] = field(default_factory=dict)
    #: Row ranks of dense weights' pruning scores by (layer, method), with the weight they rank.
    _ranks: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, repr=False,
                                                                           compare=False)

    @classmethod
    def compute(cls, adapter: DLMAdapter, calibration: CalibrationSet, methods: Iterable[str] = (),
                hessian_layers: Iterable[str] = (), progress: bool = True) -> CalibrationStatistics:
        """Statistics for the given pruning ``methods`` and GPTQ ``hessian_layers`` of ``adapter``
        (``progress``: bars on a terminal)."""
        by_method = {method: pruning_statistics(adapter, calibration, method, progress=progress)
                     for method in sorted(set(methods))}
        layers = sorted(set(hessian_layers))
        hessians = (collect_input_statistics(adapter, calibration, hessian=True, names=layers, progress=progress)
                    if layers else {})
        return cls(by_method, hessians)

    def ranks(self, name: str, weight: torch.Tensor, method: str, stats: LinearInputStats | None) -> torch.Tensor:
        """:func:`~dlmsearch.compress.prune.row_ranks` of ``weight``'s ``method`` scores, kept per layer
        while the kept ranks and weights stay under :data:`RANK_CACHE_BYTES`: an evaluator prunes the same
        dense weights at many sparsities, and the sort is most of a Plan's compression. A weight that
        differs from the one ranked (sliced by structured pruning, or another model) is ranked afresh."""
        kept = self._ranks.get((name, method))
        if (kept is not None and kept[1].shape == weight.shape and kept[1].device == weight.device
                and torch.equal(kept[1], weight)):
            return kept[0]
        ranks = row_ranks(pruning_scores(weight, method, stats))
        used = sum(r.nbytes + w.nbytes for r, w in self._ranks.values())
        if kept is None and used + ranks.nbytes + weight.nbytes <= RANK_CACHE_BYTES:
            self._ranks[(name, method)] = (ranks, weight.clone())
        return ranks

    def covers(self, plan: Plan, infos: Mapping[str, LinearInfo], reconstruct: bool = True) -> bool:
        """True when nothing ``plan`` needs is missing (``infos``: the model's linears by name)."""
        methods, gram = _needs_calibration(plan, infos, reconstruct)
        return methods <= set(self.by_method) and gram <= set(self.hessians)


def _calibration_statistics(adapter: DLMAdapter, plan: Plan, infos: Mapping[str, LinearInfo],
                            calibration: CalibrationSet | None, statistics: CalibrationStatistics | None,
                            reconstruct: bool, progress: bool) -> CalibrationStatistics:
    if statistics is not None and statistics.covers(plan, infos, reconstruct):
        return statistics
    methods, gram = _needs_calibration(plan, infos, reconstruct)
    if not methods and not gram:
        return CalibrationStatistics()
    return CalibrationStatistics.compute(adapter, calibration or CalibrationSet.from_split(adapter), methods, gram,
                                         progress)


def _structure_stats(by_method: Mapping[str, dict[str, LinearInputStats] | None], plan: Plan
                     ) -> dict[str, LinearInputStats] | None:
    """Statistics for structured scores: the method named by the structured layers, if it has any."""
    for lp in plan.layers.values():
        if _prunes_units(lp):
            return by_method.get(lp.prune_method)
    return None


def _touched_modules(adapter: DLMAdapter, plan: Plan) -> Iterator[tuple[str, nn.Module]]:
    """Modules whose attributes structured pruning may change (attention and MLP parents, linears)."""
    for name in plan.layers:
        yield name, adapter.get_module(name)
        parent = name.rpartition(".")[0]
        yield parent, adapter.get_module(parent)


def apply_plan_(adapter: DLMAdapter, plan: Plan, calibration: CalibrationSet | None = None,
                use_kernels: bool | None = None, statistics: CalibrationStatistics | None = None,
                progress: bool = True, reconstruct: bool = True) -> CompressionRecord:
    """Compress ``adapter``'s model in place as ``plan`` says; return what was done.

    Validates the Plan against the model first (:class:`~dlmsearch.plan.PlanValidationError`
    listing every mismatch). ``calibration`` feeds Wanda, sink-aware Wanda and GPTQ; by default
    the calibration plays of the shipped corpus are used. ``use_kernels`` chooses real low-bit
    kernels over dequantize-then-matmul (:func:`~dlmsearch.compress.kernels.kernels_for`): by
    default those measured faster than a float matmul on the model's device -- fbgemm's dynamic int8
    for W8A8 layers on CPUs, none on CUDA (every quantized layer there dequantizes and multiplies in
    the model's dtype); ``True`` all, ``False`` none. Each quantized layer
    reports which one it runs. ``statistics`` precomputed on this
    (dense) model are used when they cover the Plan. ``reconstruct``: after heads or MLP channels are
    pruned with a data-driven method (not ``magnitude``), the o / down layer that reads them is re-fitted
    by least squares on the calibration inputs (:func:`~dlmsearch.compress.structured.reconstruct_columns_`);
    False only slices it. ``progress`` shows bars on a terminal
    (evaluators, which compress a copy per trial, turn them off). On any error the model is left exactly
    as it was. The record is also kept as ``adapter.compression`` for :func:`save_compressed`.
    """
    check_plan_fits(plan, adapter)
    if adapter.compression is not None:
        raise ValueError(f"model {adapter.name!r} is already compressed; load the original model to apply "
                         "another Plan")
    infos = {info.name: info for info in adapter.linears()}
    stats_all = _calibration_statistics(adapter, plan, infos, calibration, statistics, reconstruct, progress)
    by_method, hessian_stats = stats_all.by_method, stats_all.hessians
    snapshot = _ModuleSnapshot(dict(_touched_modules(adapter, plan)))
    try:
        with torch.no_grad():
            kept_columns = _structured_pruning(adapter, plan, infos, _structure_stats(by_method, plan),
                                               hessian_stats if reconstruct else {})
            replacements: dict[str, nn.Module] = {}
            for name, lp in tqdm(plan.layers.items(), desc="apply plan", unit="layer",
                                 disable=None if progress else True):
                linear = adapter.get_module(name)
                assert isinstance(linear, nn.Linear)
                hessian = _layer_hessian(hessian_stats.get(name), kept_columns.get(name))
                module = _replacement(linear, _pruned_weight(name, linear, lp, stats_all), lp, plan, hessian,
                                      use_kernels)
                if module is not None:
                    replacements[name] = module
        for name, module in replacements.items():
            adapter.model.set_submodule(name, module)
    except BaseException:
        snapshot.restore()
        raise
    record = _record(adapter, plan, replacements)
    adapter.compression = record
    logger.info("applied plan: %d linears replaced (%d quantized)", len(replacements), len(record.quantized))
    return record


def _layer_hessian(stats: LinearInputStats | None, kept: torch.Tensor | None) -> torch.Tensor | None:
    if stats is None or stats.hessian is None:
        return None
    hessian = stats.hessian / max(stats.tokens, 1)
    if kept is not None:
        hessian = hessian[kept][:, kept]
    return hessian


def _record(adapter: DLMAdapter, plan: Plan, replacements: Mapping[str, nn.Module]) -> CompressionRecord:
    record = CompressionRecord(plan)
    for info in adapter.linears():
        record.linear_shapes[info.name] = (info.in_features, info.out_features)
    for name in plan.layers:
        parent_name = name.rpartition(".")[0]
        parent = adapter.get_module(parent_name)
        values = {attr: int(getattr(parent, attr)) for attr in SHAPE_ATTRIBUTES if hasattr(parent, attr)}
        if values:
            record.module_attributes[parent_name] = values
    record.quantized = sorted(name for name, m in replacements.items() if isinstance(m, QuantizedLinear))
    return record
