"""The integer program's group sensitivity: the table's rows a group spans, summed."""

from __future__ import annotations

from dlmsearch.evaluators.sensitivity import SensitivityTable
from dlmsearch.models.grouping import layer_groups
from dlmsearch.models.loading import build_random_model
from dlmsearch.search.baselines import group_sensitivity

LINEARS = build_random_model("llama", num_layers=4, hidden_size=64, num_heads=4, intermediate_size=128).linears()
ROWS = {g.name: list(g.modules) for g in layer_groups(LINEARS, "block_role")}
#: A made-up table: row ``block<b>.attn`` costs 10 b + 1 at 4 bits, ``block<b>.mlp`` 10 b + 2.
TABLE = SensitivityTable(ROWS, {name: {"w4": 10 * int(name[5]) + (1 if name.endswith("attn") else 2)}
                                for name in ROWS})


def test_a_group_sums_the_rows_it_spans() -> None:
    by_name = {g.name: g for g in layer_groups(LINEARS, "contiguous", 2)}
    assert group_sensitivity(TABLE, by_name["blocks0-1.attn"], 4) == 1 + 11
    assert group_sensitivity(TABLE, by_name["blocks2-3.mlp"], 4) == 22 + 32
    block = {g.name: g for g in layer_groups(LINEARS, "block")}["block3"]
    assert group_sensitivity(TABLE, block, 4) == 31 + 32


def test_dense_bits_cost_nothing_and_missing_bits_are_none() -> None:
    group = layer_groups(LINEARS, "block_role")[0]
    assert group_sensitivity(TABLE, group, 16) == 0.0
    assert group_sensitivity(TABLE, group, 2) is None
