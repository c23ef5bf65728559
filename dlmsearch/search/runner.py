"""run_study: the Optuna multi-objective search of one study spec, resumable, in a run folder.

Per trial, cheap before expensive: the space turns the trial into a Plan; the analytic cost model
prices it (microseconds) and the budget becomes Optuna constraints (``trial.set_constraint``,
feasible when <= 0); the proxy scores it at low fidelity; only a feasible Plan whose low-fidelity
score could still enter the feasible front is scored again at full fidelity (``fidelity: multi``).
Each trial stores its Plan JSON, the fidelity, the latency's provenance and the environment as
user attributes (JSON only: nothing is ever unpickled from a storage).

``n_trials`` is the study's total budget (COMPLETE trials, exact with any number of workers:
:mod:`dlmsearch.search.workers`): a second ``run`` of the same spec and folder resumes the study and
runs only the trials still missing; the trials of a killed worker become FAIL and run again. A
fresh study first runs its warm starts: the dense model, uniform presets (W8 and W4 weight-only,
fewer steps) and the solutions of the sensitivity-table integer program (:mod:`dlmsearch.search.baselines`).
After the trials the feasible front is re-scored by the full evaluator (``verify_front``,
:mod:`dlmsearch.search.verification`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import signal
import socket
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm

from dlmsearch.evaluators import FullEvaluator, QualityResult, SensitivityTable, sensitivity_table
from dlmsearch.models.loading import load_model
from dlmsearch.plan import Plan
from dlmsearch.search import workers
from dlmsearch.search.attributes import (
    ENV_ATTR,
    ENVIRONMENT_ATTR,
    ERROR_ATTR,
    FIDELITY_ATTR,
    HARDWARE_ATTR,
    LATENCY_PROVENANCE_ATTR,
    LIMITS_ATTR,
    METRICS_ATTR,
    MODEL_ATTR,
    PLAN_ATTR,
    REFERENCE_ATTR,
    SENSITIVITY_ATTR,
    SPEC_ATTR,
    WARM_START_TRIAL_ATTR,
)
from dlmsearch.search.baselines import IntegerProgramSolution, budget_grid, solve_integer_program
from dlmsearch.search.context import StudyContext, build_context, build_full_evaluator
from dlmsearch.search.isolation import EvaluatorProcessError, IsolatedEvaluator
from dlmsearch.search.pareto import feasible_front, front_hypervolume, is_feasible
from dlmsearch.search.samplers import make_sampler, seed_for_trial
from dlmsearch.search.spec import StudySpec
from dlmsearch.search.storage import (
    batched_trial_writes,
    check_workers,
    default_journal,
    open_storage,
    storage_pointer,
)
from dlmsearch.search.verification import VerificationSummary, verify_front

logger = logging.getLogger("dlmsearch.search.runner")

#: A low-fidelity score this many times worse than a front member that costs no more is not rescored.
LOW_FIDELITY_SLACK = 2.0
MAX_CONSECUTIVE_FAILURES = 5
#: Spec fields that define the study; resuming with a different value would mix two searches.
IDENTITY_FIELDS = ("model", "hardware", "budget", "objectives", "space", "generation", "evaluator")


class TrialValueError(ValueError):
    """An objective came back NaN, infinite or missing; the message names it."""


class RunInterrupted(Exception):
    """SIGTERM or Ctrl-C during a run: the running trial was marked FAIL before this was raised."""


class StudyMismatchError(ValueError):
    """A study of this name exists in the storage with a different spec."""


@dataclass
class RunSummary:
    """What a run leaves: the study, its feasible front and hypervolume, the run folder, the front's
    verification."""

    study: optuna.Study
    front: list[FrozenTrial]
    hypervolume: float
    run_dir: Path
    verification: VerificationSummary | None = None  # None when the spec's verify_front is 0


def environment() -> dict[str, str]:
    """Where a trial ran (kept on every trial)."""
    import transformers

    from dlmsearch import __version__
    from dlmsearch.cost_models.profile import device_fingerprint

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return {"host": socket.gethostname(), "pid": str(os.getpid()), "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__, "optuna": optuna.__version__,
            "dlmsearch": __version__, "threads": str(torch.get_num_threads()), "device": device_fingerprint(device)}


# ---------------------------------------------------------------- one trial


class TrialObjective:
    """Scores one trial: Plan, cost, constraints, quality (see the module docstring)."""

    def __init__(self, context: StudyContext, study: optuna.Study, limits: dict[str, float]) -> None:
        self.context = context
        self.study = study
        self.limits = limits
        self.env = environment()

    def __call__(self, trial: optuna.Trial) -> list[float]:
        ctx = self.context
        spec = ctx.spec
        storage = self.study._storage
        with batched_trial_writes(storage):  # one journal append for these, not one each
            plan = ctx.space.suggest(trial)
            trial.set_user_attr(PLAN_ATTR, plan.to_dict())
            trial.set_user_attr(ENV_ATTR, self.env)
            cost = ctx.cost_model.cost(plan, ctx.hardware)
            metrics: dict[str, float] = {"latency_ms": cost.latency_ms, "peak_mem_bytes": float(cost.peak_mem_bytes),
                                         "latency_per_step_ms": cost.latency_ms / plan.sampler.steps}
            trial.set_user_attr(LATENCY_PROVENANCE_ATTR, cost.provenance)
            trial.set_user_attr(HARDWARE_ATTR, ctx.hardware.name)
            for name, limit in self.limits.items():
                trial.set_constraint(name, metrics[name] - limit)
        feasible = all(metrics[name] <= limit for name, limit in self.limits.items())
        quality = self.quality(plan, metrics, feasible)
        metrics["quality"] = quality.score
        with batched_trial_writes(storage):
            trial.set_user_attr(FIDELITY_ATTR, quality.fidelity)
            trial.set_user_attr(METRICS_ATTR, {k: float(v) for k, v in {**metrics, **quality.metrics}.items()})
        return checked_values(spec.objectives, metrics)

    def quality(self, plan: Plan, metrics: dict[str, float], feasible: bool) -> QualityResult:
        """Proxy score at the fidelity the spec and the current front call for."""
        fidelity = self.context.spec.evaluator.fidelity
        evaluator = self.context.evaluator
        if fidelity != "multi":
            return evaluator.evaluate(plan, fidelity)
        low = evaluator.evaluate(plan, "low")
        if not feasible or not self.could_enter_front(low.score, metrics):
            return low
        return evaluator.evaluate(plan, "full")

    def could_enter_front(self, low_score: float, metrics: dict[str, float]) -> bool:
        """False when a feasible front member costs no more and scores ``LOW_FIDELITY_SLACK`` times better."""
        costs = [name for name in self.context.spec.objectives if name != "quality"]
        index = list(self.context.spec.objectives).index("quality") if "quality" in self.context.spec.objectives else 0
        for trial in feasible_front(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))):
            cheaper = all(trial.user_attrs.get(METRICS_ATTR, {}).get(name, math.inf) <= metrics[name] for name in costs)
            if cheaper and trial.values[index] * LOW_FIDELITY_SLACK < low_score:
                return False
        return True


def checked_values(objectives: Sequence[str], metrics: dict[str, float]) -> list[float]:
    """The objective values in order; a missing, NaN or infinite one raises :class:`TrialValueError`."""
    values = []
    for name in objectives:
        value = metrics.get(name)
        if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise TrialValueError(f"objective {name!r} is {value!r}; allowed: a finite number")
        values.append(float(value))
    return values


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into :class:`RunInterrupted` (main thread only) so the running trial ends FAIL."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise RunInterrupted(f"received signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise ``TimeoutError`` in the main thread after ``seconds`` (no-op without a limit or off the
    main thread, where signals cannot be delivered)."""
    import threading

    if not seconds or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGALRM"):
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"the trial ran past trial_timeout_s={seconds:g}")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ---------------------------------------------------------------- the study


