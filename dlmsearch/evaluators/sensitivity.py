"""Per-layer-group and per-timestep-group sensitivity profiles, cached as a table.

A profile entry is the proxy's KL when one thing alone is compressed and everything else stays
dense: one layer group (a block's attention or MLP linears) at one setting, or every layer at
one weight bit-width in one timestep group only. The search uses the table for warm starts (an
integer program over per-group choices) and the reports plot it. Entries are low-fidelity proxy
KL values (nats per masked token); the table is cached as JSON keyed by the model digest and the
evaluator's settings, so a second run is free.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from tqdm import tqdm

from dlmsearch.data.cache import cache_dir
from dlmsearch.evaluators.proxy import REFERENCE_VERSION, ProxyEvaluator
from dlmsearch.evaluators.reference import cache_key
from dlmsearch.models.grouping import layer_groups
from dlmsearch.plan import LayerPlan, ModelRef, Plan, SamplerSettings

DEFAULT_BITS: tuple[int, ...] = (2, 3, 4, 8)
DEFAULT_SPARSITIES: tuple[float, ...] = (0.25, 0.5)


@dataclass(frozen=True)
class SensitivityTable:
    """``layers[group][setting]`` and ``timesteps[group][bits]``: proxy KL of compressing that alone."""

    layer_groups: dict[str, list[str]]  # group name -> module names
    layers: dict[str, dict[str, float]] = field(default_factory=dict)
    timesteps: dict[str, dict[str, float]] = field(default_factory=dict)
    timestep_boundaries: tuple[float, ...] = ()

    def to_json(self) -> str:
        """JSON text of the table."""
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> SensitivityTable:
        """Inverse of :meth:`to_json`."""
        data = json.loads(text)
        return cls(data["layer_groups"], data["layers"], data["timesteps"], tuple(data["timestep_boundaries"]))


def block_role_groups(evaluator: ProxyEvaluator) -> dict[str, list[str]]:
    """Layer groups ``block<i>.attn`` / ``block<i>.mlp`` of the evaluator's model."""
    return {group.name: list(group.modules) for group in layer_groups(evaluator.dense.linears(), "block_role")}


def _plan(evaluator: ProxyEvaluator, layers: dict[str, LayerPlan], boundaries: tuple[float, ...]) -> Plan:
    adapter = evaluator.dense
    sampler = SamplerSettings(steps=32, gen_length=32, block_length=32)
    return Plan(ModelRef(adapter.name, adapter.shape.fingerprint), sampler, boundaries, "nested", layers)


def sensitivity_table(evaluator: ProxyEvaluator, bits: Sequence[int] = DEFAULT_BITS,
                      sparsities: Sequence[float] = DEFAULT_SPARSITIES, timestep_groups: int = 3,
                      prune_method: str = "wanda", group_size: int = 64) -> SensitivityTable:
    """Measure (or read from the cache) the sensitivity table of ``evaluator``'s model."""
    groups = block_role_groups(evaluator)
    boundaries = tuple(round(i / timestep_groups, 6) for i in range(1, timestep_groups))
    spec = {"kind": "sensitivity", "bits": list(bits), "sparsities": list(sparsities),
            "timestep_groups": timestep_groups, "prune_method": prune_method, "group_size": group_size,
            "proxy": dataclasses.asdict(evaluator.settings), "proxy_version": REFERENCE_VERSION}
    path = cache_dir() / "sensitivity" / f"{cache_key(evaluator.model_digest, spec)}.json"
    if path.is_file():
        return SensitivityTable.from_json(path.read_text())
    table = SensitivityTable(groups, timestep_boundaries=boundaries)
    dense_bits = (16,) * timestep_groups
    settings = [(f"w{b}", LayerPlan((b,) * timestep_groups, dense_bits, group_size=group_size)) for b in bits]
    settings += [(f"s{s:g}", LayerPlan(dense_bits, dense_bits, sparsity=s, prune_method=prune_method,
                                       group_size=group_size)) for s in sparsities]
    for group, names in tqdm(groups.items(), desc="sensitivity: layer groups", unit="group", disable=None):
        table.layers[group] = {label: evaluator.masked_kl_of(_plan(evaluator, dict.fromkeys(names, lp), boundaries))
                               for label, lp in settings}
    all_names = [info.name for info in evaluator.dense.linears()]
    for index in tqdm(range(timestep_groups), desc="sensitivity: timestep groups", disable=None):
        table.timesteps[f"t{index}"] = {}
        for b in bits:
            per_group = tuple(b if g == index else 16 for g in range(timestep_groups))
            layer = LayerPlan(per_group, dense_bits, group_size=group_size)
            plan = _plan(evaluator, dict.fromkeys(all_names, layer), boundaries)
            table.timesteps[f"t{index}"][f"w{b}"] = evaluator.masked_kl_of(plan)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial")  # atomic and race-free across workers
    partial.write_text(table.to_json())
    partial.replace(path)
    return table
