"""Reading a finished (or running) study back: open it, list its front, export one Plan.

The run folder is the handle: it names its storage (``storage.txt``) and keeps the resolved spec.
Everything is read from JSON user attributes; nothing is unpickled. Where the front was verified
(:mod:`dlmsearch.search.verification`), a trial's ``quality`` is the full evaluator's score and its
proxy score is kept beside it (``proxy_quality``); ``--pick`` then chooses among the verified Plans.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from dlmsearch.plan import Plan
from dlmsearch.search.attributes import FIDELITY_ATTR, METRICS_ATTR, PLAN_ATTR
from dlmsearch.search.measurements import measurements
from dlmsearch.search.pareto import PickError, feasible_front, is_feasible, parse_pick, pick_trial
from dlmsearch.search.spec import OBJECTIVES
from dlmsearch.search.storage import open_storage, resolve_pointer
from dlmsearch.search.verification import Verification, verifications

#: Metrics a front row shows and a ``--pick`` expression may name.
PICK_METRICS: tuple[str, ...] = (*OBJECTIVES, "latency_per_step_ms")


#: Below this share of the dense model's distinct 4-grams (``distinct4_ratio``, measured by the evaluator
#: that scored the trial) generated text has collapsed into whitespace or prompt echo: the dense model
#: itself keeps 0.33 of them at 16 steps for 64 characters, where it prints the prompt and spaces.
DEGENERATE_DISTINCT4_RATIO = 0.5
#: Above this share of prompted rows collapsing one by one (``collapsed_rows``) beyond the dense model's at
#: one token per step (``dense_collapsed_rows``), a Plan's text has collapsed where the pooled ratio cannot
#: see it: 24 steps for 64 characters collapse 12 of the embedded model's 16 rows (dense: 3) at a pooled
#: ratio of 0.94.
DEGENERATE_COLLAPSED_EXCESS = 0.25
#: What an export error says is allowed.
NOT_DEGENERATE = (f"distinct4_ratio >= {DEGENERATE_DISTINCT4_RATIO} and collapsed_rows at most "
                  f"{DEGENERATE_COLLAPSED_EXCESS} above the dense model's")


class DegenerateTextError(ValueError):
    """The chosen trial's Plan generates collapsed text; exporting it needs ``force``."""


def degeneracy(trial: FrozenTrial, verified: Verification | None = None) -> str | None:
    """Why ``trial``'s Plan counts as degenerate, or None: measured by the full evaluator when it was
    ``verified``, else by the evaluator that scored the trial, its ``distinct4_ratio`` is below
    :data:`DEGENERATE_DISTINCT4_RATIO` or its ``collapsed_rows`` exceed the dense model's by more than
    :data:`DEGENERATE_COLLAPSED_EXCESS`."""
    measured = verified.metrics if verified is not None else trial.user_attrs.get(METRICS_ATTR, {})
    ratio = measured.get("distinct4_ratio")
    if ratio is not None and ratio < DEGENERATE_DISTINCT4_RATIO:
        return (f"distinct4_ratio {ratio:.3f}: its generations keep {ratio:.0%} of the dense model's distinct "
                f"4-grams (below {DEGENERATE_DISTINCT4_RATIO} the text has collapsed into whitespace or prompt echo)")
    collapsed, dense = measured.get("collapsed_rows"), measured.get("dense_collapsed_rows", 0.0)
    if collapsed is not None and collapsed - dense > DEGENERATE_COLLAPSED_EXCESS:
        return (f"collapsed_rows {collapsed:.3f}: {collapsed:.0%} of its prompted generations collapsed into "
                f"whitespace or repetition, the dense model's {dense:.0%} (more than "
                f"{DEGENERATE_COLLAPSED_EXCESS:.0%} above the dense model's is degenerate)")
    return None


class RunFolderError(ValueError):
    """A folder that is not a run folder (no storage to read)."""


