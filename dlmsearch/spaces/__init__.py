"""Search spaces: the knobs of a study spec as Optuna distributions, and trial -> Plan."""

from dlmsearch.spaces.space import LayerGroup, SearchSpace, SearchSpaceError, layer_groups

__all__ = ["LayerGroup", "SearchSpace", "SearchSpaceError", "layer_groups"]
