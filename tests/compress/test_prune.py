"""Weight pruning: exact sparsity per row, 2:4, the score of each method, and sink-aware vs Wanda."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dlmsearch.compress.calibration import CalibrationSet, LinearInputStats
from dlmsearch.compress.prune import (
    MissingStatisticsError,
    keep_mask,
    prune_linear_,
    pruning_scores,
    pruning_statistics,
    row_ranks,
    unstructured_keep_mask,
)
from dlmsearch.models.adapters import DLMAdapter
from tests.compress.test_sinks import build_sink_model, sink_calibration

METHODS = ("magnitude", "wanda", "sink_wanda")


def prune_model_(adapter: DLMAdapter, sparsity: float, method: str, structure: str = "unstructured",
                 stats: dict[str, LinearInputStats] | None = None) -> dict[str, torch.Tensor]:
    """Every linear pruned in place with :func:`prune_linear_`; the keep-masks by name."""
    with torch.no_grad():
        return {info.name: prune_linear_(adapter.get_module(info.name), sparsity, method, structure,
                                         (stats or {}).get(info.name)) for info in adapter.linears()}


def _calib(adapter: DLMAdapter) -> CalibrationSet:
    ids = torch.randint(0, 60, (2, 16), generator=torch.Generator().manual_seed(0))
    return CalibrationSet(ids, adapter.mask_token_id, timesteps=(0.2, 0.8))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.7])
def test_each_method_reaches_the_sparsity_of_every_row(tiny_llama: DLMAdapter, method: str, sparsity: float) -> None:
    stats = pruning_statistics(tiny_llama, _calib(tiny_llama), method)
    masks = prune_model_(tiny_llama, sparsity, method, stats=stats)
    assert set(masks) == {info.name for info in tiny_llama.linears()}
    for name, mask in masks.items():
        weight = tiny_llama.get_module(name).weight
        pruned_per_row = (~mask).sum(dim=1)
        assert (pruned_per_row == round(sparsity * weight.shape[1])).all(), name
        assert (weight[~mask] == 0).all()
    assert torch.isfinite(tiny_llama.forward_logits(torch.randint(0, 60, (1, 8)))).all()


@pytest.mark.parametrize("method", METHODS)
def test_two_four_keeps_two_of_every_four(tiny_llama: DLMAdapter, method: str) -> None:
    stats = pruning_statistics(tiny_llama, _calib(tiny_llama), method)
    for name, mask in prune_model_(tiny_llama, 0.5, method, "2:4", stats=stats).items():
        groups = mask.reshape(mask.shape[0], -1, 4).sum(dim=-1)
        assert (groups == 2).all(), name
    with pytest.raises(ValueError, match="2:4 sparsity is 0.5"):
        keep_mask(torch.rand(4, 8), 0.6, "2:4")


def test_scores_of_each_method() -> None:
    weight = torch.tensor([[1.0, -2.0, 3.0, -4.0]])
    norms = torch.tensor([8.0, 1.0, 1.0, 0.5])
    stats = LinearInputStats(sq_norms=norms.double() ** 2)
    assert pruning_scores(weight, "magnitude").tolist() == [[1.0, 2.0, 3.0, 4.0]]
    assert pruning_scores(weight, "wanda", stats).tolist() == [[8.0, 2.0, 3.0, 2.0]]
    linear = nn.Linear(4, 1, bias=False)
    linear.weight.data = weight.clone()
    mask = prune_linear_(linear, 0.5, "wanda", stats=stats)
    assert mask.tolist() == [[True, False, True, False]]  # ties (2.0, 2.0) break by position
    assert linear.weight.tolist() == [[1.0, 0.0, 3.0, 0.0]]


def test_methods_without_the_right_statistics_fail_clearly() -> None:
    linear = nn.Linear(8, 2)
    with pytest.raises(MissingStatisticsError, match="needs calibration statistics"):
        prune_linear_(linear, 0.5, "wanda")
    unweighted = LinearInputStats(sq_norms=torch.ones(8, dtype=torch.float64))
    with pytest.raises(MissingStatisticsError, match="sink-weighted"):
        prune_linear_(linear, 0.5, "sink_wanda", stats=unweighted)
    weighted = LinearInputStats(sq_norms=torch.ones(8, dtype=torch.float64), token_weighted=True)
    with pytest.raises(MissingStatisticsError, match="unweighted"):
        prune_linear_(linear, 0.5, "wanda", stats=weighted)
    with pytest.raises(ValueError, match="unknown"):
        prune_linear_(linear, 0.5, "random")
    with pytest.raises(ValueError, match="heads and channels"):
        prune_linear_(linear, 0.5, "magnitude", "heads")


def _wanda_and_sink_masks(adapter: DLMAdapter, calib: CalibrationSet) -> tuple[dict, dict]:
    wanda = {name: keep_mask(pruning_scores(adapter.get_module(name).weight, "wanda", s), 0.5)
             for name, s in (pruning_statistics(adapter, calib, "wanda") or {}).items()}
    sink = {name: keep_mask(pruning_scores(adapter.get_module(name).weight, "sink_wanda", s), 0.5)
            for name, s in (pruning_statistics(adapter, calib, "sink_wanda") or {}).items()}
    return wanda, sink


def test_sink_wanda_equals_wanda_without_sinks() -> None:
    adapter = build_sink_model(sink=False)  # exactly uniform attention
    wanda, sink = _wanda_and_sink_masks(adapter, sink_calibration())
    assert all(torch.equal(wanda[name], sink[name]) for name in wanda)


def test_sink_wanda_differs_from_wanda_with_a_sink() -> None:
    adapter = build_sink_model(sink=True)
    calib = sink_calibration(timesteps=(0.1, 0.2))
    stats = pruning_statistics(adapter, calib, "wanda")
    sink_stats = pruning_statistics(adapter, calib, "sink_wanda")
    assert stats is not None and sink_stats is not None
    q_name = "model.layers.0.self_attn.q_proj"
    # embedding dim 0 is non-zero only at the sink token: down-weighting the sink empties that column
    ratio = sink_stats[q_name].sq_norms / stats[q_name].sq_norms
    assert ratio[0] < 1e-3 and ratio[2:].min() > 0.5
    wanda, sink = _wanda_and_sink_masks(adapter, calib)
    differing = [name for name in wanda if not torch.equal(wanda[name], sink[name])]
    assert any(".mlp.up_proj" in name for name in differing)
    assert any(".self_attn.v_proj" in name for name in differing)


def _sorted_keep_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """The unstructured mask by the definition: a stable sort of each row, its lowest scores dropped."""
    order = torch.sort(scores, dim=1, stable=True).indices
    kept = torch.ones_like(scores, dtype=torch.bool)
    kept.scatter_(1, order[:, :round(sparsity * scores.shape[1])], False)
    return kept


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.25, 0.5, 0.9])
def test_ranks_give_the_stable_sorts_mask_ties_included(sparsity: float) -> None:
    scores = torch.randint(0, 4, (16, 40), generator=torch.Generator().manual_seed(3)).float()  # many ties
    ranks = row_ranks(scores)
    assert ranks.dtype == torch.int16
    assert torch.equal(torch.sort(ranks.long(), dim=1).values, torch.arange(40).expand(16, 40))
    assert torch.equal(unstructured_keep_mask(ranks, sparsity), _sorted_keep_mask(scores, sparsity))
    assert torch.equal(keep_mask(scores, sparsity), _sorted_keep_mask(scores, sparsity))
    with pytest.raises(ValueError, match="sparsity=1.0"):
        unstructured_keep_mask(ranks, 1.0)
