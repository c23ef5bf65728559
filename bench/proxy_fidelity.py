"""Does the proxy rank Plans like the full evaluator? Rank correlations on random Plans.

Reproduce with::

    .venv/bin/python bench/proxy_fidelity.py            # 40 random Plans on the embedded model
    .venv/bin/python bench/proxy_fidelity.py --quick    # 8 Plans, smaller evaluators (under a minute or two)

Plans are drawn at random (seeded) over the knobs the search uses: per layer group (block x
attention / MLP) weight bits per timestep group in {2, 3, 4, 8, 16}, sparsity in {0, 0.1, ..., 0.6}
with magnitude / wanda / sink_wanda, two timestep groups, and steps in {8, 16, 32, 64} for 64
generated characters. Each Plan is scored by the proxy (full and low fidelity), by the full
evaluator, and by plain masked NELBO. Figures (``name: value``):

- ``spearman_proxy_full`` / ``kendall_proxy_full``: proxy vs full evaluator;
- ``spearman_low_full``: low-fidelity proxy vs full evaluator;
- ``spearman_nelbo_full_pruning``: plain NELBO vs full evaluator on the pruning-heavy half
  (mean sparsity >= 0.3) of the Plans, the case where perplexity is said to mislead;
- ``seconds_per_plan_proxy`` / ``seconds_per_plan_full``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

import torch
from scipy import stats
from tqdm import tqdm

from dlmsearch.data import load_split
from dlmsearch.evaluators import FullEvaluator, FullSettings, ProxyEvaluator, ProxySettings
from dlmsearch.models.adapters import DLMAdapter
from dlmsearch.models.diffusion import eval_windows, evaluate_nelbo
from dlmsearch.models.loading import load_model
from dlmsearch.plan import LayerPlan, ModelRef, Plan, SamplerSettings

BITS = (2, 3, 4, 8, 16)
SPARSITIES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
METHODS = ("magnitude", "wanda", "sink_wanda")
STEPS = (8, 16, 32, 64)


def random_plan(adapter: DLMAdapter, rng: random.Random) -> Plan:
    """A random Plan: one setting per (block, attention | MLP) group, two timestep groups."""
    layers = {}
    for block in range(adapter.shape.num_layers):
        for part in ("attn", "mlp"):
            setting = LayerPlan(weight_bits=(rng.choice(BITS), rng.choice(BITS)), act_bits=(16, 16),
                                sparsity=rng.choice(SPARSITIES), prune_method=rng.choice(METHODS), group_size=64)
            for info in adapter.linears():
                if info.block == block and (info.role in ("q", "k", "v", "o")) == (part == "attn"):
                    layers[info.name] = setting
    sampler = SamplerSettings(steps=rng.choice(STEPS), gen_length=64, block_length=32)
    return Plan(ModelRef(adapter.name, adapter.shape.fingerprint), sampler, (0.5,), "nested", layers)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="8 Plans and smaller evaluators")
    parser.add_argument("--plans", type=int, default=None, help="number of random Plans (default 40, quick 8)")
    args = parser.parse_args(argv)
    n_plans = args.plans or (8 if args.quick else 40)
    adapter = load_model()
    proxy = ProxyEvaluator(adapter, ProxySettings(windows=8, low_fidelity_windows=2, trajectory_prompts=2,
                                                  calibration_sequences=8) if args.quick else None)
    full = FullEvaluator(adapter, FullSettings(infill_windows=8, prompts=2, unconditional=2,
                                               calibration_sequences=8) if args.quick else None)
    windows = eval_windows(adapter.encode(load_split("evaluation")), 128, 16 if args.quick else 64)
    rng = random.Random(0)
    rows = []
    timing = {"proxy": 0.0, "full": 0.0}
    for _ in tqdm(range(n_plans), desc="plans", file=sys.stderr):
        plan = random_plan(adapter, rng)
        start = time.perf_counter()
        proxy_score = proxy.evaluate(plan).score
        timing["proxy"] += time.perf_counter() - start
        low_score = proxy.evaluate(plan, "low").score
        start = time.perf_counter()
        full_score = full.evaluate(plan).score
        timing["full"] += time.perf_counter() - start
        with torch.no_grad():
            nelbo = evaluate_nelbo(proxy.compressed(plan).forward_logits, windows, adapter.mask_token_id)
        mean_sparsity = sum(lp.sparsity for lp in plan.layers.values()) / len(plan.layers)
        rows.append((proxy_score, low_score, full_score, nelbo, mean_sparsity))
    proxy_s, low_s, full_s, nelbo_s, sparsity = (list(col) for col in zip(*rows, strict=True))
    pruning = [i for i, s in enumerate(sparsity) if s >= 0.3]
    figures = {
        "plans": float(n_plans),
        "spearman_proxy_full": float(stats.spearmanr(proxy_s, full_s).statistic),
        "kendall_proxy_full": float(stats.kendalltau(proxy_s, full_s).statistic),
        "spearman_low_full": float(stats.spearmanr(low_s, full_s).statistic),
        "kendall_low_full": float(stats.kendalltau(low_s, full_s).statistic),
        "spearman_nelbo_full_pruning": float(stats.spearmanr([nelbo_s[i] for i in pruning],
                                                             [full_s[i] for i in pruning]).statistic)
        if len(pruning) > 2 else float("nan"),
        "pruning_heavy_plans": float(len(pruning)),
        "seconds_per_plan_proxy": timing["proxy"] / n_plans,
        "seconds_per_plan_full": timing["full"] / n_plans,
    }
    for name, value in figures.items():
        print(f"{name}: {value:.4f}")
    return figures


if __name__ == "__main__":
    main()
