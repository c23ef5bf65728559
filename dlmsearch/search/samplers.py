"""Optuna samplers by name, all offline (no optunahub download).

``auto`` follows Optuna's own guidance for multi-objective budgets (RESEARCH.md): multivariate
TPE below :data:`AUTO_NSGA2_FROM` trials, NSGA-II from there (its generations need hundreds of
trials to pay off). GP is available by name: it is the most sample-efficient on small budgets
but its cost per trial grows with the number of parameters and trials.
"""

from __future__ import annotations

import optuna

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
