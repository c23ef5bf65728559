"""The sensitivity-table integer program: a non-black-box baseline and the search's warm starts.

As in HAWQ-V3 and ModelOpt's AutoQuantize: pick one weight bit-width per layer group to minimise
the summed sensitivity (the proxy KL of compressing that group alone, from
:func:`~dlmsearch.evaluators.sensitivity_table`) subject to an additive cost budget::

    min  sum_g sum_b  kl[g, b] * x[g, b]
    s.t. sum_b x[g, b] = 1                                   for every group g
         sum_g sum_b (cost[g, b] - cost[g, 16]) * x[g, b] <= budget - cost(dense)
         x binary

``cost[g, b]`` is the analytic cost of the Plan with group ``g`` alone at ``b`` bits, so the
constraint is exact for memory and for latency whenever layer times add up (they do in the
roofline model). Solved with scipy's HiGHS MILP for several budgets and step counts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from dlmsearch.evaluators.sensitivity import SensitivityTable
from dlmsearch.models.grouping import LayerGroup
from dlmsearch.plan import Plan
from dlmsearch.spaces.space import SearchSpace

logger = logging.getLogger("dlmsearch.search.baselines")

DENSE_BITS = 16


@dataclass(frozen=True)
class IntegerProgramSolution:
    """One solution: bits per layer group, its parameters, and what the program predicted."""

    bits: dict[str, int]
    params: dict[str, Any]
    steps: int
    budget: float
    predicted_cost: float
    predicted_kl: float


def group_sensitivity(table: SensitivityTable, group: LayerGroup, bits: int) -> float | None:
    """KL of ``group`` at ``bits`` from the table's rows (a block's attention or MLP linears) that share
    linears with the group, summed; ``None`` when such a row has no entry for ``bits``."""
    if bits == DENSE_BITS:
        return 0.0
    modules = set(group.modules)
    total = 0.0
    for row, members in table.layer_groups.items():
        if modules.isdisjoint(members):
            continue
        entry = table.layers.get(row, {}).get(f"w{bits}")
        if entry is None:
            return None
        total += max(0.0, entry)
    return total


def solve_integer_program(space: SearchSpace, table: SensitivityTable, cost_of: Callable[[Plan], float],
                          budgets: Sequence[float], steps: int) -> list[IntegerProgramSolution]:
    """Solve the program (module docstring) at each budget for Plans with ``steps`` steps.

    ``cost_of`` is the cost being budgeted (e.g. analytic latency in ms). Budgets below the
    cheapest assignment have no solution and are skipped.
    """
    if space.space.layer_grouping == "per_layer":
        logger.info("no integer-program warm start for per_layer grouping (the table is per block and role)")
        return []
    groups = space.groups
    options: list[tuple[int, int, float]] = []  # (group index, bits, kl)
    for gi, group in enumerate(groups):
        for b in space.weight_bits:
            kl = group_sensitivity(table, group, b)
            if kl is not None:
                options.append((gi, b, kl))
    dense_params = space.preset_params(DENSE_BITS, steps=steps) if DENSE_BITS in space.weight_bits else None
    if dense_params is None:
        logger.info("no integer-program warm start: 16-bit weights are not in the space")
        return []
    base = cost_of(space.plan_from_params(dense_params))
    delta = np.array([_group_cost(space, groups[gi], bits, steps, cost_of) - base for gi, bits, _ in options])
    sensitivity = np.array([o[2] for o in options])
    one_hot = np.zeros((len(groups), len(options)))
    for j, (gi, _, _) in enumerate(options):
        one_hot[gi, j] = 1.0
    solutions = []
    for budget in budgets:
        constraints = [LinearConstraint(one_hot, 1, 1), LinearConstraint(delta[None, :], -np.inf, budget - base)]
        result = milp(sensitivity, constraints=constraints, integrality=np.ones(len(options)), bounds=Bounds(0, 1))
        if result.status != 0 or result.x is None:
            continue
        chosen = [options[j] for j in np.flatnonzero(result.x > 0.5)]
        assignment = {groups[gi].name: b for gi, b, _ in chosen}
        params = space.preset_params(assignment, steps=steps)
        if params is None:
            continue
        solutions.append(IntegerProgramSolution(assignment, params, steps, float(budget),
                                                float(base + delta[result.x > 0.5].sum()), float(result.fun)))
    return solutions


def _group_cost(space: SearchSpace, group: LayerGroup, bits: int, steps: int,
                cost_of: Callable[[Plan], float]) -> float:
    assignment = {g.name: (bits if g.name == group.name else DENSE_BITS) for g in space.groups}
    params = space.preset_params(assignment, steps=steps)
    assert params is not None  # every bit-width in the table loop is in the space
    return cost_of(space.plan_from_params(params))


def budget_grid(low: float, high: float, count: int) -> list[float]:
    """``count`` budgets spread between the cheapest and the dense cost (both ends excluded)."""
    return [low + (high - low) * (i + 1) / (count + 1) for i in range(count)]
