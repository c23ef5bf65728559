"""Search overhead: time per trial outside the evaluator and the cost model, with a journal storage.

Reproduce with::

    .venv/bin/python bench/search_overhead.py                      # 200 trials, proxy at low fidelity
    .venv/bin/python bench/search_overhead.py --fidelity multi     # the quickstart's own evaluator setting
    .venv/bin/python bench/search_overhead.py --quick              # 40 trials

The quickstart study on the embedded model, `auto` sampler, journal file storage, quality from the
proxy at ``--fidelity`` (low: the cheapest proxy, the strictest ratio; multi: what the quickstart
runs, low first and full for Plans that could enter the front). The evaluator's and the cost
model's calls are timed; everything else in the trial loop (sampler, storage, Plan building, front
/ hypervolume for the progress bar) is overhead.
Figures (``name: value``): ``overhead_ms_per_trial``, ``proxy_ms_per_trial``, ``cost_ms_per_trial``,
``overhead_over_proxy`` (target <= 0.05) and the same ratio over the last quarter of the trials
(``overhead_over_proxy_last_quarter``: samplers slow down as the study grows).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from search_common import bench_spec  # noqa: E402

from dlmsearch.search import run_study  # noqa: E402
from dlmsearch.search.context import build_context  # noqa: E402


class Timed:
    """Wraps a callable and records the duration of each call."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.seconds: list[float] = []
        self.started: list[datetime.datetime] = []  # wall clock, comparable with Optuna's trial timestamps

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.started.append(datetime.datetime.now())
        start = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds.append(time.perf_counter() - start)

    def since(self, moment: datetime.datetime) -> float:
        """Seconds spent in calls that started at or after ``moment``."""
        return sum(s for t, s in zip(self.started, self.seconds, strict=True) if t >= moment)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="40 trials")
    parser.add_argument("--hardware", default="x86-avx512-laptop")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--fidelity", choices=("low", "multi"), default="low")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    trials = 40 if args.quick else 200
    spec = bench_spec(args.hardware, n_trials=trials, warm_start=False, sampler="auto")
    spec = dataclasses.replace(spec, evaluator=dataclasses.replace(spec.evaluator, fidelity=args.fidelity))
    context = build_context(spec, isolation="none")  # overhead of the search itself, not of a child process
    evaluate = Timed(context.evaluator.evaluate)
    cost = Timed(context.cost_model.cost)
    context.evaluator.evaluate = evaluate  # type: ignore[method-assign]
    context.cost_model.cost = cost  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = run_study(spec, tmp, context=context, progress=False, write_outputs=False)
        total = time.perf_counter() - start
        done = sorted(summary.study.get_trials(), key=lambda t: t.number)
    # per-trial wall time from the storage's timestamps, minus the timed calls inside each trial
    walls = [(t.datetime_complete - t.datetime_start).total_seconds() for t in done
             if t.datetime_complete and t.datetime_start]
    proxy_s = sum(evaluate.seconds) / len(done)
    cost_s = sum(cost.seconds) / len(done)
    overhead = (total - sum(evaluate.seconds) - sum(cost.seconds)) / len(done)
    quarter = len(done) // 4
    first_of_last = done[-quarter].datetime_start
    assert first_of_last is not None
    last_proxy = evaluate.since(first_of_last) / quarter  # a trial may call the proxy twice (multi fidelity)
    last_overhead = sum(walls[-quarter:]) / quarter - last_proxy - cost.since(first_of_last) / quarter
    figures = {"trials": float(len(done)), "overhead_ms_per_trial": overhead * 1e3, "proxy_ms_per_trial": proxy_s * 1e3,
               "cost_ms_per_trial": cost_s * 1e3, "overhead_over_proxy": overhead / proxy_s,
               "overhead_over_proxy_last_quarter": max(0.0, last_overhead) / last_proxy}
    for name, value in figures.items():
        print(f"{name}: {value:.4f}")
    return figures


if __name__ == "__main__":
    main()
