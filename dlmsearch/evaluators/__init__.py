"""Quality of Plans: the fast proxy (cached dense reference) behind the search."""

from dlmsearch.evaluators.base import FIDELITIES, BaseEvaluator, QualityResult
from dlmsearch.evaluators.proxy import ProxyEvaluator, ProxySettings

__all__ = ["FIDELITIES", "BaseEvaluator", "ProxyEvaluator", "ProxySettings", "QualityResult"]
