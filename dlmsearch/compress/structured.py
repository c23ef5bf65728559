"""Structured pruning that shrinks the weight matrices: whole attention heads and MLP channels.

Unlike unstructured sparsity, removing a head or an intermediate channel makes every matmul that
touches it smaller, so the pruned model is faster on any backend.

- Heads are removed by *KV group*: one key/value head together with the query heads that share
  it (``num_key_value_groups`` of them, GQA). Without GQA every head is its own group. Removing
  whole groups keeps ``num_heads / num_kv_heads`` unchanged, so transformers' attention (which
  reshapes with ``view(..., -1, head_dim)`` and repeats KV heads ``num_key_value_groups`` times)
  runs on the smaller projections. Rows of q, k, v (and their biases) and columns of o go.
- Channels are intermediate units of the gated MLP: rows of gate and up, columns of down.

The model config keeps its original head and MLP sizes (they now differ per layer); the actual
sizes are the projection shapes, which ``adapter.linears()`` reports.

Importance scores are Wanda's ``|W_ij| * ||X_j||_2`` summed over every weight that belongs to
the unit (a group's q, k, v rows and o columns; a channel's gate and up rows and down column).
Each matrix's contribution is first normalised to sum to 1 over the units, so q, k, v and o (or
gate, up and down) each get an equal vote whatever their scale. Without statistics ``||X_j||`` is
taken as 1 (magnitude scores).

After the units go, :func:`reconstruct_columns_` re-fits the layer that reads them (o or down) by least
squares on the dense model's calibration inputs, so its output stays as close as it can to the dense
layer's with the columns it has left: layer-wise reconstruction after structured pruning (Kwon et al.
2022, "A Fast Post-Training Pruning Framework for Transformers", arXiv 2204.09656). On the embedded
model it halves the NELBO damage of 50% of MLP channels and cuts that of 50% of heads by 60%
(bench/pruning_methods.py).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
from torch import nn

from dlmsearch.compress.calibration import LinearInputStats
from dlmsearch.models.adapters import DLMAdapter

logger = logging.getLogger("dlmsearch.compress.structured")


def _linear(adapter: DLMAdapter, block_index: int, role: str) -> tuple[str, nn.Linear]:
    name = f"{adapter.block_prefix(block_index)}.{adapter.role_suffixes()[role]}"
    module = adapter.get_module(name)
    if not isinstance(module, nn.Linear):
        raise TypeError(f"{name} is a {type(module).__name__}; structured pruning needs plain nn.Linear layers "
                        "(prune before quantizing)")
    return name, module


def _attention_module(adapter: DLMAdapter, block_index: int) -> nn.Module:
    """The module holding q/k/v/o; it must derive its head count from the projection sizes."""
    q_name, _ = _linear(adapter, block_index, "q")
    parent = adapter.get_module(q_name.rpartition(".")[0])
    if not hasattr(parent, "head_dim") or not hasattr(parent, "num_key_value_groups"):
        raise NotImplementedError(
            f"{type(parent).__name__} does not derive its head count from its projection sizes; head pruning "
            "supports transformers-style attention (head_dim and num_key_value_groups attributes, e.g. Llama, Qwen2)")
    return parent


def head_layout(adapter: DLMAdapter, block_index: int) -> tuple[int, int, int]:
    """(query heads, KV heads, head_dim) of block ``block_index`` as its projections are now."""
    attention = _attention_module(adapter, block_index)
    head_dim = int(attention.head_dim)  # type: ignore[arg-type]
    _, q = _linear(adapter, block_index, "q")
    _, k = _linear(adapter, block_index, "k")
    return q.out_features // head_dim, k.out_features // head_dim, head_dim


def _column_norms(stats: Mapping[str, LinearInputStats] | None, name: str, linear: nn.Linear) -> torch.Tensor:
    if stats is None:
        return torch.ones(linear.in_features)
    if name not in stats:
        raise KeyError(f"no input statistics for {name}; collect them with collect_input_statistics")
    return stats[name].col_norms.float().cpu()


def _wanda(linear: nn.Linear, norms: torch.Tensor) -> torch.Tensor:
    return linear.weight.detach().abs().float().cpu() * norms[None, :]


def _normalised(unit_scores: torch.Tensor) -> torch.Tensor:
    total = unit_scores.sum()
    return unit_scores / total if total > 0 else unit_scores


def head_group_scores(adapter: DLMAdapter, block_index: int,
                      stats: Mapping[str, LinearInputStats] | None = None) -> torch.Tensor:
    """Importance (kv_heads,) of each KV group of block ``block_index`` (see the module docstring)."""
    heads, kv_heads, head_dim = head_layout(adapter, block_index)
    q_per_group = heads // kv_heads
    total = torch.zeros(kv_heads)
    for role in ("q", "k", "v"):
        name, linear = _linear(adapter, block_index, role)
        rows = _wanda(linear, _column_norms(stats, name, linear)).sum(dim=1)  # (out,)
        total += _normalised(rows.reshape(kv_heads, -1).sum(dim=1))
    name, o_proj = _linear(adapter, block_index, "o")
    columns = _wanda(o_proj, _column_norms(stats, name, o_proj)).sum(dim=0)  # (heads * head_dim,)
    total += _normalised(columns.reshape(kv_heads, q_per_group * head_dim).sum(dim=1))
    return total


def channel_scores(adapter: DLMAdapter, block_index: int,
                   stats: Mapping[str, LinearInputStats] | None = None) -> torch.Tensor:
    """Importance (intermediate,) of each MLP channel of block ``block_index`` (see the module docstring)."""
    parts = []
    for role, dim in (("gate", 1), ("up", 1), ("down", 0)):
        name, linear = _linear(adapter, block_index, role)
        parts.append(_normalised(_wanda(linear, _column_norms(stats, name, linear)).sum(dim=dim)))
    return torch.stack(parts).sum(dim=0)


def _units_to_keep(scores: torch.Tensor, ratio: float, what: str) -> torch.Tensor:
    """Sorted indices of the units kept: all but the ``round(ratio * n)`` lowest-scoring, at least one."""
    if not 0 <= ratio < 1:
        raise ValueError(f"{what} ratio={ratio}: must be in [0, 1)")
    n = scores.numel()
    n_remove = min(round(ratio * n), n - 1)
    order = torch.sort(scores.float(), descending=True, stable=True).indices
    return order[:n - n_remove].sort().values


def _slice_(linear: nn.Linear, index: torch.Tensor, dim: int) -> None:
    """Keep only the ``index`` rows (dim 0, with the bias) or columns (dim 1) of ``linear``, in place."""
    index = index.to(linear.weight.device)
    linear.weight = nn.Parameter(linear.weight.detach().index_select(dim, index).clone(),
                                 requires_grad=linear.weight.requires_grad)
    if dim == 0:
        if linear.bias is not None:
            linear.bias = nn.Parameter(linear.bias.detach().index_select(0, index).clone(),
                                       requires_grad=linear.bias.requires_grad)
        linear.out_features = index.numel()
    else:
        linear.in_features = index.numel()


def _update_sizes(module: nn.Module, **sizes: int) -> None:
    """Rewrite the size attributes ``module`` has (e.g. ``num_heads`` in older attention code)."""
    for attribute, value in sizes.items():
        if hasattr(module, attribute):
            setattr(module, attribute, value)


def _unit_slices(units: torch.Tensor, width: int) -> torch.Tensor:
    """Row indices of units ``units`` that are ``width`` rows wide each."""
    return (units[:, None] * width + torch.arange(width)[None, :]).flatten()


@torch.no_grad()
def prune_heads_(adapter: DLMAdapter, block_index: int, ratio: float, scores: torch.Tensor) -> torch.Tensor:
    """Remove the ``round(ratio * groups)`` least important KV groups of block ``block_index``, in place.

    ``scores`` holds one importance per KV group (kv_heads,) — e.g. :func:`head_group_scores` — or
    one per query head (heads,), summed per group. At least one group is kept; ratio 0 changes
    nothing. Returns the indices of the kept KV groups (in the block's current numbering).
    """
    heads, kv_heads, head_dim = head_layout(adapter, block_index)
    q_per_group = heads // kv_heads
    group_scores = scores.detach().float().cpu().flatten()
    if group_scores.numel() == heads and heads != kv_heads:
        group_scores = group_scores.reshape(kv_heads, q_per_group).sum(dim=1)
    if group_scores.numel() != kv_heads:
        raise ValueError(f"scores has {group_scores.numel()} entries; block {block_index} has {kv_heads} KV groups "
                         f"({heads} query heads)")
    kept = _units_to_keep(group_scores, ratio, "head")
    if kept.numel() == kv_heads:
        return kept
    for role in ("q", "k", "v", "o"):
        _, linear = _linear(adapter, block_index, role)
        width = q_per_group * head_dim if role in ("q", "o") else head_dim
        _slice_(linear, _unit_slices(kept, width), dim=1 if role == "o" else 0)
    _update_sizes(_attention_module(adapter, block_index), num_heads=kept.numel() * q_per_group,
                  num_key_value_heads=kept.numel())
    logger.info("block %d: kept %d of %d KV groups (%d query heads)", block_index, kept.numel(), kv_heads,
                kept.numel() * q_per_group)
    return kept


@torch.no_grad()
def prune_channels_(adapter: DLMAdapter, block_index: int, ratio: float, scores: torch.Tensor) -> torch.Tensor:
    """Remove the ``round(ratio * intermediate)`` least important MLP channels of block ``block_index``.

    ``scores`` (intermediate,) — e.g. :func:`channel_scores`. At least one channel is kept; ratio 0
    changes nothing. Returns the indices of the kept channels.
    """
    _, gate = _linear(adapter, block_index, "gate")
    channel_count = gate.out_features
    flat = scores.detach().float().cpu().flatten()
    if flat.numel() != channel_count:
        raise ValueError(f"scores has {flat.numel()} entries; block {block_index} has {channel_count} MLP channels")
    kept = _units_to_keep(flat, ratio, "channel")
    if kept.numel() == channel_count:
        return kept
    for role in ("gate", "up", "down"):
        _, linear = _linear(adapter, block_index, role)
        _slice_(linear, kept, dim=1 if role == "down" else 0)
    mlp = adapter.get_module(_linear(adapter, block_index, "gate")[0].rpartition(".")[0])
    _update_sizes(mlp, intermediate_size=kept.numel())
    logger.info("block %d: kept %d of %d MLP channels", block_index, kept.numel(), channel_count)
    return kept


#: Ridge of the least-squares re-fit, relative to the mean diagonal of the kept inputs' Gram matrix (as
#: GPTQ damps its Hessian): keeps the solve stable where kept columns are nearly collinear.
RECONSTRUCTION_DAMPING = 0.01


@torch.no_grad()
def reconstruct_columns_(linear: nn.Linear, dense_weight: torch.Tensor, kept: torch.Tensor,
                         gram: torch.Tensor) -> None:
    """Re-fit ``linear`` (already cut to the ``kept`` input columns of ``dense_weight``, (N, K)) in place so
    that ``X[:, kept] @ W'.T`` best matches the dense ``X @ W.T`` over the calibration inputs X whose Gram
    matrix ``X.T @ X`` is ``gram`` (K, K): ``W' = W G[:, S] (G[S, S] + damping)^-1`` with S = ``kept``.
    The bias (the dense one) stays."""
    if linear.in_features != kept.numel() or tuple(dense_weight.shape) != (linear.out_features, gram.shape[0]):
        raise ValueError(f"a {linear.out_features}x{linear.in_features} layer cut to {kept.numel()} of the "
                         f"{tuple(dense_weight.shape)} dense weight's columns with a {tuple(gram.shape)} Gram matrix")
    g = gram.detach().to(torch.float64).cpu()
    index = kept.cpu()
    g_kept = g[index][:, index]
    ridge = RECONSTRUCTION_DAMPING * float(g_kept.diagonal().mean()) + 1e-12
    g_kept += ridge * torch.eye(index.numel(), dtype=torch.float64)
    target = dense_weight.detach().to(torch.float64).cpu() @ g[:, index]  # (N, |S|)
    fitted = torch.linalg.solve(g_kept, target.T).T
    linear.weight.data.copy_(fitted.to(linear.weight.dtype))
