"""Search spaces: the knobs of a study spec as Optuna distributions, and trial -> Plan."""

from dlmsearch.models.grouping import LayerGroup, layer_groups
from dlmsearch.spaces.space import SearchSpace, SearchSpaceError
from dlmsearch.spaces.spec import GenerationSpec, SpaceSpec, SparsityRange

__all__ = ["GenerationSpec", "LayerGroup", "SearchSpace", "SearchSpaceError", "SpaceSpec", "SparsityRange",
           "layer_groups"]
