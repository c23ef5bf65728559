"""Optuna samplers by name, all offline (no optunahub download).

``auto`` follows Optuna's own guidance for multi-objective budgets (RESEARCH.md): multivariate
TPE below :data:`AUTO_NSGA2_FROM` trials, NSGA-II from there (its generations need hundreds of
trials to pay off). GP is available by name: it is the most sample-efficient on small budgets
but its cost per trial grows with the number of parameters and trials.

Optuna samplers keep their random state in memory only, so a resumed study would draw other
numbers than an uninterrupted one. :func:`seed_for_trial` reseeds every random state of a sampler
from (seed, number of completed trials) before each ask: 50 trials in one run and 25 + 25 across a
stop and resume give the same Plans (one worker; with several, the order of asks is a race).
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.samplers._lazy_random_state import LazyRandomState  # the one type every sampler's RNG lives in

from dlmsearch.search.spec import SAMPLERS

AUTO_NSGA2_FROM = 250


def make_sampler(name: str, seed: int, n_trials: int | None = None) -> optuna.samplers.BaseSampler:
    """The sampler called ``name`` (one of :data:`~dlmsearch.search.spec.SAMPLERS`), seeded."""
    if name == "auto":
        name = "nsga2" if n_trials is not None and n_trials >= AUTO_NSGA2_FROM else "tpe"
    if name == "tpe":
        # multivariate: the per-group bits interact through the shared budget
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=10)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=10, deterministic_objective=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=50)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"sampler: {name!r} is not allowed; allowed: {', '.join(SAMPLERS)}")


def seed_for_trial(sampler: optuna.samplers.BaseSampler, seed: int, index: int) -> int:
    """Seed every random state of ``sampler`` and its inner samplers from (``seed``, ``index``);
    returns how many were seeded (0: the sampler keeps none this can reach, so a resume draws anew)."""
    derived = (seed * 1_000_003 + index) % 2**32
    return _seed_states(sampler, derived, set())


def _seed_states(obj: Any, derived: int, seen: set[int]) -> int:
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    count = 0
    for value in vars(obj).values():
        if isinstance(value, LazyRandomState):
            value.rng.seed(derived + count)
            count += 1
        elif isinstance(value, optuna.samplers.BaseSampler):
            count += _seed_states(value, derived + 7919 * (count + 1), seen)
    return count