def create_or_load_study(spec: StudySpec, storage: optuna.storages.BaseStorage,
                         sampler: optuna.samplers.BaseSampler | None = None, model_fingerprint: str | None = None,
                         force: bool = False) -> optuna.Study:
    """Create the study, or load it when it exists with the same identity fields and model
    fingerprint (else refuse, unless ``force``: then warn and go on)."""
    with workers.quiet_optuna():  # the CLI says what it runs
        study = optuna.create_study(storage=storage, study_name=spec.study, sampler=sampler,
                                    directions=["minimize"] * len(spec.objectives), load_if_exists=True)
    stored = study.user_attrs.get(SPEC_ATTR)
    current = json.loads(json.dumps(spec.to_dict()))
    if stored is None:
        study.set_user_attr(SPEC_ATTR, current)
        if model_fingerprint is not None:
            study.set_user_attr(MODEL_ATTR, model_fingerprint)
        study.set_user_attr(ENVIRONMENT_ATTR, environment())
        with warnings.catch_warnings():  # experimental since Optuna 3.2, stable in practice
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(spec.objectives))
        return study
    changed = [key for key in IDENTITY_FIELDS if stored.get(key) != current.get(key)]
    stored_model = study.user_attrs.get(MODEL_ATTR)
    if model_fingerprint is not None and stored_model is not None and stored_model != model_fingerprint:
        changed.append(f"model fingerprint ({stored_model} -> {model_fingerprint})")
    if changed and force:
        logger.warning("resuming study %r although its %s changed (--force): its trials now mix two searches",
                       spec.study, ", ".join(changed))
    elif changed:
        raise StudyMismatchError(f"study {spec.study!r} already exists in this storage with different "
                                 f"{', '.join(changed)}; allowed: the same spec and model to resume it, a new study "
                                 "name (field `study`) or run folder, or --force to resume anyway")
    return study


