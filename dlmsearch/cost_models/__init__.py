"""Cost models: the hardware registry, the analytic roofline, measured profiles and end-to-end timing."""

from dlmsearch.cost_models.analytic import LAYOUTS, AnalyticCostModel, WeightLayout
from dlmsearch.cost_models.base import BaseCostModel, CostResult
from dlmsearch.cost_models.hardware_spec import (
    HardwareSpec,
    HardwareSpecError,
    list_hardware,
    load_hardware,
    spec_from_dict,
)
from dlmsearch.cost_models.measured import MeasuredCostModel, tensor_bytes, time_generate
from dlmsearch.cost_models.profile import local_profile, measure_profile, merge_profiles, resolve_hardware

__all__ = ["LAYOUTS", "AnalyticCostModel", "BaseCostModel", "CostResult", "HardwareSpec", "HardwareSpecError",
           "MeasuredCostModel", "WeightLayout", "list_hardware", "load_hardware", "local_profile", "measure_profile",
           "merge_profiles", "resolve_hardware", "spec_from_dict", "tensor_bytes", "time_generate"]
