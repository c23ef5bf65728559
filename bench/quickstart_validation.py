"""Validate the quickstart's chosen Plans for real: apply them, time generation, score them fully.

Reproduce with::

    .venv/bin/dlmsearch demo                                      # the search (runs/quickstart)
    .venv/bin/python bench/quickstart_validation.py               # up to 6 front Plans + the dense one
    .venv/bin/python bench/quickstart_validation.py --quick       # the exported Plan + the dense one

For each Plan (the dense Plan, the exported ``plan.json`` and, without ``--quick``, more feasible
front Plans): the search's predicted latency and proxy quality (from the study), the latency
measured end to end on this CPU (``apply_plan_`` with default arguments, then ``generate`` with the
Plan's sampler, median of 3), the full evaluator's score, and the ranking agreement. Figures
(``name: value``): per Plan ``plan<i>_predicted_ms`` / ``plan<i>_measured_ms`` /
``plan<i>_proxy`` / ``plan<i>_full``; ``latency_mape``; ``exported_speedup_measured`` and
``exported_speedup_predicted`` (dense / exported); ``spearman_proxy_full`` across the Plans.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from scipy import stats

from dlmsearch.compress import CalibrationSet, apply_plan_
from dlmsearch.cost_models import time_generate
from dlmsearch.evaluators import FullEvaluator, FullSettings
from dlmsearch.models.loading import load_model
from dlmsearch.plan import Plan, load_plan
from dlmsearch.search import open_study
from dlmsearch.search.results import front_rows, plan_of


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--run", default="runs/quickstart", help="run folder of the quickstart search")
    parser.add_argument("--quick", action="store_true", help="only the exported Plan and the dense one")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's, like the search)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    run = Path(args.run)
    study = open_study(run)
    trials = {t.number: t for t in study.get_trials()}
    exported = load_plan(run / "plan.json")
    dense_trial = min((t for t in trials.values() if t.user_attrs.get("warm_start") and t.values),
                      key=lambda t: t.number)  # warm start 0 is the dense Plan
    chosen = [dense_trial.number] + [n for n, t in trials.items() if t.user_attrs.get("plan") == exported.to_dict()][:1]
    if not args.quick:
        chosen += [r.number for r in front_rows(study) if r.number not in chosen][:5]
    adapter = load_model()
    calibration = CalibrationSet.from_split(adapter, n_sequences=16)
    full = FullEvaluator(adapter, FullSettings(infill_windows=8, prompts=4, unconditional=2, calibration_sequences=16,
                                               draws=1)
                         if args.quick else None)
    prompt_length = json.loads(json.dumps(study.user_attrs["dlmsearch.spec"]))["generation"]["prompt_length"]
    figures: dict[str, float] = {}
    rows = []
    for i, number in enumerate(chosen):
        trial = trials[number]
        plan: Plan = plan_of(trial)
        model = load_model()
        apply_plan_(model, plan, calibration)
        measured = time_generate(model, plan.sampler, prompt_length).median_ms
        score = full.evaluate(plan).score
        metrics = trial.user_attrs["metrics"]
        rows.append((metrics["latency_ms"], measured, metrics["quality"], score))
        figures.update({f"plan{i}_trial": float(number), f"plan{i}_predicted_ms": metrics["latency_ms"],
                        f"plan{i}_measured_ms": measured, f"plan{i}_proxy": metrics["quality"],
                        f"plan{i}_full": score})
    figures["latency_mape"] = statistics.mean(abs(p - m) / m for p, m, _, _ in rows)
    if len(rows) > 1:
        figures["exported_speedup_measured"] = rows[0][1] / rows[1][1]
        figures["exported_speedup_predicted"] = rows[0][0] / rows[1][0]
    if len(rows) > 2:
        figures["spearman_proxy_full"] = float(stats.spearmanr([r[2] for r in rows], [r[3] for r in rows])[0])
    for name, value in figures.items():
        print(f"{name}: {value:.4f}")
    return figures


if __name__ == "__main__":
    main()
