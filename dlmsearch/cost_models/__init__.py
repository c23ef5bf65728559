"""Cost models: the hardware registry and the analytic roofline (measured profiles come next)."""

from dlmsearch.cost_models.analytic import AnalyticCostModel
from dlmsearch.cost_models.base import BaseCostModel, CostResult
from dlmsearch.cost_models.hardware_spec import (
    HardwareSpec,
    HardwareSpecError,
    list_hardware,
    load_hardware,
    spec_from_dict,
)

__all__ = ["AnalyticCostModel", "BaseCostModel", "CostResult", "HardwareSpec", "HardwareSpecError", "list_hardware",
           "load_hardware", "spec_from_dict"]
