"""Layer groups: every grouping partitions the linears, under stable names."""

from __future__ import annotations

from dlmsearch.models.grouping import LAYER_GROUPINGS, layer_groups
from dlmsearch.models.loading import build_random_model

LINEARS = build_random_model("llama", num_layers=4, hidden_size=64, num_heads=4, intermediate_size=128).linears()


def test_groupings_partition_the_linears() -> None:
    counts = {"block_role": 8, "block": 4, "contiguous": 4, "per_layer": len(LINEARS)}
    assert set(counts) == set(LAYER_GROUPINGS)
    for grouping, count in counts.items():
        groups = layer_groups(LINEARS, grouping, contiguous_groups=2)
        assert len(groups) == count, grouping
        modules = [m for g in groups for m in g.modules]
        assert sorted(modules) == sorted(i.name for i in LINEARS)
    assert [g.name for g in layer_groups(LINEARS, "contiguous", 2)] == [
        "blocks0-1.attn", "blocks0-1.mlp", "blocks2-3.attn", "blocks2-3.mlp"]


def test_block_role_groups_split_attention_from_mlp() -> None:
    groups = layer_groups(LINEARS, "block_role")
    assert [g.name for g in groups[:2]] == ["block0.attn", "block0.mlp"]
    assert groups[0].roles == {"q", "k", "v", "o"} and groups[1].roles == {"gate", "up", "down"}
    assert all(g.blocks == (int(g.name[5]),) for g in groups)
