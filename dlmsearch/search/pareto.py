"""The feasible Pareto front of a study, its hypervolume, and picking one trial from it.

Every objective is minimised. Optuna's ``study.best_trials`` may include infeasible trials, so the
front here is computed from COMPLETE trials whose constraints are all <= 0. Hypervolume is taken
in normalised space: each objective is divided by its reference value (1.1 x the study's dense Plan
cost for latency / memory, ``quality_reference`` for quality) and the reference point is (1, ..., 1),
so a study's hypervolume lies in [0, 1] and compares across samplers and seeds.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from optuna.trial import FrozenTrial, TrialState


def is_feasible(trial: FrozenTrial) -> bool:
    """True when every constraint of ``trial`` is <= 0 (a trial without constraints is feasible)."""
    return all(value <= 0 for value in trial.constraints.values())


def pareto_mask(values: np.ndarray) -> np.ndarray:
    """Rows of ``values`` (N, k), all minimised, that no other row dominates (duplicates all kept)."""
    n = len(values)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        dominated = np.all(values <= values[i], axis=1) & np.any(values < values[i], axis=1)
        keep[i] = not dominated.any()
    return keep


def feasible_front(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The feasible COMPLETE trials no other feasible trial dominates, in number order."""
    feasible = [t for t in trials if t.state == TrialState.COMPLETE and is_feasible(t) and t.values is not None]
    if not feasible:
        return []
    mask = pareto_mask(np.array([t.values for t in feasible], dtype=float))
    return [t for t, keep in zip(feasible, mask, strict=True) if keep]


def hypervolume(points: np.ndarray, reference: Sequence[float]) -> float:
    """Hypervolume dominated by ``points`` (N, k) up to the box ``[0, reference]``, divided by its
    volume, so the result is in [0, 1]. Exact, by recursive slicing (fine for fronts of hundreds)."""
    ref = np.asarray(reference, dtype=float)
    if len(points) == 0:
        return 0.0
    scaled = np.asarray(points, dtype=float) / ref
    inside = scaled[np.all(scaled < 1.0, axis=1)]
    if len(inside) == 0:
        return 0.0
    return _hv(np.maximum(inside, 0.0), np.ones(scaled.shape[1]))


def _hv(points: np.ndarray, ref: np.ndarray) -> float:
    if points.shape[1] == 1:
        return float(ref[0] - points[:, 0].min())
    points = points[pareto_mask(points)]
    order = np.argsort(points[:, -1])
    points = points[order]
    volume = 0.0
    for i, point in enumerate(points):
        upper = points[i + 1, -1] if i + 1 < len(points) else ref[-1]
        depth = upper - point[-1]
        if depth > 0:
            volume += depth * _hv(points[: i + 1, :-1], ref[:-1])
    return volume


def front_hypervolume(trials: Sequence[FrozenTrial], reference: Sequence[float]) -> float:
    """Normalised hypervolume of the feasible front of ``trials``."""
    front = feasible_front(trials)
    return hypervolume(np.array([t.values for t in front], dtype=float), reference) if front else 0.0


def hypervolume_history(trials: Sequence[FrozenTrial], reference: Sequence[float]) -> list[tuple[int, float]]:
    """``(trial number, hypervolume of the feasible front up to it)`` for every COMPLETE trial."""
    done = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.number)
    history = []
    front: list[FrozenTrial] = []
    for trial in done:
        front = feasible_front([*front, trial])
        history.append((trial.number, hypervolume(np.array([t.values for t in front], dtype=float), reference)
                        if front else 0.0))
    return history


# ---------------------------------------------------------------- picking one trial


class PickError(ValueError):
    """A ``--pick`` expression that cannot be parsed or that no feasible trial satisfies."""


_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt, "==": operator.eq}
_PICK = re.compile(r"^\s*(min|max)\s+([a-z_]+)\s*(?:where\s+(.+))?$")
_CONDITION = re.compile(r"^\s*([a-z_]+)\s*(<=|>=|==|<|>)\s*([0-9.eE+-]+)\s*$")


@dataclass(frozen=True)
class Pick:
    """A parsed pick expression: optimise ``metric`` in ``sense`` subject to ``conditions``."""

    sense: str
    metric: str
    conditions: tuple[tuple[str, str, float], ...]


def parse_pick(expression: str, metrics: Sequence[str]) -> Pick:
    """Parse ``"min quality where latency_ms <= 400 and peak_mem_bytes < 2e9"`` (``max quality``
    is accepted as a synonym of ``min quality``: quality is a loss, so the best is the smallest)."""
    allowed = (f"'min|max METRIC [where METRIC OP NUMBER [and ...]]' with METRIC in {', '.join(metrics)} "
               "and OP in <=, <, >=, >, ==")
    match = _PICK.match(expression)
    if not match:
        raise PickError(f"--pick: {expression!r} is not allowed; allowed: {allowed}")
    sense, metric, where = match.groups()
    if metric not in metrics:
        raise PickError(f"--pick: metric {metric!r} is not allowed; allowed: {', '.join(metrics)}")
    if metric == "quality":
        sense = "min"
    conditions = []
    for part in re.split(r"\s+and\s+", where) if where else []:
        cond = _CONDITION.match(part)
        if not cond or cond.group(1) not in metrics:
            raise PickError(f"--pick: condition {part!r} is not allowed; allowed: {allowed}")
        try:
            conditions.append((cond.group(1), cond.group(2), float(cond.group(3))))
        except ValueError:
            raise PickError(f"--pick: {cond.group(3)!r} in {part!r} is not a number") from None
    return Pick(sense, metric, tuple(conditions))


def pick_trial(rows: Sequence[Mapping[str, float]], pick: Pick) -> int:
    """Index in ``rows`` (one metrics mapping per feasible trial) of the row ``pick`` selects."""
    candidates = [i for i, row in enumerate(rows)
                  if all(_OPS[op](row[name], bound) for name, op, bound in pick.conditions)]
    if not candidates:
        text = " and ".join(f"{n} {op} {b:g}" for n, op, b in pick.conditions)
        raise PickError(f"--pick: no feasible trial satisfies {text}")
    sign = 1.0 if pick.sense == "min" else -1.0
    return min(candidates, key=lambda i: (sign * rows[i][pick.metric], i))
