"""Unstructured and 2:4 weight pruning of linear layers: magnitude, Wanda and sink-aware Wanda.

Every method scores each weight and zeroes the lowest-scoring ones *per output row* (Wanda's
comparison group), without updating the remaining weights:

- ``magnitude``: ``|W_ij|``.
- ``wanda`` (arXiv 2306.11695): ``|W_ij| * ||X_j||_2``, ``X_j`` the j-th input column over the
  calibration tokens.
- ``sink_wanda`` (Sink-Aware Pruning, arXiv 2602.17664): Wanda's score with ``||X_j||_2`` taken over
  activations multiplied per token by ``1 - soft sink mask``, so tokens that act as (moving)
  attention sinks in a masked state count less. Statistics come from
  ``collect_input_statistics(adapter, calib, token_weights=sink_token_weights(adapter, calib))``.

Structures: ``unstructured`` prunes ``round(sparsity * in_features)`` weights of every row;
``2:4`` keeps exactly 2 of every 4 consecutive input weights of every row (sparsity 0.5).
Statistics are taken once on the dense model, as in the paper's sink-aware implementation
(Wanda's reference code instead re-collects the inputs block by block after pruning).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dlmsearch.compress.calibration import CalibrationSet, LinearInputStats, collect_input_statistics
from dlmsearch.compress.sinks import DEFAULT_ALPHA, DEFAULT_K, sink_token_weights
from dlmsearch.models.adapters import DLMAdapter
from dlmsearch.plan import PRUNE_METHODS

#: Structures this module prunes (``heads`` and ``channels`` live in :mod:`dlmsearch.compress.structured`).
WEIGHT_STRUCTURES: tuple[str, ...] = ("unstructured", "2:4")


class MissingStatisticsError(ValueError):
    """A pruning method that needs calibration statistics got none (or the wrong kind)."""


def pruning_scores(weight: torch.Tensor, method: str, stats: LinearInputStats | None = None) -> torch.Tensor:
    """Importance of every weight (out, in) under ``method``; higher means keep."""
    if method not in PRUNE_METHODS:
        raise ValueError(f"prune method {method!r} is unknown; allowed: {', '.join(PRUNE_METHODS)}")
    magnitude = weight.detach().abs().float()
    if method == "magnitude":
        return magnitude
    norms = _checked_stats(method, stats).col_norms.to(device=weight.device, dtype=torch.float32)
    if norms.numel() != weight.shape[1]:
        raise ValueError(f"statistics cover {norms.numel()} input columns; the weight has {weight.shape[1]}")
    return magnitude * norms[None, :]


def _checked_stats(method: str, stats: LinearInputStats | None) -> LinearInputStats:
    """``stats`` if they fit ``method``; a clear error otherwise."""
    if stats is None:
        raise MissingStatisticsError(f"prune method {method!r} needs calibration statistics of the layer's inputs: "
                                     f"pass stats=pruning_statistics(adapter, calib, {method!r})[name]")
    if method == "sink_wanda" and not stats.token_weighted:
        raise MissingStatisticsError("sink_wanda needs sink-weighted statistics (collect_input_statistics with "
                                     "token_weights=sink_token_weights(...)); got unweighted ones")
    if method == "wanda" and stats.token_weighted:
        raise MissingStatisticsError("wanda needs unweighted statistics; these were collected with token "
                                     "weights (use method 'sink_wanda' for them)")
    return stats


def keep_mask(scores: torch.Tensor, sparsity: float, structure: str = "unstructured") -> torch.Tensor:
    """Boolean mask (out, in) of the weights to keep: the highest scores of every row.

    ``unstructured`` drops the ``round(sparsity * in)`` lowest scores of each row; ``2:4`` keeps
    the 2 highest of every group of 4 consecutive inputs (``sparsity`` must be 0.5). Ties break
    by position (stable sort), so the count is always exact.
    """
    rows, cols = scores.shape
    if structure == "2:4":
        if sparsity != 0.5:
            raise ValueError(f"2:4 sparsity is 0.5 by definition; got sparsity={sparsity}")
        if cols % 4:
            raise ValueError(f"2:4 pruning needs in_features divisible by 4; got {cols}")
        groups = scores.reshape(rows, cols // 4, 4)
        order = torch.sort(groups, dim=-1, descending=True, stable=True).indices
        kept = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, order[..., :2], True)
        return kept.reshape(rows, cols)
    if structure != "unstructured":
        raise ValueError(f"structure {structure!r} is not a weight structure; allowed: {', '.join(WEIGHT_STRUCTURES)} "
                         "(heads and channels: dlmsearch.compress.structured)")
    return unstructured_keep_mask(row_ranks(scores), sparsity)


def row_ranks(scores: torch.Tensor) -> torch.Tensor:
    """Rank of every score within its row (out, in): 0 for the lowest, ties by position (stable sort).

    The ranks hold every unstructured sparsity's mask at once (:func:`unstructured_keep_mask`), so an
    evaluator that prunes one dense weight at many sparsities sorts it once. Int16 where the rows are
    short enough (half the memory of the scores), else int32.
    """
    cols = scores.shape[1]
    dtype = torch.int16 if cols <= torch.iinfo(torch.int16).max else torch.int32
    order = torch.sort(scores, dim=1, stable=True).indices
    positions = torch.arange(cols, dtype=dtype, device=scores.device).expand_as(order)
    return torch.empty_like(order, dtype=dtype).scatter_(1, order, positions)


def unstructured_keep_mask(ranks: torch.Tensor, sparsity: float) -> torch.Tensor:
    """The unstructured keep-mask of ``sparsity`` from :func:`row_ranks`: drops the ``round(sparsity * in)``
    lowest-ranked weights of every row."""
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity={sparsity}: must be in [0, 1)")
    return ranks >= round(sparsity * ranks.shape[1])


@torch.no_grad()
def prune_linear_(linear: nn.Module, sparsity: float, method: str, structure: str = "unstructured",
                  stats: LinearInputStats | None = None) -> torch.Tensor:
    """Zero the lowest-scoring weights of ``linear`` in place; return the boolean keep-mask (out, in)."""
    weight = getattr(linear, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or not weight.is_floating_point():
        raise TypeError(f"{type(linear).__name__} has no dense 2-D weight to prune (prune before quantizing)")
    mask = keep_mask(pruning_scores(weight, method, stats), sparsity, structure)
    weight.mul_(mask.to(weight.dtype))
    return mask


def pruning_statistics(adapter: DLMAdapter, calib: CalibrationSet, method: str, k: float = DEFAULT_K,
                       alpha: float = DEFAULT_ALPHA,
                       names: Sequence[str] | None = None, progress: bool = True
                       ) -> dict[str, LinearInputStats] | None:
    """The calibration ``method`` needs: None for magnitude, input statistics for Wanda, and for
    ``sink_wanda`` input statistics of sink-down-weighted activations (soft mask with ``k``, ``alpha``).
    ``progress`` shows bars on a terminal."""
    if method not in PRUNE_METHODS:
        raise ValueError(f"prune method {method!r} is unknown; allowed: {', '.join(PRUNE_METHODS)}")
    if method == "magnitude":
        return None
    weights = sink_token_weights(adapter, calib, k, alpha, progress) if method == "sink_wanda" else None
    return collect_input_statistics(adapter, calib, token_weights=weights, names=names, progress=progress)
