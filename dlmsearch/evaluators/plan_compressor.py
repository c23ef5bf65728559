"""Compressed copies of one dense model, sharing its calibration statistics across Plans."""

from __future__ import annotations

import copy

from dlmsearch.compress import CalibrationSet, CalibrationStatistics, apply_plan_
from dlmsearch.models.adapters import DLMAdapter
from dlmsearch.plan import PRUNE_METHODS, Plan


class PlanCompressor:
    """Applies Plans to copies of ``dense``; the dense model itself is never changed.

    Statistics for every pruning method and GPTQ are computed once, on first need, from
    ``calibration`` (default: ``calibration_sequences`` windows of the calibration plays).
    Quantized layers simulate (dequantize-then-matmul): evaluators measure quality, not speed.
    """

    def __init__(self, dense: DLMAdapter, calibration: CalibrationSet | None = None,
                 calibration_sequences: int = 32, seed: int = 0) -> None:
        self.dense = dense
        self._calibration = calibration
        self._calibration_sequences = calibration_sequences
        self._seed = seed
        self._statistics: CalibrationStatistics | None = None

    def statistics(self) -> CalibrationStatistics:
        """Calibration statistics of the dense model for every pruning method and GPTQ."""
        if self._statistics is None:
            calib = self._calibration or CalibrationSet.from_split(
                self.dense, n_sequences=self._calibration_sequences, seed=self._seed)
            layers = [info.name for info in self.dense.linears()]
            self._statistics = CalibrationStatistics.compute(self.dense, calib, PRUNE_METHODS[1:], layers)
        return self._statistics

    def compressed(self, plan: Plan) -> DLMAdapter:
        """A compressed copy of the dense model."""
        model = copy.deepcopy(self.dense)
        needs_stats = any((lp.sparsity > 0 and lp.prune_method != "magnitude") or lp.quant_method == "gptq"
                          for lp in plan.layers.values())
        apply_plan_(model, plan, statistics=self.statistics() if needs_stats else None, use_kernels=False)
        return model
