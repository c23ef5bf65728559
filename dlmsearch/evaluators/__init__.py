"""Quality of Plans: the fast proxy (cached dense reference) and the generation-based full evaluator."""

from dlmsearch.evaluators.base import FIDELITIES, BaseEvaluator, QualityResult
from dlmsearch.evaluators.full import FullEvaluator, FullSettings
from dlmsearch.evaluators.proxy import ProxyEvaluator, ProxySettings
from dlmsearch.evaluators.sensitivity import SensitivityTable, sensitivity_table

__all__ = ["FIDELITIES", "BaseEvaluator", "FullEvaluator", "FullSettings", "ProxyEvaluator", "ProxySettings",
           "QualityResult", "SensitivityTable", "sensitivity_table"]
