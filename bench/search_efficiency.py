"""Search quality: the `auto` sampler with warm starts vs random search vs the integer program alone.

Reproduce with::

    .venv/bin/python bench/search_efficiency.py            # 5 seeds x 100 trials per method
    .venv/bin/python bench/search_efficiency.py --quick    # 2 seeds x 24 trials

The quickstart study on the embedded model (quality = proxy at low fidelity, latency and memory
from the analytic model on ``--hardware``, budget = half the dense latency). For each seed, the
hypervolume (normalised: 1.1 x the dense cost and quality 1.0 map to 1) of the feasible front of:
``auto`` (multivariate TPE, warm start: dense, presets, integer-program solutions), ``random``
(no warm start) and the integer program's own solutions. Figures (``name: value``):

- ``hv_auto`` / ``hv_random`` / ``hv_milp``: mean final hypervolume over seeds;
- ``hv_gain``: hv_auto - hv_random (target >= 0.05 of the normalised range);
- ``trials_to_random_final``: median over seeds of the first trial at which auto's hypervolume
  reaches random's final one (target <= 35; ``inf`` when it never does);
- ``milp_points_dominated``: share of the integer program's feasible points that auto's front
  weakly dominates (target 1.0).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from search_common import bench_context, bench_spec  # noqa: E402

from dlmsearch.search import run_study  # noqa: E402
from dlmsearch.search.pareto import feasible_front, hypervolume, hypervolume_history  # noqa: E402
from dlmsearch.search.runner import integer_program_solutions, reference  # noqa: E402


def milp_points(context: object, limits: dict[str, float], objectives: tuple[str, ...]) -> np.ndarray:
    """Objective vectors of the integer program's feasible solutions."""
    solutions, _ = integer_program_solutions(context)  # type: ignore[arg-type]
    rows = []
    for solution in solutions:
        plan = context.space.plan_from_params(solution.params)  # type: ignore[attr-defined]
        cost = context.cost_model.cost(plan, context.hardware)  # type: ignore[attr-defined]
        metrics = {"latency_ms": cost.latency_ms, "peak_mem_bytes": float(cost.peak_mem_bytes),
                   "quality": context.evaluator.evaluate(plan, "low").score}  # type: ignore[attr-defined]
        if all(metrics[name] <= limit for name, limit in limits.items()):
            rows.append([metrics[name] for name in objectives])
    return np.array(rows, dtype=float).reshape(-1, len(objectives))


def weakly_dominated(points: np.ndarray, front: np.ndarray) -> float:
    """Share of ``points`` that some row of ``front`` weakly dominates."""
    if len(points) == 0:
        return 1.0
    return float(np.mean([bool(np.any(np.all(front <= p + 1e-12, axis=1))) for p in points]))


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="2 seeds x 24 trials")
    parser.add_argument("--hardware", default="x86-avx512-laptop", help="cost-model target (default: a datasheet CPU)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds, trials = (2, 24) if args.quick else (5, 100)
    spec = bench_spec(args.hardware, n_trials=trials)
    context = bench_context(spec)
    start = time.perf_counter()
    results: dict[str, list[float]] = {"auto": [], "random": []}
    reach: list[float] = []
    dominated: list[float] = []
    hv_milp = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(seeds):
            runs = {}
            for method, sampler, warm in (("auto", "auto", True), ("random", "random", False)):
                seeded = dataclasses.replace(spec, seed=seed, sampler=sampler, warm_start=warm,
                                             study=f"{method}-{seed}")
                context.spec = seeded
                runs[method] = run_study(seeded, Path(tmp) / f"{method}-{seed}", context=context, progress=False,
                                         write_outputs=False)
                print(f"seed {seed} {method}: hv {runs[method].hypervolume:.4f}", file=sys.stderr)
            ref = reference(runs["auto"].study, spec.objectives)
            for method, summary in runs.items():
                results[method].append(summary.hypervolume)
            history = hypervolume_history(runs["auto"].study.get_trials(), ref)
            target = runs["random"].hypervolume
            reach.append(next((i + 1 for i, (_, hv) in enumerate(history) if hv >= target - 1e-12), float("inf")))
            limits = runs["auto"].study.user_attrs["dlmsearch.limits"]
            points = milp_points(context, limits, spec.objectives)
            hv_milp = hypervolume(points, ref)
            front = np.array([t.values for t in feasible_front(runs["auto"].study.get_trials())], dtype=float)
            dominated.append(weakly_dominated(points, front))
    figures = {
        "seeds": float(seeds), "trials_per_method": float(trials),
        "hv_auto": statistics.mean(results["auto"]), "hv_random": statistics.mean(results["random"]),
        "hv_milp": hv_milp,
        "hv_gain": statistics.mean(results["auto"]) - statistics.mean(results["random"]),
        "trials_to_random_final": float(statistics.median(reach)),
        "milp_points_dominated": statistics.mean(dominated),
        "distinct_plans_scored": float(context.evaluator.evaluations),  # type: ignore[attr-defined]
        "seconds": time.perf_counter() - start,
    }
    for name, value in figures.items():
        print(f"{name}: {value:.4f}")
    return figures


if __name__ == "__main__":
    main()
