"""Does the proxy rank Plans like the full evaluator? Rank correlations on random Plans.

Reproduce with::

    .venv/bin/python bench/proxy_fidelity.py --seed 2 --dump runs/pf2.json    # 40 random Plans (the reported set)
    .venv/bin/python bench/proxy_fidelity.py --seed 0 --dump runs/pf0.json    # tuning Plans, with --seed 1 --plans 24
    .venv/bin/python bench/proxy_fidelity.py --space light --seed 3 --plans 24   # lightly compressed Plans
    .venv/bin/python bench/proxy_fidelity.py --quick            # 6 Plans, smaller evaluators (under a minute)
    .venv/bin/python bench/proxy_fidelity.py --from-dump runs/pf0.json runs/pf1.json --tune   # weights, pooled
    .venv/bin/python bench/proxy_fidelity.py --from-dump runs/pf2.json --weights 0 0.3333 0 0.125 0.25 1  # rescored
    .venv/bin/python bench/proxy_fidelity.py --from-dump runs/pf2.json --variant seed=1   # the proxy's own noise
    .venv/bin/python bench/proxy_fidelity.py --from-dump runs/pf0.json --variant seed=0 --variant-dump runs/v0.json
    .venv/bin/python bench/proxy_fidelity.py --from-dump runs/pf_light5.json --extra-draws 4 --dump runs/pf_light5x.json

(``--weights``: trajectory, free gap, infill, dense step, step diversity and step cost weights.
``--variant seed=0`` rescores a dump's Plans with the current proxy, so a dump made before a change
of the proxy still serves: its full-evaluator scores are what cost time.)

Plans are drawn at random (``--seed``) over the knobs the search uses: per layer group (block x
attention / MLP) weight bits per timestep group in {2, 3, 4, 8, 16}, sparsity in {0, 0.1, ..., 0.6}
with magnitude / wanda / sink_wanda, two timestep groups, and steps in {8, 16, 32, 64} for 64
generated characters (``--space light``: 4-16 bits, at most 20% pruned, Wanda or sink-aware
Wanda: the region a search's front ends up in). Each Plan is scored by the proxy (full and low
fidelity), by the full evaluator, and by plain masked NELBO of the compressed model on held-out
windows. Tune the proxy on some seeds and report others: the proxy's weights were chosen on
``--seed 0`` (40 Plans) and ``--seed 1`` (24 Plans) pooled, and on ``--space light --seed 3``; the
figures in bench/RESULTS.md come from ``--seed 2`` (40 Plans) and ``--space light --seed 5``.

Figures (``name: value``):

- ``spearman_proxy_full`` / ``kendall_proxy_full``: proxy vs full evaluator;
- ``spearman_low_full`` / ``kendall_low_full``: low-fidelity proxy vs full evaluator;
- ``spearman_full_repeat`` (unless ``--no-repeat``): the full evaluator against itself under seeds
  it did not use (its generations, infill spans and NELBO masks; same compressed models): its noise
  ceiling; ``spearman_proxy_full_repeat``: the proxy against that repeat;
  ``spearman_proxy_full_mean`` / ``spearman_low_full_mean``: against the mean of the two;
- with three or more one-draw scores of the full evaluator (the draws of both full evaluators):
  ``spearman_full_pairwise`` (mean rank correlation of two draws), ``full_mean_reliability``
  (Spearman-Brown: the expected agreement of the mean of all draws with another such mean) and
  ``spearman_proxy_full_all`` / ``spearman_low_full_all``: against the mean of all draws;
- ``spearman_kl_step_full`` / ``spearman_low_kl_step_full``: the proxy without its trajectory term
  (masked KL at full / low fidelity plus the cached dense step term), the cheapest variant;
- ``spearman_nelbo_full_pruning`` / ``spearman_proxy_full_pruning``: plain NELBO (and the proxy)
  vs the full evaluator on the pruning-heavy Plans (mean sparsity >= 0.3), the case where
  perplexity is said to mislead; ``spearman_nelbo_full``: plain NELBO on all Plans;
- ``spearman_full_part_<part>_full``: each term of the full evaluator's score alone (infill accuracy
  gap, generative NELBO gap, diversity shortfall, infill disagreement) against its whole score;
- ``seconds_per_plan_proxy`` / ``seconds_per_plan_low`` / ``seconds_per_plan_full``: mean wall
  time per Plan (each including the Plan's compression) and ``full_over_proxy``.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import itertools
import json
import random
import re
import sys
import time
from pathlib import Path
from typing import Any

import torch
from scipy import stats
from tqdm import tqdm

from dlmsearch.data import load_split
from dlmsearch.evaluators import FullEvaluator, FullSettings, ProxyEvaluator, ProxySettings
from dlmsearch.evaluators.base import settings_with
from dlmsearch.evaluators.plan_compressor import PlanCompressor
from dlmsearch.evaluators.proxy_terms import proxy_terms
from dlmsearch.models.adapters import DLMAdapter
from dlmsearch.models.diffusion import eval_windows, evaluate_nelbo
from dlmsearch.models.grouping import layer_groups
from dlmsearch.models.loading import load_model
from dlmsearch.plan import LayerPlan, ModelRef, Plan, SamplerSettings

BITS = (2, 3, 4, 8, 16)
SPARSITIES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
METHODS = ("magnitude", "wanda", "sink_wanda")
STEPS = (8, 16, 32, 64)
QUICK_PROXY = ProxySettings(windows=4, low_fidelity_windows=2, unconditional_rows=2, infill_windows=4,
                            calibration_sequences=8, step_rows=2, nelbo_repeats=4, step_nelbo_repeats=4,
                            step_cost_rows=2, step_cost_windows=4)
QUICK_FULL = FullSettings(infill_windows=4, prompts=2, unconditional=2, calibration_sequences=8, nelbo_repeats=4,
                          draws=1)


#: Plan spaces to draw from: ``default`` is the search's; ``light`` holds the lightly compressed Plans a
#: search's front ends up among (4-16 bits, at most 20% pruned).
SPACES = {"default": (BITS, SPARSITIES, METHODS),
          "light": ((4, 8, 16), (0.0, 0.1, 0.2), ("wanda", "sink_wanda"))}
#: How figures name the Plans of each space.
SPACE_LABELS = {"default": "random", "light": "light"}


def random_plan(adapter: DLMAdapter, rng: random.Random, space: str = "default") -> Plan:
    """A random Plan of ``space``: one setting per (block, attention | MLP) group, two timestep groups."""
    bits, sparsities, methods = SPACES[space]
    layers = {}
    for group in layer_groups(adapter.linears(), "block_role"):
        setting = LayerPlan(weight_bits=(rng.choice(bits), rng.choice(bits)), act_bits=(16, 16),
                            sparsity=rng.choice(sparsities), prune_method=rng.choice(methods), group_size=64)
        layers.update(dict.fromkeys(group.modules, setting))
    sampler = SamplerSettings(steps=rng.choice(STEPS), gen_length=64, block_length=32)
    return Plan(ModelRef(adapter.name, adapter.shape.fingerprint), sampler, (0.5,), "nested", layers)


def evaluators(adapter: DLMAdapter, quick: bool, proxy_changes: list[str] | None = None, full_draws: int = 0
               ) -> tuple[ProxyEvaluator, FullEvaluator]:
    """The proxy (with ``proxy_changes``: ``KEY=VALUE`` ProxySettings) and the full evaluator (of
    ``full_draws`` draws where > 0, else its default), sharing one compressor (calibration statistics
    once, and the last compressed copy is reused when both score the same Plan)."""
    proxy = ProxyEvaluator(adapter, settings_with(ProxySettings, proxy_changes or [],
                                                  QUICK_PROXY if quick else ProxySettings()))
    full_settings = QUICK_FULL if quick else FullSettings()
    if full_draws > 0:
        full_settings = dataclasses.replace(full_settings, draws=full_draws)
    full = FullEvaluator(adapter, full_settings)
    full.compressor = proxy.compressor
    return proxy, full


def spearman(a: list[float], b: list[float]) -> float:
    return float(stats.spearmanr(a, b).statistic) if len(a) > 2 else float("nan")


def kendall(a: list[float], b: list[float]) -> float:
    return float(stats.kendalltau(a, b).statistic) if len(a) > 2 else float("nan")


Weights = tuple[float, float, float, float, float, float]  # trajectory, free gap, infill, dense step, step
# diversity, step cost
#: The ProxySettings weight fields of a ``Weights`` tuple, in its order (the low fidelity's free gap has its own).
WEIGHT_FIELDS = ("trajectory_weight", "free_gap_weight", "infill_weight", "dense_step_weight",
                 "step_diversity_weight", "step_cost_weight")


def term_values(rows: list[dict[str, float]], fidelity: str = "proxy") -> list[dict[str, float]]:
    """Each row's proxy terms before their weights (:func:`~dlmsearch.evaluators.proxy_terms.proxy_terms`,
    the proxy's own), keyed by their weight field, from the ``fidelity`` parts of a dump (a part the dump
    lacks counts 0)."""
    terms = proxy_terms(ProxySettings(), "low" if fidelity == "low" else "full")
    values = []
    for row in rows:
        parts = collections.defaultdict(float, {key.partition(".")[2]: value for key, value in row.items()
                                                if key.startswith(f"{fidelity}.")})
        values.append({term.weight: term.value(parts) for term in terms})
    return values


def rescored(rows: list[dict[str, float]], weights: Weights, fidelity: str = "proxy",
             values: list[dict[str, float]] | None = None) -> list[float]:
    """The proxy's score recomputed from its dumped parts with other (trajectory, free gap, infill, dense
    step, step diversity, step cost) weights (the score is linear in them); ``values``: the rows'
    :func:`term_values`, when already at hand."""
    named = dict(zip(WEIGHT_FIELDS, weights, strict=True)) | {"kl_weight": 1.0}
    named["low_fidelity_free_weight"] = named["free_gap_weight"]
    return [sum(named[weight] * value for weight, value in row.items())
            for row in (values if values is not None else term_values(rows, fidelity))]


def step_only(rows: list[dict[str, float]], fidelity: str,
              weight: float = ProxySettings.dense_step_weight) -> list[float]:
    """A proxy without its generation terms: masked KL plus the cached dense step term."""
    return rescored(rows, (0.0, 0.0, 0.0, weight, 0.0, 0.0), fidelity)


TRAJECTORY_WEIGHTS = (0.0, 0.5, 1.0)
FREE_WEIGHTS = (0.0, 1 / 12, 1 / 6, 1 / 3, 2 / 3, 1.0)
INFILL_WEIGHTS = (0.0, 0.25, 0.5, 1.0)
DENSE_STEP_WEIGHTS = (0.0, 1 / 8, 1 / 4, 1 / 3, 1 / 2)
STEP_DIVERSITY_WEIGHTS = (0.0, 1 / 8, 1 / 4, 1 / 2, 1.0)
STEP_COST_WEIGHTS = (0.0, 1 / 2, 1.0)


def tuned_weights(rows: list[dict[str, float]]) -> dict[str, float]:
    """The (trajectory, free gap, infill, dense step, step diversity) weights of the grid whose rescored
    proxy (and low fidelity) ranks like the full evaluator best."""
    full = [row["full"] for row in rows]
    figures = {}
    for fidelity, prefix in (("proxy", "tuned"), ("low", "tuned_low")):
        def grid(part: str, weights: tuple[float, ...], fidelity: str = fidelity) -> tuple[float, ...]:
            return weights if f"{fidelity}.{part}" in rows[0] else (0.0,)  # a term the dump lacks stays off

        candidates = itertools.product(grid("trajectory_agreement", TRAJECTORY_WEIGHTS), grid("free_gap", FREE_WEIGHTS),
                                       grid("infill_agreement", INFILL_WEIGHTS), DENSE_STEP_WEIGHTS,
                                       grid("steps_prompted_diversity_gap", STEP_DIVERSITY_WEIGHTS),
                                       grid("step_cost", STEP_COST_WEIGHTS))
        values = term_values(rows, fidelity)
        rho, weights = max((spearman(rescored(rows, w, values=values), full), w) for w in candidates)
        figures |= {f"{prefix}_trajectory_weight": weights[0], f"{prefix}_free_weight": weights[1],
                    f"{prefix}_infill_weight": weights[2], f"{prefix}_dense_step_weight": weights[3],
                    f"{prefix}_step_diversity_weight": weights[4], f"{prefix}_step_cost_weight": weights[5],
                    f"{prefix}_spearman_{fidelity}_full": rho}
    return figures


def full_parts(rows: list[dict[str, float]]) -> dict[str, list[float]]:
    """The four terms of the full evaluator's score, per Plan (see ``dlmsearch.evaluators.full``; dumps
    from before its ``gen_gap`` / ``diversity_gap`` metrics: the pooled gaps)."""
    def gap(r: dict[str, float], name: str, got: str, dense: str) -> float:
        return r[name] if name in r else max(0.0, r[got] - r[dense])

    return {"infill": [r["full.dense_infill_accuracy"] - r["full.infill_accuracy"] for r in rows],
            "gen_nelbo": [gap(r, "full.gen_gap", "full.gen_nelbo", "full.dense_gen_nelbo") for r in rows],
            "diversity": [gap(r, "full.diversity_gap", "full.dense_gen_diversity", "full.gen_diversity")
                          for r in rows],
            "agreement": [1.0 - r["full.agreement"] for r in rows]}


def full_draws(rows: list[dict[str, float]]) -> list[list[float]]:
    """Every one-draw score of the full evaluator the rows hold: the draws of ``full`` (its
    ``full.score_draw<d>`` metrics, or ``full`` itself in a dump of one-draw scores), ``full_repeat``
    and ``full_draw<seed>``."""
    names = [key for key in rows[0] if re.fullmatch(r"full(_repeat)?\.score_draw\d+", key)]
    return [[row[name] for row in rows] for name in names]


def correlations(rows: list[dict[str, float]]) -> dict[str, float]:
    """Rank correlations of every proxy variant with the full evaluator (see the module docstring)."""
    column = {key: [row[key] for row in rows] for key in rows[0]}
    pruning = [i for i, row in enumerate(rows) if row["mean_sparsity"] >= 0.3]
    subset = {key: [values[i] for i in pruning] for key, values in column.items()}
    figures = {
        "spearman_proxy_full": spearman(column["proxy"], column["full"]),
        "kendall_proxy_full": kendall(column["proxy"], column["full"]),
        "spearman_low_full": spearman(column["low"], column["full"]),
        "kendall_low_full": kendall(column["low"], column["full"]),
        "spearman_kl_step_full": spearman(step_only(rows, "proxy"), column["full"]),
        "spearman_low_kl_step_full": spearman(step_only(rows, "low"), column["full"]),
        "kendall_low_kl_step_full": kendall(step_only(rows, "low"), column["full"]),
        "spearman_nelbo_full": spearman(column["nelbo"], column["full"]),
        "pruning_heavy_plans": float(len(pruning)),
        "spearman_nelbo_full_pruning": spearman(subset["nelbo"], subset["full"]),
        "spearman_proxy_full_pruning": spearman(subset["proxy"], subset["full"]),
    }
    for part, values in full_parts(rows).items():  # what the full evaluator's ranking is made of
        figures[f"spearman_full_part_{part}_full"] = spearman(values, column["full"])
    draws = full_draws(rows)
    if len(draws) >= 3:
        pairs = [spearman(a, b) for a, b in itertools.combinations(draws, 2)]
        pairwise = sum(pairs) / len(pairs)
        mean_all = [sum(values) / len(values) for values in zip(*draws, strict=True)]
        figures |= {"full_draws": float(len(draws)), "spearman_full_pairwise": pairwise,
                    "full_mean_reliability": len(draws) * pairwise / (1 + (len(draws) - 1) * pairwise),
                    "spearman_proxy_full_all": spearman(column["proxy"], mean_all),
                    "spearman_low_full_all": spearman(column["low"], mean_all)}
    if "full_repeat" in column:
        figures["spearman_full_repeat"] = spearman(column["full"], column["full_repeat"])
        figures["kendall_full_repeat"] = kendall(column["full"], column["full_repeat"])
        figures["spearman_proxy_full_repeat"] = spearman(column["proxy"], column["full_repeat"])
        mean = [(a + b) / 2 for a, b in zip(column["full"], column["full_repeat"], strict=True)]
        figures["spearman_proxy_full_mean"] = spearman(column["proxy"], mean)
        figures["spearman_low_full_mean"] = spearman(column["low"], mean)
    return figures


def variant_figures(dumped: dict[str, Any], assignments: list[str], dump: Path | None = None) -> dict[str, float]:
    """The dump's Plans (regenerated from its seed) scored by a proxy variant at both fidelities: rank
    correlations with the dumped full scores and with the dumped proxy (``variant_spearman_proxy``: the
    proxy's own noise when the variant only changes ``seed``). ``dump`` receives the dump with the
    variant's proxy and low-fidelity columns in place of its own (a dump like any other: ``--tune``
    and ``--weights`` read it)."""
    rows, seed = dumped["rows"], int(dumped["seed"])
    adapter = load_model()
    rng = random.Random(seed)
    plans = [random_plan(adapter, rng, dumped.get("space", "default")) for _ in rows]
    variant = ProxyEvaluator(adapter, settings_with(ProxySettings, assignments))
    defaults = ProxySettings()  # the dumped Plans' compressed models: a variant changes the measurement only
    variant.compressor = PlanCompressor(adapter, None, defaults.calibration_sequences, defaults.seed)
    scored: list[dict[str, float]] = []
    seconds = {"proxy": 0.0, "low": 0.0}
    for plan in tqdm(plans, desc="variant", file=sys.stderr):
        row: dict[str, float] = {}
        for fidelity, name in (("low", "low"), ("full", "proxy")):
            variant.compressor.clear()  # every timing includes the Plan's compression
            start = time.perf_counter()
            result = variant.evaluate(plan, fidelity)
            seconds[name] += time.perf_counter() - start
            row[name] = result.score
            row.update({f"{name}.{key}": value for key, value in result.metrics.items()})
        scored.append(row)
        if dump is not None:
            merged = [{**{k: v for k, v in old.items() if not k.startswith(("proxy", "low"))}, **new}
                      for old, new in zip(rows, scored, strict=False)]
            dump.write_text(json.dumps({**dumped, "variant": assignments, "rows": merged}, indent=1))
    full = [row["full"] for row in rows]
    figures = {"variant_seconds_per_plan_proxy": seconds["proxy"] / len(plans),
               "variant_seconds_per_plan_low": seconds["low"] / len(plans),
               "variant_spearman_proxy_full": spearman([r["proxy"] for r in scored], full),
               "variant_spearman_low_full": spearman([r["low"] for r in scored], full),
               "variant_spearman_proxy": spearman([r["proxy"] for r in scored], [row["proxy"] for row in rows])}
    draws = full_draws(rows)
    if len(draws) >= 3:
        mean_all = [sum(values) / len(values) for values in zip(*draws, strict=True)]
        figures["variant_spearman_proxy_full_all"] = spearman([r["proxy"] for r in scored], mean_all)
        figures["variant_spearman_low_full_all"] = spearman([r["low"] for r in scored], mean_all)
    if "full_repeat" in rows[0]:
        mean = [(r["full"] + r["full_repeat"]) / 2 for r in rows]
        figures["variant_spearman_proxy_full_mean"] = spearman([r["proxy"] for r in scored], mean)
        figures["variant_spearman_low_full_mean"] = spearman([r["low"] for r in scored], mean)
    return figures


def extra_draw_figures(dumped: dict[str, Any], draws: int, dump: Path | None = None) -> dict[str, float]:
    """The dump's Plans (regenerated from its seed) scored by one more full evaluator of ``draws`` draws
    under seeds neither dumped evaluator used (``full_extra``), against the mean of the dumped
    evaluators' draws: the self-agreement of a ``draws``-draw judge when the dump holds ``draws``
    draws in all, and the proxy against that judge. ``dump`` receives the rows with ``full_extra``."""
    rows, seed = dumped["rows"], int(dumped["seed"])
    dumped_draws = full_draws(rows)
    adapter = load_model()
    rng = random.Random(seed)
    plans = [random_plan(adapter, rng, dumped.get("space", "default")) for _ in rows]
    extra = FullEvaluator(adapter, FullSettings(seed=len(dumped_draws), draws=draws))
    defaults = ProxySettings()  # the dumped Plans' compressed models (the proxy's compressor scored them)
    extra.compressor = PlanCompressor(adapter, None, defaults.calibration_sequences, defaults.seed)
    start = time.perf_counter()
    for plan, row in tqdm(list(zip(plans, rows, strict=True)), desc="extra draws", file=sys.stderr):
        if plan.sampler.steps != row["steps"]:
            raise ValueError(f"the dump's Plans are not those of seed {seed}: steps {row['steps']} vs "
                             f"{plan.sampler.steps}")
        result = extra.evaluate(plan)
        row["full_extra"] = result.score
        row.update({f"full_extra.{key}": value for key, value in result.metrics.items()})
        if dump is not None:
            dump.write_text(json.dumps({**dumped, "rows": rows}, indent=1))
    seconds = (time.perf_counter() - start) / len(rows)
    judge = [sum(values) / len(values) for values in zip(*dumped_draws, strict=True)]
    extra_scores = [row["full_extra"] for row in rows]
    return {"extra_draws": float(draws), "dumped_draws": float(len(dumped_draws)),
            "seconds_per_plan_extra": seconds,
            "spearman_full_extra_vs_dumped": spearman(extra_scores, judge),
            "kendall_full_extra_vs_dumped": kendall(extra_scores, judge),
            "spearman_proxy_full_dumped_mean": spearman([row["proxy"] for row in rows], judge),
            "spearman_low_full_dumped_mean": spearman([row["low"] for row in rows], judge),
            "spearman_proxy_full_extra": spearman([row["proxy"] for row in rows], extra_scores)}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="6 Plans and smaller evaluators")
    parser.add_argument("--plans", type=int, default=None, help="number of random Plans (default 40, quick 6)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random Plans (tuned: 0, 1; reported: 2)")
    parser.add_argument("--space", choices=sorted(SPACES), default="default",
                        help="draw the Plans from the search's space or from lightly compressed ones")
    parser.add_argument("--no-repeat", action="store_true",
                        help="score each Plan by one full evaluator only (no self-agreement figure; half the cost)")
    parser.add_argument("--dump", type=Path, default=None,
                        help="write every Plan's metrics to this JSON file")
    parser.add_argument("--from-dump", type=Path, nargs="+", default=None,
                        help="recompute the correlations from --dump files (several: their Plans pooled) instead of "
                             "scoring Plans")
    parser.add_argument("--tune", action="store_true",
                        help="with --from-dump: grid-search the weights of the proxy's terms on the dumps' Plans")
    parser.add_argument("--weights", type=float, nargs=6,
                        metavar=("TRAJECTORY", "FREE", "INFILL", "DENSE_STEP", "STEP_DIVERSITY", "STEP_COST"),
                        default=None,
                        help="with --from-dump: correlations of the proxy rescored with these weights")
    parser.add_argument("--variant", nargs="+", metavar="KEY=VALUE", default=None,
                        help="with --from-dump: rescore the dump's Plans with the proxy under these ProxySettings "
                             "(e.g. unconditional_rows=4 or seed=1) against the dumped full scores")
    parser.add_argument("--variant-dump", type=Path, default=None,
                        help="with --variant: write the variant's metrics per Plan to this JSON file")
    parser.add_argument("--low-weights", type=float, nargs=6,
                        metavar=("TRAJECTORY", "FREE", "INFILL", "DENSE_STEP", "STEP_DIVERSITY", "STEP_COST"),
                        default=None,
                        help="with --weights: other weights for the low fidelity (default: the same)")
    parser.add_argument("--full-draws", type=int, default=0, metavar="N",
                        help="draws of the full evaluator scoring the Plans (default: its own, 4; quick 1); fewer "
                             "make a cheaper, noisier judge, e.g. for tuning sets")
    parser.add_argument("--extra-draws", type=int, default=0, metavar="N",
                        help="with --from-dump: score the dump's Plans by one more full evaluator of N draws under "
                             "unused seeds, against the mean of the dumped draws (self-agreement of an N-draw judge)")
    args = parser.parse_args(argv)
    if args.from_dump is not None:
        dumps = [json.loads(path.read_text()) for path in args.from_dump]
        if len(dumps) > 1 and args.variant:
            parser.error("--variant takes one --from-dump file (it regenerates its Plans)")
        dumped = dumps[0]
        rows = [row for d in dumps for row in d["rows"]]  # several dumps: their Plans pooled
        figures = {"plans": float(len(rows)), **correlations(rows)}
        if len(dumps) == 1:
            figures["seed"] = float(dumped["seed"])
        if args.tune:
            figures.update(tuned_weights(rows))
        if args.weights:
            weights: Weights = tuple(args.weights)
            full = [row["full"] for row in rows]
            proxy = rescored(rows, weights)
            low = rescored(rows, tuple(args.low_weights or args.weights), "low")
            figures.update({"weights_trajectory": weights[0], "weights_free": weights[1], "weights_infill": weights[2],
                            "weights_dense_step": weights[3], "weights_step_diversity": weights[4],
                            "weights_step_cost": weights[5],
                            "weights_spearman_proxy_full": spearman(proxy, full),
                            "weights_kendall_proxy_full": kendall(proxy, full),
                            "weights_spearman_low_full": spearman(low, full),
                            "weights_kendall_low_full": kendall(low, full)})
            if "full_repeat" in rows[0]:
                mean = [(row["full"] + row["full_repeat"]) / 2 for row in rows]
                figures["weights_spearman_proxy_full_mean"] = spearman(proxy, mean)
                figures["weights_spearman_low_full_mean"] = spearman(low, mean)
        if args.variant:
            figures.update(variant_figures(dumped, args.variant, args.variant_dump))
        if args.extra_draws:
            figures.update(extra_draw_figures(dumped, args.extra_draws, args.dump))
        for name, value in figures.items():
            print(f"{name}: {value:.4f}")
        return figures
    spaces = sorted(SPACES) if args.quick else [args.space]
    figures = {}
    for space in spaces:
        n_plans = args.plans or (6 if args.quick else 40)
        rows, timing = score_plans(space, args.seed, n_plans, args.quick, args.dump, not args.no_repeat,
                                   args.full_draws)
        label = SPACE_LABELS[space]
        space_figures = {"plans": float(n_plans), "seed": float(args.seed), **correlations(rows),
                         "seconds_per_plan_proxy": timing["proxy"] / n_plans,
                         "seconds_per_plan_low": timing["low"] / n_plans,
                         "seconds_per_plan_full": timing["full"] / n_plans,
                         "full_over_proxy": timing["full"] / max(timing["proxy"], 1e-9)}
        figures |= {f"{name}_{label}" if len(spaces) > 1 else name: value for name, value in space_figures.items()}
        figures |= {f"spearman_{label}": space_figures["spearman_proxy_full"],
                    f"spearman_low_{label}": space_figures["spearman_low_full"],
                    f"full_self_agreement_{label}": space_figures.get("spearman_full_repeat", float("nan"))}
    for name, value in figures.items():
        print(f"{name}: {value:.4f}")
    return figures


def score_plans(space: str, seed: int, n_plans: int, quick: bool, dump: Path | None, repeat_full: bool = True,
                full_draws: int = 0) -> tuple[list[dict[str, float]], dict[str, float]]:
    """``n_plans`` random Plans of ``space`` scored by the proxy (both fidelities), by two independent full
    evaluators (``full`` and, with ``repeat_full``, ``full_repeat``: the package's, under seeds that share
    no draw) and by plain masked NELBO; every metric per Plan, and the seconds each evaluator took in all."""
    adapter = load_model()
    proxy, full = evaluators(adapter, quick, full_draws=full_draws)
    repeat = FullEvaluator(adapter, dataclasses.replace(full.settings, seed=full.settings.seed + full.settings.draws))
    repeat.compressor = proxy.compressor
    windows = eval_windows(adapter.encode(load_split("evaluation")), 128, 16 if quick else 64)
    rng = random.Random(seed)
    rows: list[dict[str, float]] = []
    timing = {"proxy": 0.0, "low": 0.0, "full": 0.0}
    for _ in tqdm(range(n_plans), desc=f"{SPACE_LABELS[space]} plans", file=sys.stderr):
        plan = random_plan(adapter, rng, space)
        row: dict[str, float] = {"steps": plan.sampler.steps,
                                 "mean_sparsity": sum(lp.sparsity for lp in plan.layers.values()) / len(plan.layers),
                                 "mean_bits": sum(sum(lp.weight_bits) / 2 for lp in plan.layers.values())
                                 / len(plan.layers)}
        runs = {"low": lambda p: proxy.evaluate(p, "low"), "proxy": proxy.evaluate, "full": full.evaluate}
        if repeat_full:
            runs["full_repeat"] = repeat.evaluate
        for name, run in runs.items():
            proxy.compressor.clear()  # every timing includes the Plan's compression
            start = time.perf_counter()
            result = run(plan)
            if name in timing:
                timing[name] += time.perf_counter() - start
            row[name] = result.score
            row.update({f"{name}.{key}": value for key, value in result.metrics.items()})
        with torch.no_grad():
            row["nelbo"] = evaluate_nelbo(proxy.compressed(plan).forward_logits, windows, adapter.mask_token_id)
        rows.append(row)
        if dump is not None:
            path = dump.with_name(f"{dump.stem}_{space}{dump.suffix}") if quick else dump
            path.write_text(json.dumps({"seed": seed, "space": space, "quick": quick,
                                        "full_draws": full.settings.draws, "rows": rows}, indent=1))
    return rows, timing


if __name__ == "__main__":
    main()
