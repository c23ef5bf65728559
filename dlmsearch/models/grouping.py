"""Layer groups: linears of a model that share one compression setting.

The one place that says how linears group (the search space's knobs, the sensitivity table's
rows and the benchmarks' random Plans all group through :func:`layer_groups`). Groupings:
``block_role`` = ``block<i>.attn`` / ``block<i>.mlp``, ``block`` = ``block<i>``,
``contiguous`` = ``blocks<i>-<j>.attn|mlp`` over ``contiguous_groups`` runs of consecutive
blocks, ``per_layer`` = each linear by module name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dlmsearch.models.adapters import ATTENTION_ROLES, LinearInfo

LAYER_GROUPINGS: tuple[str, ...] = ("block_role", "block", "contiguous", "per_layer")


@dataclass(frozen=True)
class LayerGroup:
    """Linears that share one setting in the search."""

    name: str
    modules: tuple[str, ...]
    roles: frozenset[str]
    blocks: tuple[int, ...]


def layer_groups(linears: Sequence[LinearInfo], grouping: str, contiguous_groups: int = 4) -> list[LayerGroup]:
    """Group ``linears`` as ``grouping`` (one of :data:`LAYER_GROUPINGS`) says; order follows the model."""
    num_blocks = max(info.block for info in linears) + 1
    keys: dict[str, list[LinearInfo]] = {}
    for info in linears:
        part = "attn" if info.role in ATTENTION_ROLES else "mlp"
        if grouping == "per_layer":
            key = info.name
        elif grouping == "block":
            key = f"block{info.block}"
        elif grouping == "contiguous":
            runs = min(contiguous_groups, num_blocks)
            index = info.block * runs // num_blocks
            first = -(-index * num_blocks // runs)
            last = -(-(index + 1) * num_blocks // runs) - 1
            key = f"blocks{first}-{last}.{part}"
        else:
            key = f"block{info.block}.{part}"
        keys.setdefault(key, []).append(info)
    return [LayerGroup(name, tuple(i.name for i in infos), frozenset(i.role for i in infos),
                       tuple(sorted({i.block for i in infos}))) for name, infos in keys.items()]