def enqueue_warm_starts(study: optuna.Study, context: StudyContext, limit: int) -> int:
    """Enqueue the dense model, uniform presets and integer-program solutions (at most ``limit``)."""
    space, spec = context.space, context.spec
    steps = sorted(spec.space.steps)
    presets = [space.preset_params(16, steps=steps[-1]), space.preset_params(8, steps=steps[-1]),
               space.preset_params(4, steps=steps[-1]), space.preset_params(8, steps=steps[len(steps) // 2]),
               space.preset_params(4, steps=steps[0])]
    candidates = [p for p in presets if p is not None]
    solutions, table = integer_program_solutions(context)
    if table is not None:
        study.set_user_attr(SENSITIVITY_ATTR, table.layers)
    candidates += [s.params for s in solutions]
    seen: list[dict[str, Any]] = []
    for params in candidates:
        if params not in seen and len(seen) < limit:
            seen.append(params)
            study.enqueue_trial(params, user_attrs={WARM_START_TRIAL_ATTR: True}, skip_if_exists=True)
    return len(seen)


def integer_program_solutions(context: StudyContext, budgets: int = 3
                              ) -> tuple[list[IntegerProgramSolution], SensitivityTable | None]:
    """Sensitivity-table integer-program solutions for a few budgets of the first cost objective."""
    spec = context.spec
    cost_name = next((o for o in spec.objectives if o != "quality"), "latency_ms")
    limits = spec.budget.limits(context.dense_cost())

    def cost_of(plan: Plan) -> float:
        result = context.cost_model.cost(plan, context.hardware)
        return result.latency_ms if cost_name == "latency_ms" else float(result.peak_mem_bytes)

    bits = tuple(b for b in context.space.weight_bits if b < 16)
    groups = max(2, spec.space.timestep_groups)
    try:
        if isinstance(context.evaluator, IsolatedEvaluator):
            table = context.evaluator.sensitivity_table(bits, groups)
        else:
            table = sensitivity_table(context.evaluator, bits=bits, timestep_groups=groups)
    except (ValueError, EvaluatorProcessError) as exc:
        logger.warning("no integer-program warm start: %s", exc)
        return [], None
    solutions = []
    for steps in sorted(spec.space.steps, reverse=True)[:2]:
        low_params = context.space.preset_params(min(context.space.weight_bits), steps=steps)
        high_params = context.space.preset_params(16, steps=steps)
        if low_params is None or high_params is None:
            continue
        low = cost_of(context.space.plan_from_params(low_params))
        high = cost_of(context.space.plan_from_params(high_params))
        grid = budget_grid(low, high, budgets)
        if cost_name in limits:
            grid.append(limits[cost_name])
        solutions += solve_integer_program(context.space, table, cost_of, grid, steps)
    return solutions, table


def run_study(spec: StudySpec, run_dir: str | Path, *, storage: str | None = None, n_trials: int | None = None,
              progress: bool = True, context: StudyContext | None = None, write_outputs: bool = True,
              shared: bool = False, force: bool = False) -> RunSummary:
    """Run (or resume) the search of ``spec`` with ``run_dir`` as its handle; returns the summary.

    ``n_trials`` overrides the spec's total budget. ``context`` reuses an already built model and
    evaluator (tests, benchmarks). ``shared``: other processes work on the same study (``dlmsearch
    worker``), which SQLite cannot take. ``force`` resumes a study whose spec or model fingerprint
    changed (refused otherwise). The folder receives the resolved spec, the journal (unless
    another storage is given), ``pareto.json`` and ``report.html``.
    """
    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.yaml").write_text(spec.to_yaml())
    storage_url = storage or spec.storage or str(default_journal(out))
    (out / "storage.txt").write_text(storage_pointer(storage_url, out) + "\n")
    check_workers(storage_url, shared=shared)  # a refused storage fails before the model loads
    own_context = context is None
    context = context or build_context(spec)
    try:
        return _run(spec, out, storage_url, n_trials, progress, context, write_outputs, shared, force)
    finally:
        if own_context and isinstance(context.evaluator, IsolatedEvaluator):
            context.evaluator.close()


def _run(spec: StudySpec, out: Path, storage_url: str, n_trials: int | None, progress: bool, context: StudyContext,
         write_outputs: bool, shared: bool, force: bool) -> RunSummary:
    sampler = make_sampler(spec.sampler, spec.seed, n_trials or spec.n_trials)
    study = create_or_load_study(spec, open_storage(storage_url, shared=shared), sampler,
                                 context.adapter.shape.fingerprint, force)
    if REFERENCE_ATTR not in study.user_attrs:  # fixed at creation: a resumed study keeps its yardsticks
        study.set_user_attr(REFERENCE_ATTR, context.reference_point())
        study.set_user_attr(LIMITS_ATTR, spec.budget.limits(context.dense_cost()))
    limits = {k: float(v) for k, v in study.user_attrs.get(LIMITS_ATTR, {}).items()}
    total = n_trials or spec.n_trials
    if spec.warm_start:  # one worker only, once per study
        limit = max(2, (total or 50) // 4)
        count = workers.claim_warm_start(study, lambda: enqueue_warm_starts(study, context, limit=limit))
        if count is not None:
            logger.info("enqueued %d warm-start Plans", count)
        else:
            workers.wait_for_warm_start(study)
    optimize(study, TrialObjective(context, study, limits), total, spec.timeout_s, spec.trial_timeout_s, progress,
             reference(study, spec.objectives), seed=spec.seed)
    verification = None
    if spec.verify_front > 0:
        verification = verify_front(study, lambda: full_evaluator(context), spec.verify_front, spec.verify_settings,
                                    progress)
    summary = RunSummary(study, feasible_front(study.get_trials(deepcopy=False)),
                         front_hypervolume(study.get_trials(deepcopy=False), reference(study, spec.objectives)), out,
                         verification)
    if write_outputs:
        from dlmsearch.reports.study_report import write_report
        from dlmsearch.search.results import write_pareto_json

        write_pareto_json(study, out / "pareto.json")
        write_report(study, out / "report.html")
    return summary


def full_evaluator(context: StudyContext) -> FullEvaluator:
    """The spec's full evaluator for front verification, on the context's model, loaded with its weights
    when the context holds only the skeleton (``isolation: process``; the proxy's child process is
    closed first, so the model is not held twice)."""
    adapter = context.adapter
    if any(p.is_meta for p in adapter.model.parameters()):
        if isinstance(context.evaluator, IsolatedEvaluator):
            context.evaluator.close()  # a later evaluation starts a fresh child
        adapter = load_model(context.spec.model, trust_remote_code=context.spec.trust_remote_code)
    return build_full_evaluator(context.spec, adapter)


def reference(study: optuna.Study, objectives: Sequence[str]) -> list[float]:
    """The study's hypervolume reference point, in objective order."""
    stored = study.user_attrs.get(REFERENCE_ATTR, {})
    return [float(stored.get(name, 1.0)) for name in objectives]


def optimize(study: optuna.Study, objective: Callable[[optuna.Trial], list[float]], n_trials: int | None,
             timeout_s: float | None, trial_timeout_s: float | None, progress: bool,
             hv_reference: Sequence[float], seed: int | None = None) -> None:
    """Ask / tell until the study holds ``n_trials`` COMPLETE trials or time runs out.

    With ``seed``, the sampler is reseeded before each ask from the number of COMPLETE trials
    (:func:`~dlmsearch.search.samplers.seed_for_trial`), so a resumed run draws what an
    uninterrupted one would.

    The budget is study-wide and exact with several workers, and the trials of dead workers are
    failed and retried (:mod:`dlmsearch.search.workers`). A trial that raises ends FAIL with its
    error in the log and the study goes on; after :data:`MAX_CONSECUTIVE_FAILURES` failures in a
    row the run stops with the last error.
    """
    start = time.monotonic()
    complete, running = workers.counts(study)
    bar = tqdm(total=n_trials, initial=min(complete, n_trials or complete), desc=f"study {study.study_name}",
               unit="trial", disable=not progress or None)
    failures = 0
    waiting_logged = False
    distributions = objective.context.space.distributions() if isinstance(objective, TrialObjective) else None
    # SIGTERM becomes RunInterrupted for the whole loop, not only inside the objective: a trial is
    # RUNNING from study.ask on, and a SIGTERM before its objective started killed the process with
    # that trial left RUNNING
    with terminate_as_interrupt(), contextlib.closing(bar):
        while True:
            workers.fail_stale_trials(study)
            complete, running = workers.counts(study)
            bar.n = min(complete, n_trials or complete)
            if n_trials is not None and complete >= n_trials:
                break
            if timeout_s is not None and time.monotonic() - start >= timeout_s:
                break
            if n_trials is not None and complete + running >= n_trials:
                if not workers.has_heartbeat(study):
                    break  # nothing would ever fail a dead process's trial: leave, as a resume will
                if not waiting_logged:
                    logger.info("budget taken: waiting for %d running trials of other workers", running)
                    waiting_logged = True
                time.sleep(min(workers.heartbeat_interval(study), 5.0))
                continue
            if seed is not None:
                seed_for_trial(study.sampler, seed, complete)
            with warnings.catch_warnings():  # the heartbeat is recorded below (workers.heartbeat)
                warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
                with batched_trial_writes(study._storage):  # the trial's parameters in one journal append
                    trial = study.ask(distributions)
            try:
                if n_trials is not None and workers.is_surplus(study, trial, n_trials):
                    workers.skip(study, trial, n_trials)
                    time.sleep(0.05)
                    continue
                workers.admit(study, trial)
                with time_limit(trial_timeout_s), workers.heartbeat(study, trial):
                    values = objective(trial)
            except (KeyboardInterrupt, SystemExit, RunInterrupted) as exc:
                tell_failed(study, trial, f"interrupted: {type(exc).__name__} {exc}")
                raise RunInterrupted(f"trial {trial.number} marked FAIL after {type(exc).__name__} {exc}; "
                                     "run the same command again to resume") from exc
            except Exception as exc:  # a trial's failure must not end the study
                failures += 1
                logger.warning("trial %d failed: %s: %s", trial.number, type(exc).__name__, exc)
                tell_failed(study, trial, f"{type(exc).__name__}: {exc}")
                if failures >= MAX_CONSECUTIVE_FAILURES:
                    raise RuntimeError(f"{failures} trials failed in a row; the last: {type(exc).__name__}: "
                                       f"{exc}") from exc
                continue
            failures = 0
            try:
                study.tell(trial, values)
            except optuna.exceptions.UpdateFinishedTrialError:
                logger.warning("trial %d was marked FAIL as stale by another worker (no heartbeat for the grace "
                               "period) and retried; its result is dropped", trial.number)
                continue
            bar.update(1)
            if bar.disable:  # no bar to show: skip re-reading the study and its front on every trial
                continue
            trials = study.get_trials(deepcopy=False)
            feasible = sum(t.state == TrialState.COMPLETE and is_feasible(t) for t in trials)
            bar.set_postfix({"feasible": feasible, "front": len(feasible_front(trials)),
                             "hv": f"{front_hypervolume(trials, hv_reference):.4f}"})


def tell_failed(study: optuna.Study, trial: optuna.Trial, error: str) -> None:
    """Tell ``trial`` FAIL with ``error`` (unless another worker already failed it as stale)."""
    try:
        trial.set_user_attr(ERROR_ATTR, error)
        study.tell(trial, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass
