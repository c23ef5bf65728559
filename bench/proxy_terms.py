"""Candidate proxy terms, each alone, ranked against the full evaluator on a dump's Plans; and their cost.

Reproduce with::

    OMP_NUM_THREADS=1 .venv/bin/python bench/proxy_terms.py --from-dump runs/pf0_v2.json
    OMP_NUM_THREADS=1 .venv/bin/python bench/proxy_terms.py --from-dump runs/pf0_v2.json --quick   # 4 Plans, fewer rows

The dump (``bench/proxy_fidelity.py --full-repeat --dump``) holds the full evaluator's scores of
random Plans; the Plans are regenerated from its seed and compressed as the proxy compresses them.
Each candidate term is measured on the compressed model and ranked (Spearman) against the mean of
the full evaluator's two draws (or its one draw). Terms (``free`` rows: temperature 1, the Plan's
steps; ``NELBO``: the dense model's; the draws use seeds of their own, not the proxy's):

- ``kl``: masked KL on the proxy's default 8 windows;
- ``free_gap``: mean NELBO of 4 free rows of the compressed model (minus the dense model's at one
  token per step, the same for every Plan); ``free_gap_crn``: the same rows minus the dense model's
  rows at the Plan's own steps under the same seed (common random numbers), plus the dense step term;
- ``infill_agreement``: share of 8 windows' infilled characters equal to the dense fill at one pass
  per token; ``infill_agreement_crn``: equal to the dense fill at the Plan's own budget;
- ``prompted_gap_crn`` / ``prompted_agreement``: 8 greedy prompted completions, NELBO minus the dense
  model's at the Plan's steps (plus the dense prompted step gap) / token agreement with them.

Figures (``name: value``): ``spearman_<term>`` and ``seconds_<part>`` (mean per Plan, one thread).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from scipy import stats
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).parent))
from proxy_fidelity import random_plan  # noqa: E402

from dlmsearch.evaluators import ProxyEvaluator  # noqa: E402
from dlmsearch.evaluators.infill_task import InfillTask  # noqa: E402
from dlmsearch.evaluators.plan_compressor import PlanCompressor  # noqa: E402
from dlmsearch.evaluators.proxy_terms import MaskedKL  # noqa: E402
from dlmsearch.models.adapters import DLMAdapter  # noqa: E402
from dlmsearch.models.loading import load_model  # noqa: E402
from dlmsearch.models.sampler import generate  # noqa: E402
from dlmsearch.plan import Plan, SamplerSettings  # noqa: E402

ROW_SEED, SPAN_SEED = 11, 7  # not the proxy's seeds


class Terms:
    """Measures every candidate term of one Plan (dense references cached per sampler setting)."""

    def __init__(self, adapter: DLMAdapter, rows: int = 4, windows: int = 8, prompts: int = 8,
                 calibration_sequences: int = 32) -> None:
        self.proxy = ProxyEvaluator(adapter)
        self.proxy.compressor = PlanCompressor(adapter, None, calibration_sequences, 0)
        self.rows, self.windows = rows, windows
        self.task = InfillTask.with_spans(self.proxy.windows[:windows], 4, 6, SPAN_SEED)
        self.prompts = self.proxy.prompts(prompts, 64)
        self.dense: dict[tuple[int, int], dict[str, Any]] = {}
        self.seconds: dict[str, list[float]] = {}

    def _timed(self, part: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        out = fn()
        self.seconds.setdefault(part, []).append(time.perf_counter() - start)
        return out

    def _outputs(self, model: DLMAdapter, sampler: SamplerSettings, timed: bool) -> dict[str, Any]:
        sampled = dataclasses.replace(sampler, temperature=1.0)

        def run(part: str, fn: Callable[[], Any]) -> Any:
            return self._timed(part, fn) if timed else fn()

        free = run("free_rows", lambda: generate(model, torch.empty(self.rows, 0, dtype=torch.long), seed=ROW_SEED,
                                                 **dataclasses.asdict(sampled)))
        prompted = run("prompted", lambda: generate(model, self.prompts, seed=ROW_SEED, **dataclasses.asdict(sampler)))
        return {"free": run("free_nelbo", lambda: self.proxy.nelbo(free)),
                "prompted": prompted, "prompted_nelbo": self.proxy.nelbo(prompted),
                "infill": run("infill", lambda: self.task.fill(model, sampler.steps / sampler.gen_length,
                                                               sampler.block_length, self.windows))}

    def _dense(self, sampler: SamplerSettings) -> dict[str, Any]:
        key = (sampler.steps, sampler.block_length)
        if key not in self.dense:
            best = dataclasses.replace(sampler, steps=sampler.gen_length)
            self.dense[key] = {"plan": self._outputs(self.proxy.dense, sampler, False),
                               "best": self._outputs(self.proxy.dense, best, False)}
        return self.dense[key]

    def measure(self, plan: Plan) -> dict[str, float]:
        dense = self._dense(plan.sampler)
        model = self._timed("compress", lambda: self.proxy.compressed(plan))
        kl = self._timed("kl", lambda: MaskedKL("full").measure(self.proxy, model, plan)["kl"])
        got = self._outputs(model, plan.sampler, True)
        step_free = dense["plan"]["free"] - dense["best"]["free"]
        step_prompted = dense["plan"]["prompted_nelbo"] - dense["best"]["prompted_nelbo"]
        start = self.prompts.shape[1]
        return {"kl": kl, "free_gap": got["free"] - dense["best"]["free"],
                "free_gap_crn": got["free"] - dense["plan"]["free"] + step_free,
                "infill_agreement": float((got["infill"] == dense["best"]["infill"]).float().mean()),
                "infill_agreement_crn": float((got["infill"] == dense["plan"]["infill"]).float().mean()),
                "prompted_gap_crn": got["prompted_nelbo"] - dense["plan"]["prompted_nelbo"] + step_prompted,
                "prompted_agreement": float((got["prompted"][:, start:] == dense["plan"]["prompted"][:, start:])
                                            .float().mean())}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--from-dump", type=Path, required=True, help="a bench/proxy_fidelity.py --dump file")
    parser.add_argument("--quick", action="store_true",
                        help="the dump's first 4 Plans, 1 free row, 2 prompts and 2 infill windows, 8 calibration "
                             "sequences")
    parser.add_argument("--out", type=Path, default=None, help="write every Plan's terms to this JSON file")
    args = parser.parse_args(argv)
    dumped = json.loads(args.from_dump.read_text())
    rows = dumped["rows"][:4] if args.quick else dumped["rows"]
    adapter = load_model()
    rng = random.Random(int(dumped["seed"]))
    plans = [random_plan(adapter, rng) for _ in dumped["rows"]][:len(rows)]
    terms = Terms(adapter, 1, 2, 2, 8) if args.quick else Terms(adapter)
    measured = [terms.measure(plan) for plan in tqdm(plans, desc="plans", file=sys.stderr)]
    if args.out is not None:
        args.out.write_text(json.dumps({"seed": dumped["seed"], "terms": measured}, indent=1))
    full = [(r["full"] + r["full_repeat"]) / 2 if "full_repeat" in r else r["full"] for r in rows]
    figures = {"plans": float(len(rows))}
    for name in measured[0]:
        figures[f"spearman_{name}"] = float(stats.spearmanr([m[name] for m in measured], full).statistic)
    for part, values in terms.seconds.items():
        figures[f"seconds_{part}"] = statistics.mean(values)
    for name, value in figures.items():
        print(f"{name}: {value:.4f}")
    return figures


if __name__ == "__main__":
    main()
