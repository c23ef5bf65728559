"""Magnitude vs Wanda vs sink-aware Wanda at 30%, 50% and 70% unstructured sparsity, and structured
pruning (heads, MLP channels) with and without re-fitting the layer that reads them, by held-out NELBO.

Reproduce with::

    .venv/bin/python bench/pruning_methods.py            # full: 128 calibration sequences, 256 eval windows
    .venv/bin/python bench/pruning_methods.py --quick    # under a minute: 8 sequences, 16 windows
    .venv/bin/python bench/pruning_methods.py --model path/to/checkpoint

Every linear of every block is pruned per output row (``dlmsearch.compress.prune``). Calibration:
windows of the calibration plays (``CalibrationSet.from_split``), each masked at the ten timesteps
``{5, 10, ..., 50} / 50`` of Sink-Aware Pruning (arXiv 2602.17664); Wanda's and the sink-aware
statistics are taken once on the dense model, and each configuration prunes a freshly loaded
copy. Quality: masked-diffusion NELBO (nats per token, lower is better; ``evaluate_nelbo`` with 4
stratified mask rates per window and seeded masks) on ``eval_windows`` of the held-out evaluation
plays. Printed last as ``name: value`` lines on stdout (progress goes to stderr):

- ``nelbo_dense``: the unpruned model, the reference.
- ``nelbo_<method>_<percent>``: e.g. ``nelbo_wanda_50``.
- ``nelbo_<heads|channels>_<percent>_sliced`` / ``..._refit``: Wanda-scored heads (attention layers) or
  MLP channels of every block removed, the o / down layer only sliced, or re-fitted by least squares on
  the calibration inputs (``apply_plan_``'s default, ``reconstruct=True``).
- ``sink_weight_mean``: mean of the sink-aware token weights ``1 - soft sink mask`` over the
  calibration tokens; ``sink_tokens_fraction``: share of tokens weighted below 0.5 (sinks).

NELBO is a perplexity-like score; it can hide pruning damage that generation shows (LLM-KICK).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import torch

from dlmsearch.compress.apply import CalibrationStatistics, apply_plan_
from dlmsearch.compress.calibration import CalibrationSet, LinearInputStats, collect_input_statistics
from dlmsearch.compress.sinks import sink_token_weights
from dlmsearch.data import load_split
from dlmsearch.models.adapters import ATTENTION_ROLES, DLMAdapter
from dlmsearch.models.diffusion import eval_windows, evaluate_nelbo
from dlmsearch.models.loading import load_model
from dlmsearch.plan import Plan, uniform_plan

METHODS: tuple[str, ...] = ("magnitude", "wanda", "sink_wanda")
SPARSITIES: tuple[float, ...] = (0.3, 0.5, 0.7)
STRUCTURED: tuple[float, ...] = (0.25, 0.5)
WINDOW_LENGTH = 128


def nelbo(adapter: DLMAdapter, windows: torch.Tensor, seed: int, batch_size: int) -> float:
    """Seeded masked-token NELBO of ``windows`` under ``adapter``."""
    with torch.no_grad():
        return evaluate_nelbo(lambda ids: adapter.forward_logits(ids.to(adapter.device)).cpu(), windows,
                              adapter.mask_token_id, seed=seed, repeats=4, batch_size=batch_size)


def method_statistics(adapter: DLMAdapter, calib: CalibrationSet) -> tuple[dict[str, dict[str, LinearInputStats]],
                                                                           list[torch.Tensor]]:
    """Input statistics of the dense model per method (plain and sink-weighted) and the sink weights."""
    weights = sink_token_weights(adapter, calib)
    stats = {"wanda": collect_input_statistics(adapter, calib),
             "sink_wanda": collect_input_statistics(adapter, calib, token_weights=weights)}
    return stats, weights


def structured_plan(adapter: DLMAdapter, structure: str, ratio: float) -> Plan:
    """Wanda-scored ``structure`` ("heads": the attention layers, "channels": the MLP's) at ``ratio`` in every
    block, the other layers untouched."""
    plan = uniform_plan(adapter)
    attention = {info.name for info in adapter.linears() if info.role in ATTENTION_ROLES}
    layers = {name: dataclasses.replace(lp, structure=structure, sparsity=ratio)
              if (name in attention) == (structure == "heads") else lp for name, lp in plan.layers.items()}
    return dataclasses.replace(plan, layers=layers)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true",
                        help="reduced run (8 calibration sequences, 16 eval windows), under a minute")
    parser.add_argument("--model", default="shakespeare-char",
                        help="embedded model name or local checkpoint folder (default: shakespeare-char)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the calibration windows and of all masks")
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per forward pass")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    n_calib, n_windows = (8, 16) if args.quick else (128, 256)
    started = time.perf_counter()
    dense = load_model(args.model)
    length = min(WINDOW_LENGTH, dense.shape.max_length)
    windows = eval_windows(dense.encode(load_split("evaluation")), length, n_windows)
    calib = CalibrationSet.from_split(dense, n_sequences=n_calib, seq_len=length, seed=args.seed,
                                      batch_size=args.batch_size)
    print(f"model={args.model} calibration={n_calib}x{length} x {len(calib.timesteps)} timesteps "
          f"eval_windows={n_windows} seed={args.seed}", file=sys.stderr)

    figures: dict[str, float] = {"nelbo_dense": nelbo(dense, windows, args.seed, args.batch_size)}
    stats, weights = method_statistics(dense, calib)
    all_weights = torch.cat([w.flatten() for w in weights])
    for method in METHODS:
        for sparsity in SPARSITIES:
            adapter = load_model(args.model)
            statistics = CalibrationStatistics(by_method={method: stats.get(method)})
            apply_plan_(adapter, uniform_plan(adapter, sparsity=sparsity, prune_method=method), statistics=statistics)
            key = f"nelbo_{method}_{round(100 * sparsity)}"
            figures[key] = nelbo(adapter, windows, args.seed, args.batch_size)
            print(f"{key}={figures[key]:.4f} ({time.perf_counter() - started:.0f}s)", file=sys.stderr)
    readers = [info.name for info in dense.linears() if info.role in ("o", "down")]
    grams = collect_input_statistics(dense, calib, hessian=True, names=readers)
    for structure in ("heads", "channels"):
        for ratio in STRUCTURED:
            for label, reconstruct in (("sliced", False), ("refit", True)):
                adapter = load_model(args.model)
                statistics = CalibrationStatistics(by_method={"wanda": stats["wanda"]}, hessians=grams)
                apply_plan_(adapter, structured_plan(adapter, structure, ratio), statistics=statistics,
                            reconstruct=reconstruct)
                key = f"nelbo_{structure}_{round(100 * ratio)}_{label}"
                figures[key] = nelbo(adapter, windows, args.seed, args.batch_size)
                print(f"{key}={figures[key]:.4f} ({time.perf_counter() - started:.0f}s)", file=sys.stderr)
    figures["sink_weight_mean"] = float(all_weights.mean())
    figures["sink_tokens_fraction"] = float((all_weights < 0.5).float().mean())
    for name, value in figures.items():
        print(f"{name}: {value:.4f}")
    return figures


if __name__ == "__main__":
    main()
