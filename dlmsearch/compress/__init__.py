"""Apply a Plan: quantize, prune (sink-aware), sink statistics, apply_plan_, save / load."""

from dlmsearch.compress.apply import CalibrationStatistics, CompressionRecord, apply_plan_
from dlmsearch.compress.calibration import CalibrationSet, collect_input_statistics
from dlmsearch.compress.persist import is_compressed_folder, load_compressed, save_compressed
from dlmsearch.compress.plan_fit import check_plan_fits, plan_issues
from dlmsearch.compress.quantized_linear import QuantConfig, QuantizedLinear, force_timestep_group

__all__ = [
    "CalibrationSet",
    "CalibrationStatistics",
    "CompressionRecord",
    "QuantConfig",
    "QuantizedLinear",
    "apply_plan_",
    "check_plan_fits",
    "collect_input_statistics",
    "force_timestep_group",
    "is_compressed_folder",
    "load_compressed",
    "plan_issues",
    "save_compressed",
]
