"""Throughput of the analytic cost model: Plans costed per second, vectorised, on this CPU.

Reproduce with::

    .venv/bin/python bench/cost_speed.py            # 20,000 random Plans per model shape
    .venv/bin/python bench/cost_speed.py --quick    # 2,000

Two shapes: the embedded model (42 linears) and LLaDA-8B (32 layers, 224 linears; shapes from
RESEARCH.md) on the A100 80GB spec. Plans are random (seeded) per-(block, attention / MLP) weight
bits over two timestep groups, sparsity, and step counts, built by a ``SearchSpace``. Figures
(``name: value``): Plans per second including encoding (``cost_many``), best of 3 runs.
"""

from __future__ import annotations

import argparse
import random
import time

from dlmsearch.cost_models import AnalyticCostModel, load_hardware
from dlmsearch.models.adapters import LinearInfo, ModelShape
from dlmsearch.models.loading import load_model
from dlmsearch.plan import ModelRef, Plan
from dlmsearch.spaces import GenerationSpec, SearchSpace, SpaceSpec

LLADA_8B = ModelShape("llama", 32, 4096, 32, 32, 128, 12288, 126464, 4096)
LLADA_ROLES = (("q", 4096, 4096), ("k", 4096, 4096), ("v", 4096, 4096), ("o", 4096, 4096), ("gate", 4096, 12288),
               ("up", 4096, 12288), ("down", 12288, 4096))


def llada_linears() -> list[LinearInfo]:
    """LLaDA-8B's linears under Llama names."""
    return [LinearInfo(f"model.layers.{b}.{r}", r, b, k, n) for b in range(32) for r, k, n in LLADA_ROLES]


#: The knobs the Plans draw from: per (block, attention / MLP) group 2-16 weight bits early, 4-16 late,
#: one activation width for both timestep groups, and a sparsity; a step count per Plan.
SPACE = SpaceSpec(timestep_groups=2, weight_bits=(2, 3, 4, 8, 16), act_bits=(8, 16), steps=(8, 16, 32, 64),
                  block_lengths=(64,), group_size=64)


def random_plans(linears: list[LinearInfo], count: int, seed: int = 0) -> list[Plan]:
    """Seeded random Plans of :data:`SPACE`, built by its :class:`SearchSpace`."""
    space = SearchSpace(SPACE, GenerationSpec(gen_length=64), ModelRef("bench"), linears)
    rng = random.Random(seed)
    plans = []
    for _ in range(count):
        params: dict[str, float | int] = {}
        for group in space.groups:
            params[f"{group.name}.w0"] = rng.choice((2, 3, 4, 8, 16))
            params[f"{group.name}.w1"] = rng.choice((4, 8, 16))
            params[f"{group.name}.a0"] = params[f"{group.name}.a1"] = rng.choice((8, 16))
            params[f"{group.name}.sparsity"] = rng.choice((0.0, 0.3, 0.5))
        params["steps"] = rng.choice(SPACE.steps)
        plans.append(space.plan_from_params(params))
    return plans


def plans_per_second(model: AnalyticCostModel, plans: list[Plan]) -> float:
    """Best of three timed ``cost_many`` passes."""
    hardware = load_hardware("a100-80gb")
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        model.cost_many(plans, hardware)
        best = min(best, time.perf_counter() - start)
    return len(plans) / best


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="2,000 Plans instead of 20,000")
    args = parser.parse_args(argv)
    count = 2000 if args.quick else 20000
    embedded = load_model()
    shapes = {"embedded": (embedded.shape, embedded.linears()), "llada8b": (LLADA_8B, llada_linears())}
    figures = {}
    for name, (shape, linears) in shapes.items():
        model = AnalyticCostModel(shape, linears, prompt_length=64)
        figures[f"{name}_plans_per_second"] = plans_per_second(model, random_plans(linears, count))
    for key, value in figures.items():
        print(f"{key}: {value:.0f}")
    return figures


if __name__ == "__main__":
    main()
