"""Validate the quickstart's exported Plan for real: applied, timed beside the dense model, scored fully.

Reproduce with::

    .venv/bin/dlmsearch demo                                      # the search (runs/quickstart)
    .venv/bin/python bench/quickstart_validation.py               # the exported Plan vs the dense one
    .venv/bin/python bench/quickstart_validation.py --quick       # fewer timings, a smaller full evaluator

The trial whose Plan is the exported ``plan.json`` is measured as ``dlmsearch measure`` does
(:func:`dlmsearch.search.validation.measure_trial`): it and the dense Plan (the space's most steps, no
compression) are applied with ``apply_plan_``'s defaults and their ``generate`` calls timed alternately
on this CPU; both are scored by the full evaluator. Nothing is stored in the study. Figures
(``name: value``): ``speedup_measured`` (dense / exported, medians), ``speedup_predicted`` (the same
from the study's analytic latencies), ``full_score_pick`` and ``full_score_dense``,
``distinct4_ratio_pick`` (the Plan's share of distinct 4-grams over the dense model's),
``collapsed_rows_pick`` and ``collapsed_rows_dense`` (shares of prompted rows that collapsed, the
dense model's at one token per step).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from dlmsearch.evaluators import FullSettings
from dlmsearch.plan import load_plan
from dlmsearch.search import open_study
from dlmsearch.search.validation import VALIDATION_FULL, VALIDATION_ROUNDS, measure_trial

QUICK_FULL = FullSettings(infill_windows=8, prompts=4, unconditional=4, draws=1)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--run", default="runs/quickstart", help="run folder of the quickstart search")
    parser.add_argument("--quick", action="store_true", help="3 timings each and a smaller full evaluator")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's, like the search)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    run = Path(args.run)
    study = open_study(run)
    exported = load_plan(run / "plan.json").to_dict()
    pick = next(t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("plan") == exported)
    measured = measure_trial(study, pick.number, repeats=3 if args.quick else VALIDATION_ROUNDS,
                             settings=QUICK_FULL if args.quick else VALIDATION_FULL)
    check = measured.check
    figures = {"pick_trial": float(pick.number), "pick_steps": float(exported["sampler"]["steps"]),
               "dense_ms": check.dense_ms, "pick_ms": check.plan_ms, "speedup_measured": check.speedup,
               "speedup_predicted": measured.predicted_speedup, "full_score_pick": check.plan_score,
               "full_score_dense": check.dense_score, "distinct4_ratio_pick": check.distinct4_ratio,
               "collapsed_rows_pick": check.collapsed_rows, "collapsed_rows_dense": check.dense_collapsed_rows}
    for dense_text, plan_text in zip(check.dense_texts, check.plan_texts, strict=True):
        print(f"dense text: {dense_text!r}")
        print(f"pick text:  {plan_text!r}")
    for name, value in figures.items():
        print(f"{name}: {value:.4f}")
    return figures


if __name__ == "__main__":
    main()
