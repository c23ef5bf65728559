"""Time per Plan of the proxy (low and full fidelity) and of the full evaluator, in one run.

Reproduce with::

    .venv/bin/python bench/proxy_speed.py            # 10 random Plans on the embedded model (seed 2)
    .venv/bin/python bench/proxy_speed.py --quick    # 3 Plans, smaller evaluators
    .venv/bin/python bench/proxy_speed.py --threads 1  # one torch thread (default: torch's, all cores)
    .venv/bin/python bench/proxy_speed.py --model runs/wide --skip-full   # another model, the proxy only
    .venv/bin/python bench/proxy_speed.py --skip-full --set free_max_steps=16   # a proxy variant (ProxySettings)

The Plans come from ``bench/proxy_fidelity.py``'s random sampler (``--seed``). The evaluators
share one compressor, whose kept copy is cleared before every timed call, so every time includes
the Plan's compression. Warm-up evaluations (one Plan per step count) are excluded: they compute
(or read from the disk cache) the dense references, which depend on the sampler settings but not
on the Plan, and the calibration statistics, which every later Plan reuses. Figures
(``name: value``): the torch ``threads`` used, median seconds per Plan for each evaluator and the
ratios ``full_over_proxy`` and ``proxy_over_low`` (``--skip-full``: the proxy's two fidelities only,
for a model too large to run the full evaluator on here).
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).parent))
from proxy_fidelity import STEPS, evaluators, random_plan  # noqa: E402

from dlmsearch.models.loading import load_model  # noqa: E402


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="3 Plans, smaller evaluators")
    parser.add_argument("--plans", type=int, default=None, help="number of timed Plans (default 10, quick 3)")
    parser.add_argument("--seed", type=int, default=2, help="seed of the random Plans")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--model", default=None, help="embedded model name or local folder (default: the embedded one)")
    parser.add_argument("--skip-full", action="store_true", help="time the proxy's two fidelities only")
    parser.add_argument("--set", nargs="+", metavar="KEY=VALUE", default=[],
                        help="time the proxy with these ProxySettings changed (e.g. free_max_steps=16)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    adapter = load_model(args.model) if args.model else load_model()
    start = time.perf_counter()
    proxy, full = evaluators(adapter, args.quick, args.set)
    construct = time.perf_counter() - start
    rng = random.Random(args.seed)
    plans = [random_plan(adapter, rng) for _ in range(args.plans or (3 if args.quick else 10))]
    for steps in STEPS:  # warm-up: calibration statistics, dense references per sampler setting
        warm = dataclasses.replace(plans[0], sampler=dataclasses.replace(plans[0].sampler, steps=steps))
        proxy.evaluate(warm, "low"), proxy.evaluate(warm)
        if not args.skip_full:
            full.evaluate(warm)
    runs = {"low": lambda p: proxy.evaluate(p, "low"), "proxy": proxy.evaluate, "full": full.evaluate}
    if args.skip_full:
        del runs["full"]
    times: dict[str, list[float]] = {name: [] for name in runs}
    for plan in tqdm(plans, desc="plans", file=sys.stderr):
        for name, run in runs.items():
            proxy.compressor.clear()
            start = time.perf_counter()
            run(plan)
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    figures = {
        "threads": float(torch.get_num_threads()),
        "proxy_construct_seconds": construct,
        "seconds_per_plan_low": medians["low"],
        "seconds_per_plan_proxy": medians["proxy"],
        "proxy_over_low": medians["proxy"] / medians["low"],
        "mean_seconds_per_plan_proxy": statistics.mean(times["proxy"]),
        "max_seconds_per_plan_proxy": max(times["proxy"]),
    }
    if "full" in times:
        figures |= {"seconds_per_plan_full": medians["full"], "full_over_proxy": medians["full"] / medians["proxy"],
                    "mean_seconds_per_plan_full": statistics.mean(times["full"]),
                    "mean_full_over_mean_proxy": statistics.mean(times["full"]) / statistics.mean(times["proxy"])}
    for name, value in figures.items():
        print(f"{name}: {value:.4f}")
    return figures


if __name__ == "__main__":
    main()