def open_study(run_dir: str | Path | None = None, storage: str | None = None, study_name: str | None = None
               ) -> optuna.Study:
    """The study of a run folder, or of ``storage`` + ``study_name``."""
    if run_dir is not None:
        folder = Path(run_dir)
        pointer = folder / "storage.txt"
        if not pointer.is_file():
            raise RunFolderError(f"{folder}: not a run folder (no storage.txt); allowed: a folder written by "
                                 "`dlmsearch run SPEC --out DIR`, or --storage URL --study NAME")
        storage = storage or resolve_pointer(pointer.read_text().strip(), folder)
        if study_name is None:
            import yaml

            study_name = yaml.safe_load((folder / "spec.yaml").read_text())["study"]
    if storage is None or study_name is None:
        raise RunFolderError("give a run folder, or both --storage URL and --study NAME")
    try:
        return optuna.load_study(study_name=study_name, storage=open_storage(storage))
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(open_storage(storage))]
        raise RunFolderError(f"study {study_name!r} is not in {storage}; allowed: {', '.join(names) or '(none)'}"
                             ) from None


@dataclass(frozen=True)
class FrontRow:
    """One trial as the front table shows it; ``metrics["quality"]`` is the verified score when
    ``verified`` (the proxy's is then ``proxy_quality``); ``degenerate`` says why export refuses its text
    (:func:`degeneracy`), or None; ``measured_speedup``: the dense model's time over the Plan's where
    ``dlmsearch measure`` timed it (:mod:`dlmsearch.search.measurements`), else None."""

    number: int
    metrics: dict[str, float]
    feasible: bool
    fidelity: str
    summary: str
    verified: bool = False
    proxy_quality: float | None = None
    degenerate: str | None = None
    measured_speedup: float | None = None


def plan_of(trial: FrozenTrial) -> Plan:
    """The Plan a trial stored (validated on the way in)."""
    data = trial.user_attrs.get(PLAN_ATTR)
    if data is None:
        raise ValueError(f"trial {trial.number} stored no Plan (state {trial.state.name})")
    return Plan.from_dict(data, source=f"trial {trial.number}")


def plan_summary(plan: Plan) -> str:
    """One line: steps, blocks, mean weight bits per timestep group, mean sparsity."""
    layers = list(plan.layers.values())
    groups = plan.num_timestep_groups
    if layers:
        bits = "/".join(f"{sum(lp.weight_bits[g] for lp in layers) / len(layers):.1f}" for g in range(groups))
        sparsity = sum(lp.sparsity for lp in layers) / len(layers)
    else:
        bits, sparsity = "/".join(["16.0"] * groups), 0.0
    return (f"steps {plan.sampler.steps}, block {plan.sampler.block_length}, weight bits {bits}, "
            f"sparsity {sparsity:.2f}")


def trial_row(trial: FrozenTrial, verified: Verification | None = None) -> FrontRow:
    """A trial's row (metrics from its user attributes; quality from its verification when given)."""
    metrics = {k: float(v) for k, v in trial.user_attrs.get(METRICS_ATTR, {}).items() if k in PICK_METRICS}
    proxy = metrics.get("quality")
    if verified is not None:
        metrics["quality"] = verified.quality
    return FrontRow(trial.number, metrics, is_feasible(trial), str(trial.user_attrs.get(FIDELITY_ATTR, "")),
                    plan_summary(plan_of(trial)), verified is not None, proxy, degeneracy(trial, verified))


def front_rows(study: optuna.Study) -> list[FrontRow]:
    """The feasible front, verified Plans first, each part sorted by quality."""
    checked, timed = verifications(study), measurements(study)
    rows = [dataclasses.replace(trial_row(t, checked.get(t.number)), measured_speedup=timed[t.number].check.speedup
                                if t.number in timed else None)
            for t in feasible_front(study.get_trials(deepcopy=False))]
    return sorted(rows, key=lambda r: (not r.verified, r.metrics.get("quality", 0.0), r.number))


