"""Time per Plan of the proxy (low and full fidelity) and of the full evaluator, in one run.

Reproduce with::

    .venv/bin/python bench/proxy_speed.py            # 10 random Plans on the embedded model
    .venv/bin/python bench/proxy_speed.py --quick    # 3 Plans, smaller evaluators

The Plans come from ``bench/proxy_fidelity.py``'s random sampler (same seed). The first proxy
evaluation after construction is excluded: construction computes (or reads from the disk cache)
the dense reference, and the first compressed evaluation also computes the calibration
statistics, which every later Plan reuses. Figures (``name: value``): median seconds per Plan for
each evaluator and the ratios ``full_over_proxy`` and ``proxy_over_low``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).parent))
from proxy_fidelity import random_plan  # noqa: E402

from dlmsearch.evaluators import FullEvaluator, FullSettings, ProxyEvaluator, ProxySettings  # noqa: E402
from dlmsearch.models.loading import load_model  # noqa: E402


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="3 Plans, smaller evaluators")
    args = parser.parse_args(argv)
    adapter = load_model()
    start = time.perf_counter()
    proxy = ProxyEvaluator(adapter, ProxySettings(windows=8, low_fidelity_windows=2, trajectory_prompts=2,
                                                  calibration_sequences=8) if args.quick else None)
    construct = time.perf_counter() - start
    full = FullEvaluator(adapter, FullSettings(infill_windows=8, prompts=2, unconditional=2,
                                               calibration_sequences=8) if args.quick else None)
    rng = random.Random(0)
    plans = [random_plan(adapter, rng) for _ in range(3 if args.quick else 10)]
    proxy.evaluate(plans[0], "low")  # warm-up: calibration statistics
    full.evaluate(plans[0])  # warm-up: dense reference generations
    times: dict[str, list[float]] = {"low": [], "proxy": [], "full": []}
    for plan in tqdm(plans, desc="plans", file=sys.stderr):
        for name, run in (("low", lambda p: proxy.evaluate(p, "low")), ("proxy", proxy.evaluate),
                          ("full", full.evaluate)):
            start = time.perf_counter()
            run(plan)
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    figures = {
        "proxy_construct_seconds": construct,
        "seconds_per_plan_low": medians["low"],
        "seconds_per_plan_proxy": medians["proxy"],
        "seconds_per_plan_full": medians["full"],
        "full_over_proxy": medians["full"] / medians["proxy"],
        "proxy_over_low": medians["proxy"] / medians["low"],
    }
    for name, value in figures.items():
        print(f"{name}: {value:.4f}")
    return figures


if __name__ == "__main__":
    main()
