"""Search spaces: the knobs of a study spec as Optuna distributions, and trial -> Plan."""

from dlmsearch.models.grouping import LayerGroup, layer_groups
from dlmsearch.spaces.space import SearchSpace, SearchSpaceError

__all__ = ["LayerGroup", "SearchSpace", "SearchSpaceError", "layer_groups"]
