"""Checking a Plan for real: applied to the model, timed against the dense model side by side on this
machine, scored by the full evaluator, and made to write text.

This is what ``dlmsearch measure`` and the end of ``dlmsearch demo`` run and
``bench/quickstart_validation.py`` reports: the search's predictions (analytic latency, proxy quality)
are only trusted once the Plan itself has been measured. :func:`measure_trial` measures one trial of a
study and returns a :class:`~dlmsearch.search.measurements.Measurement` to keep beside it.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence

import optuna
import torch

from dlmsearch.compress import CalibrationSet, apply_plan_
from dlmsearch.cost_models.measured import generate_call, time_call
from dlmsearch.evaluators import FullEvaluator, FullSettings, QualityResult
from dlmsearch.models.adapters import DLMAdapter
from dlmsearch.models.sampler import generate
from dlmsearch.plan import Plan, uniform_plan
from dlmsearch.search.attributes import METRICS_ATTR, REFERENCE_ATTR, SPEC_ATTR
from dlmsearch.search.context import REFERENCE_MARGIN
from dlmsearch.search.measurements import BudgetCheck, Measurement, PlanValidation
from dlmsearch.search.results import plan_of
from dlmsearch.search.spec import Budget, spec_from_dict
from dlmsearch.search.verification import verifications

#: The full evaluator of a validation: the package's, one draw (one Plan is checked, not ranked).
VALIDATION_FULL = FullSettings(draws=1)
#: Timed rounds of each model: on a 2-core machine one pair of ``generate`` calls comes out 1.9-2.6x for
#: a Plan whose median is 2.3x, so a median of 5 could still miss by 10%.
VALIDATION_ROUNDS = 9


def validate_plan(adapter: DLMAdapter, plan: Plan, dense_plan: Plan, prompts: Sequence[str], prompt_length: int,
                  repeats: int = VALIDATION_ROUNDS, calibration: CalibrationSet | None = None,
                  settings: FullSettings = VALIDATION_FULL, scored: QualityResult | None = None) -> PlanValidation:
    """Measure ``plan`` against ``dense_plan`` on ``adapter`` (never changed): ``repeats`` timings of each,
    in rounds that alternate which model runs first (dense-plan, plan-dense, ...) so that drift of the
    machine hits both alike, the full evaluator's score of both, and a generation of each from every one
    of ``prompts`` (of one length, generated as a batch). ``scored``: the Plan's full-evaluator result
    under ``settings`` when it is known already (the front's verification), instead of scoring it again."""
    compressed = copy.deepcopy(adapter)
    apply_plan_(compressed, plan, calibration)
    runs = {"dense": generate_call(adapter, dense_plan.sampler, prompt_length),
            "plan": generate_call(compressed, plan.sampler, prompt_length)}
    for run in runs.values():  # warm-up
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(max(1, repeats)):
        for name in ("dense", "plan") if round_ % 2 == 0 else ("plan", "dense"):
            times[name].append(time_call(adapter if name == "dense" else compressed, runs[name]) * 1e3)
    full = FullEvaluator(adapter, settings, calibration=calibration)
    scored = scored or full.evaluate(plan)
    encoded = [adapter.encode(prompt) for prompt in prompts]
    if len({len(e) for e in encoded}) != 1:
        raise ValueError(f"prompts: {len(encoded)} prompts of {sorted({len(e) for e in encoded})} tokens; allowed: "
                         "one or more prompts of one length in tokens (they are generated as one batch)")
    ids = torch.stack(encoded)
    texts = {}
    for name, (model, sampler) in {"dense": (adapter, dense_plan.sampler), "plan": (compressed, plan.sampler)}.items():
        with torch.no_grad():
            out = generate(model, ids, seed=0, **dataclasses.asdict(sampler))
        texts[name] = tuple(adapter.decode(row[ids.shape[1]:]) for row in out)
    return PlanValidation(tuple(times["dense"]), tuple(times["plan"]), scored.score,
                          full.evaluate(dense_plan).score, scored.metrics["distinct4_ratio"],
                          scored.metrics.get("collapsed_rows", float("nan")),
                          scored.metrics.get("dense_collapsed_rows", float("nan")), tuple(prompts), texts["dense"],
                          texts["plan"])


#: Prompts a measurement shows the text of: held-out windows spread over the evaluation plays.
SAMPLE_PROMPTS = 3


def sample_prompts(prompt_length: int, count: int = SAMPLE_PROMPTS) -> list[str]:
    """``count`` held-out prompts of ``prompt_length`` characters spread evenly over the evaluation plays,
    the first at their start (the plays' title)."""
    from dlmsearch.data import load_split

    text = load_split("evaluation")
    starts = [round(i * (len(text) - prompt_length) / count) for i in range(count)]
    return [text[start:start + prompt_length] for start in starts]


def measure_trial(study: optuna.Study, number: int, repeats: int = VALIDATION_ROUNDS,
                  settings: FullSettings = VALIDATION_FULL, adapter: DLMAdapter | None = None) -> Measurement:
    """Trial ``number``'s Plan measured on this machine beside the study's dense Plan (the space's most
    steps, nothing compressed), with :func:`sample_prompts`; its full-evaluator score is the front
    verification's where that used ``settings``. ``adapter``: the study's model, already loaded
    (default: loaded from the spec)."""
    from dlmsearch.models.loading import load_model
    from dlmsearch.search.runner import environment

    spec = spec_from_dict(study.user_attrs[SPEC_ATTR], f"study {study.study_name!r}")
    trial = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    adapter = adapter or load_model(spec.model, trust_remote_code=spec.trust_remote_code)
    dense = uniform_plan(adapter, steps=max(spec.space.steps), gen_length=spec.generation.gen_length,
                         block_length=max(spec.space.block_lengths))
    verified = verifications(study).get(number)
    scored = None
    if verified is not None and FullSettings(**verified.settings) == settings:
        scored = QualityResult(verified.quality, verified.metrics, "full")
    plan = plan_of(trial)
    prompts = sample_prompts(spec.generation.prompt_length)
    check = validate_plan(adapter, plan, dense, prompts, spec.generation.prompt_length, repeats,
                          settings=settings, scored=scored)
    machine = {k: v for k, v in environment().items() if k in ("host", "device", "threads", "torch")}
    overrides = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)
                 if getattr(settings, f.name) != f.default}
    budget = budget_checks(spec.budget, check, plan.sampler.steps) if spec.hardware == "local" else ()
    return Measurement(number, check, float(trial.user_attrs[METRICS_ATTR]["latency_ms"]),
                       float(study.user_attrs[REFERENCE_ATTR]["latency_ms"]) / REFERENCE_MARGIN,
                       spec.hardware, machine, overrides, budget)


def budget_checks(budget: Budget, check: PlanValidation, steps: int) -> tuple[BudgetCheck, ...]:
    """The budget's latency limits against ``check``'s rounds: ``latency_ms`` and ``latency_per_step_ms``
    in measured ms, ``latency_fraction`` as the Plan's time over the dense model's in the same round; the
    median, lowest and highest round of each. Only meaningful where the study's hardware is the machine
    that measured (``hardware: local``)."""
    rounds = list(zip(check.dense_times_ms, check.plan_times_ms, strict=True))
    per_round = {"latency_ms": [plan for _, plan in rounds],
                 "latency_per_step_ms": [plan / steps for _, plan in rounds],
                 "latency_fraction": [plan / dense for dense, plan in rounds]}
    medians = {"latency_ms": check.plan_ms, "latency_per_step_ms": check.plan_ms / steps,
               "latency_fraction": check.plan_ms / check.dense_ms}
    return tuple(BudgetCheck(name, float(limit), medians[name], min(values), max(values))
                 for name, values in per_round.items() if (limit := getattr(budget, name)) is not None)
