"""Compressed copies of one dense model, sharing its calibration statistics across Plans."""

from __future__ import annotations

import copy

from dlmsearch.compress import CalibrationSet, CalibrationStatistics, apply_plan_
from dlmsearch.models.adapters import DLMAdapter
from dlmsearch.plan import PRUNE_METHODS, Plan


class PlanCompressor:
    """Applies Plans to copies of ``dense``; the dense model itself is never changed.

    Statistics for every pruning method and GPTQ are computed once, on first need, from
    ``calibration`` (default: ``calibration_sequences`` windows of the calibration plays), and each
    dense weight's pruning order is sorted once (:meth:`CalibrationStatistics.ranks`).
    Quantized layers simulate (dequantize-then-matmul): evaluators measure quality, not speed.
    The last compressed copy is kept (``keep_last``), so that scoring one Plan at both fidelities,
    or with several evaluators sharing this compressor, compresses it once; callers must not
    change the returned model. It shows no progress bars: it runs inside a search's own bar.
    """

    def __init__(self, dense: DLMAdapter, calibration: CalibrationSet | None = None,
                 calibration_sequences: int = 32, seed: int = 0, keep_last: bool = True) -> None:
        self.dense = dense
        self.keep_last = keep_last
        self._last: tuple[Plan, DLMAdapter] | None = None
        self._calibration = calibration
        self._calibration_sequences = calibration_sequences
        self._seed = seed
        self._statistics: CalibrationStatistics | None = None
        self._without_calibration = CalibrationStatistics()  # magnitude pruning's ranks, for Plans needing no data

    def statistics(self) -> CalibrationStatistics:
        """Calibration statistics of the dense model for every pruning method and GPTQ."""
        if self._statistics is None:
            calib = self._calibration or CalibrationSet.from_split(
                self.dense, n_sequences=self._calibration_sequences, seed=self._seed)
            layers = [info.name for info in self.dense.linears()]
            self._statistics = CalibrationStatistics.compute(self.dense, calib, PRUNE_METHODS[1:], layers,
                                                             progress=False)
        return self._statistics

    def clear(self) -> None:
        """Forget the kept compressed copy (benchmarks call it to time compression too)."""
        self._last = None

    def compressed(self, plan: Plan) -> DLMAdapter:
        """A compressed copy of the dense model (the kept one when ``plan`` equals the last Plan)."""
        if self._last is not None and self._last[0] == plan:
            return self._last[1]
        self._last = None
        model = copy.deepcopy(self.dense)
        needs_stats = any((lp.sparsity > 0 and lp.prune_method != "magnitude") or lp.quant_method == "gptq"
                          for lp in plan.layers.values())
        statistics = self.statistics() if needs_stats else self._without_calibration
        apply_plan_(model, plan, statistics=statistics, use_kernels=False, progress=False)
        if self.keep_last:
            self._last = (plan, model)
        return model