def write_pareto_json(study: optuna.Study, path: str | Path) -> Path:
    """The feasible front as JSON: trial number, metrics, fidelity, whether its quality was verified (and
    the proxy's beside it), Plan summary and the Plan."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    data = [{"trial": row.number, "metrics": row.metrics, "fidelity": row.fidelity, "verified": row.verified,
             "proxy_quality": row.proxy_quality, "degenerate": row.degenerate,
             "measured_speedup": row.measured_speedup, "summary": row.summary,
             PLAN_ATTR: trials[row.number].user_attrs[PLAN_ATTR]} for row in front_rows(study)]
    out = Path(path)
    out.write_text(json.dumps({"study": study.study_name, "objectives": study.metric_names, "front": data},
                              indent=1))
    return out


def select_trial(study: optuna.Study, number: int | None = None, pick: str | None = None,
                 force: bool = False) -> FrozenTrial:
    """The trial ``number``, or the feasible trial the ``pick`` expression selects among those that are
    not degenerate (:func:`degeneracy`; with ``force``, among all). Where the front was verified the
    pick chooses among the front's verified Plans by their verified quality (the proxy's and the full
    evaluator's scores are on different scales), and among all feasible Plans by the proxy's only when
    no verified Plan meets its conditions."""
    if (number is None) == (pick is None):
        raise ValueError("give exactly one of --trial N and --pick EXPRESSION")
    if number is not None:
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        if number not in trials or trials[number].state != TrialState.COMPLETE:
            done = sorted(n for n, t in trials.items() if t.state == TrialState.COMPLETE)
            raise ValueError(f"--trial: {number} is not allowed; allowed: a COMPLETE trial number "
                             f"({_ranges(done)})")
        return trials[number]
    assert pick is not None
    expression = parse_pick(pick, PICK_METRICS)
    checked = verifications(study)
    feasible = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if is_feasible(t) and (force or degeneracy(t, checked.get(t.number)) is None)]
    if not feasible:
        raise DegenerateTextError(f"no feasible trial whose generations keep their variety ({NOT_DEGENERATE}); "
                                  "allowed: a larger budget or more steps, or --force to pick among degenerate Plans")
    front = {t.number for t in feasible_front(study.get_trials(deepcopy=False))}
    verified = [t for t in feasible if t.number in checked and t.number in front]  # what `pareto` shows verified
    if verified:
        rows: list[dict[str, Any]] = [trial_row(t, checked[t.number]).metrics for t in verified]
        try:
            return verified[pick_trial(rows, expression)]
        except PickError:
            pass  # no verified Plan meets the conditions: the proxy decides among all of them
    return feasible[pick_trial([trial_row(t).metrics for t in feasible], expression)]


def quality_note(study: optuna.Study, trial: FrozenTrial) -> str:
    """``quality X (full evaluator, verified; proxy Y)`` or ``quality Y (proxy)`` for ``trial``."""
    proxy = float(trial.user_attrs.get(METRICS_ATTR, {}).get("quality", float("nan")))
    verified = verifications(study).get(trial.number)
    if verified is None:
        return f"quality {proxy:.4f} (proxy)"
    return f"quality {verified.quality:.4f} (full evaluator, verified; proxy {proxy:.4f})"


def _ranges(numbers: list[int]) -> str:
    if not numbers:
        return "none yet"
    return f"{len(numbers)} trials between {numbers[0]} and {numbers[-1]}"


def export_plan(study: optuna.Study, path: str | Path, number: int | None = None, pick: str | None = None,
                force: bool = False) -> tuple[FrozenTrial, Path]:
    """Write the chosen trial's Plan as JSON; returns the trial and the path. A degenerate Plan
    (:func:`degeneracy`) raises :class:`DegenerateTextError` naming the figure, unless ``force``."""
    trial = select_trial(study, number, pick, force)
    reason = degeneracy(trial, verifications(study).get(trial.number))
    if reason is not None and not force:
        raise DegenerateTextError(f"trial {trial.number} is not exported: {reason}; allowed: another trial, "
                                  "or --force to export it anyway")
    return trial, plan_of(trial).save(path)
