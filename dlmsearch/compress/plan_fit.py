"""Does a Plan fit a concrete model? The checks made where a Plan meets one (:func:`apply_plan_`).

A Plan's own fields are checked once, when it is built or parsed (:mod:`dlmsearch.plan`); what only
a model can tell (its fingerprint, its linears' names, roles and widths) is checked here.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

from dlmsearch.models.adapters import DLMAdapter, LinearInfo
from dlmsearch.plan import STRUCTURE_ROLES, LayerPlan, Plan, PlanIssue, PlanValidationError


def plan_issues(plan: Plan, adapter: DLMAdapter) -> list[PlanIssue]:
    """Every problem of ``plan`` for ``adapter``'s model: another fingerprint, unknown modules, a
    structure on linears of the wrong role or split across its unit, a group size that does not divide
    a layer's width."""
    issues: list[PlanIssue] = []
    fingerprint = adapter.shape.fingerprint
    if plan.model.fingerprint and plan.model.fingerprint != fingerprint:
        issues.append(PlanIssue("model.fingerprint", plan.model.fingerprint,
                                f"the loaded model's fingerprint {fingerprint!r}"))
    linears = {info.name: info for info in adapter.linears()}
    for name, layer in plan.layers.items():
        path = f"layers.{name}"
        info = linears.get(name)
        if info is None:
            issues.append(PlanIssue(path, name, _name_hint(name, linears)))
            continue
        roles = STRUCTURE_ROLES.get(layer.structure)
        if roles is not None and info.role not in roles:
            issues.append(PlanIssue(f"{path}.structure", layer.structure,
                                    f"'{layer.structure}' prunes {'/'.join(sorted(roles))} linears; "
                                    f"this one is '{info.role}'"))
        elif roles is not None:
            issues.extend(_unit_issues(plan, name, layer, info.block, roles, linears))
        if layer.group_size and info.in_features % layer.group_size:
            issues.append(PlanIssue(f"{path}.group_size", layer.group_size,
                                    f"0 or a divisor of in_features={info.in_features}"))
    return issues


def check_plan_fits(plan: Plan, adapter: DLMAdapter, source: str | None = None) -> None:
    """Raise :class:`~dlmsearch.plan.PlanValidationError` listing every problem of ``plan`` for
    ``adapter``'s model (``source``, e.g. the Plan's file, heads the message)."""
    issues = plan_issues(plan, adapter)
    if issues:
        raise PlanValidationError(issues, f"{source or 'plan'} for model {adapter.name or '?'}")


def _unit_issues(plan: Plan, name: str, layer: LayerPlan, block: int, roles: frozenset[str],
                 linears: Mapping[str, LinearInfo]) -> list[PlanIssue]:
    """Structured pruning removes heads / channels from every linear of the unit at once, so the
    unit's linears must all say the same structure and ratio."""
    partners = [info.name for info in linears.values() if info.block == block and info.role in roles]
    for partner in partners:
        other = plan.layers.get(partner)
        if other is None or other.structure != layer.structure or other.sparsity != layer.sparsity:
            return [PlanIssue(f"layers.{name}.structure", layer.structure,
                              f"'{layer.structure}' with sparsity {layer.sparsity} on every one of "
                              f"{', '.join(sorted(partners))} (they are pruned together)")]
    return []


def _name_hint(name: str, known: Mapping[str, LinearInfo]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"a linear layer of the model, e.g. {next(iter(known), '-')!r}{hint}"
