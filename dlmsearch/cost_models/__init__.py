"""Cost models: the hardware registry (more to come: analytic roofline, measured profiles, memory)."""

from dlmsearch.cost_models.hardware_spec import (
    HardwareSpec,
    HardwareSpecError,
    list_hardware,
    load_hardware,
    spec_from_dict,
)

__all__ = ["HardwareSpec", "HardwareSpecError", "list_hardware", "load_hardware", "spec_from_dict"]
