"""Attention-sink statistics of a DLM across timesteps, and the sink weights of sink-aware pruning.

A *sink* is a key position that receives far more attention than the others. In autoregressive
models sinks sit still (the first token); in DLMs they move as denoising advances (arXiv
2510.15731), which is why Sink-Aware Pruning (arXiv 2602.17664) down-weights them per masked
state instead of always keeping them.

Definitions (``k = 2``, ``alpha = 5`` by default, both configurable):

- *attention mass* of a key position: the attention it receives. :class:`SinkStatistics` reports
  it per layer as a share (the layer's mass sums to 1 over positions; averaged over the batch).
  The soft masks use the paper's unit: the sum over queries and heads, i.e. ``share * heads *
  queries`` (and, for pruning, summed over layers as well).
- *sink*: a position whose mass exceeds ``mean + k * std`` over the positions (population std).
- *soft sink mask*: ``sigmoid(alpha * (mass - (mean + k * std)))``. Where the mass is (nearly)
  uniform, the mask is (nearly) ``sigmoid(0) = 0.5`` at every position: a constant factor on all
  tokens, which leaves Wanda's per-row ranking unchanged. Only positions that stand out change it.
- *sink frequency* of a position: the fraction of timesteps at which it is a sink; ``1 -
  frequency`` is what the issue calls its *sink variance*.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from dlmsearch.compress.calibration import CalibrationSet
from dlmsearch.models.adapters import DLMAdapter

logger = logging.getLogger("dlmsearch.compress.sinks")

#: Paper defaults: a sink lies more than 2 standard deviations above the mean mass ...
DEFAULT_K = 2.0
#: ... and the soft mask's sigmoid has slope 5 in units of summed attention mass.
DEFAULT_ALPHA = 5.0
#: Token types kept in :class:`SinkStatistics` (by total mass); bounds the JSON for large vocabularies.
DEFAULT_TOP_TOKENS = 64
SINKS_FORMAT = "dlmsearch.sinks"
SINKS_VERSION = 1


def sink_threshold(mass: torch.Tensor, k: float = DEFAULT_K) -> torch.Tensor:
    """``mean + k * std`` of ``mass`` over its last dimension (population std), keeping that dimension."""
    mean = mass.mean(dim=-1, keepdim=True)
    return mean + k * mass.std(dim=-1, keepdim=True, unbiased=False)


def soft_sink_mask(mass: torch.Tensor, k: float = DEFAULT_K, alpha: float = DEFAULT_ALPHA) -> torch.Tensor:
    """``sigmoid(alpha * (mass - (mean + k * std)))``, statistics over the last dimension."""
    mass = mass.float()
    return torch.sigmoid(alpha * (mass - sink_threshold(mass, k)))


def heads_per_layer(adapter: DLMAdapter) -> list[int]:
    """Query heads of each block, read from the q projection (structured pruning may have removed some)."""
    head_dim = adapter.shape.head_dim
    return [info.out_features // head_dim for info in adapter.linears() if info.role == "q"]


@torch.no_grad()
def attention_shares(adapter: DLMAdapter, ids: torch.Tensor) -> torch.Tensor:
    """(layers, B, L) share of each layer's attention received by each key position for ``ids`` (B, L)."""
    with adapter.capture_attention() as capture:
        adapter.forward_logits(ids.to(adapter.device))
    return torch.stack([capture.mass[layer][0] for layer in sorted(capture.mass)])


def summed_mass(shares: torch.Tensor, heads: Sequence[int]) -> torch.Tensor:
    """The paper's per-state mass (B, L): attention summed over queries, heads and layers.

    ``shares`` is (layers, B, L) as :func:`attention_shares` returns; each layer's share is scaled
    back by its head count and the number of queries (all positions attend, bidirectionally).
    """
    scale = torch.as_tensor(list(heads), dtype=shares.dtype) * shares.shape[-1]
    return (shares * scale[:, None, None]).sum(dim=0)


@torch.no_grad()
def sink_token_weights(adapter: DLMAdapter, calib: CalibrationSet, k: float = DEFAULT_K,
                       alpha: float = DEFAULT_ALPHA, progress: bool = True) -> list[torch.Tensor]:
    """Per-token weights ``1 - soft sink mask`` (B, L) for every state of ``calib``, in state order.

    This is the calibration step of Sink-Aware Pruning: the mask of each state comes from that
    state's own attention (summed over queries, heads and layers), so sinks that move across
    timesteps are found where they are. Pass the result to
    :func:`~dlmsearch.compress.calibration.collect_input_statistics` as ``token_weights``.
    ``progress`` shows a bar on a terminal.
    """
    heads = heads_per_layer(adapter)
    weights = []
    states = tqdm(calib.states(), total=calib.num_states, desc="sink masks", unit="state",
                  disable=None if progress else True)
    for state in states:
        mass = summed_mass(attention_shares(adapter, state.ids), heads)
        weights.append(1.0 - soft_sink_mask(mass, k, alpha))
    return weights


@dataclass
class SinkStatistics:
    """Sink statistics of one model on one calibration set (arrays are numpy; JSON via :meth:`to_dict`).

    Shapes: T timesteps, Y layers, L positions, S token types.
    """

    timesteps: np.ndarray  # (T,) mask probabilities
    mass: np.ndarray  # (T, Y, L) share of the layer's attention per key position, batch mean
    soft_mask: np.ndarray  # (T, Y, L) soft sink mask of the batch-mean mass (paper units)
    threshold: np.ndarray  # (T, Y) mean + k * std of ``mass`` (share units)
    is_sink: np.ndarray  # (T, Y, L) bool: mass > threshold
    token_ids: list[int]  # (S,) token types listed, by decreasing total mass
    token_labels: list[str]  # (S,) readable form of each token type
    token_mass: np.ndarray  # (T, Y, S) share of the layer's attention received by each token type
    token_frequency: np.ndarray  # (T, S) share of positions holding each token type
    heads: list[int]  # (Y,) query heads per layer
    k: float = DEFAULT_K
    alpha: float = DEFAULT_ALPHA
    metadata: dict[str, Any] = field(default_factory=dict)  # model, n_sequences, seq_len, seed

    @property
    def num_layers(self) -> int:
        """Y."""
        return int(self.mass.shape[1])

    @property
    def seq_len(self) -> int:
        """L."""
        return int(self.mass.shape[2])

    @property
    def sink_frequency(self) -> np.ndarray:
        """(Y, L) fraction of timesteps at which each position is a sink."""
        return np.asarray(self.is_sink.mean(axis=0))

    @property
    def sink_variance(self) -> np.ndarray:
        """(Y, L) ``1 - sink_frequency`` (the issue's definition)."""
        return 1.0 - self.sink_frequency

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary with a format header."""
        arrays = {name: getattr(self, name).tolist() for name in _ARRAY_FIELDS}
        return {"format": SINKS_FORMAT, "version": SINKS_VERSION, **arrays,
                "token_ids": list(self.token_ids), "token_labels": list(self.token_labels),
                "heads": list(self.heads), "k": self.k, "alpha": self.alpha, "metadata": dict(self.metadata),
                "sink_frequency": self.sink_frequency.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SinkStatistics:
        """Inverse of :meth:`to_dict`; refuses other formats and versions."""
        if data.get("format") != SINKS_FORMAT or data.get("version") != SINKS_VERSION:
            raise ValueError(f"not {SINKS_FORMAT} version {SINKS_VERSION}: format={data.get('format')!r}, "
                             f"version={data.get('version')!r}")
        arrays = {name: np.asarray(data[name], dtype=bool if name == "is_sink" else np.float32)
                  for name in _ARRAY_FIELDS}
        return cls(**arrays, token_ids=[int(i) for i in data["token_ids"]],
                   token_labels=[str(s) for s in data["token_labels"]], heads=[int(h) for h in data["heads"]],
                   k=float(data["k"]), alpha=float(data["alpha"]), metadata=dict(data["metadata"]))

    def save(self, path: str | Path) -> Path:
        """Write the statistics as JSON."""
        out = Path(path)
        out.write_text(json.dumps(self.to_dict()))
        return out

    @classmethod
    def load(cls, path: str | Path) -> SinkStatistics:
        """Read statistics written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text()))


_ARRAY_FIELDS: tuple[str, ...] = ("timesteps", "mass", "soft_mask", "threshold", "is_sink", "token_mass",
                                  "token_frequency")


def token_label(adapter: DLMAdapter, token_id: int) -> str:
    """Readable name of a token id: ``[MASK]``, a visible string, or the repr of whitespace."""
    if token_id == adapter.mask_token_id:
        return "[MASK]"
    try:
        text = adapter.decode(torch.tensor([token_id]))
    except (ValueError, TypeError):
        return str(token_id)
    return text if text.strip() else repr(text)


@dataclass
class _Accumulator:
    """Running sums of one timestep: mass per position and per token type, token counts."""

    position_mass: torch.Tensor  # (Y, L)
    token_mass: torch.Tensor  # (Y, S)
    token_count: torch.Tensor  # (S,)
    rows: int = 0

    def add(self, shares: torch.Tensor, compact_ids: torch.Tensor) -> None:
        layers = shares.shape[0]
        self.position_mass += shares.sum(dim=1).double()
        index = compact_ids.reshape(1, -1).expand(layers, -1)
        self.token_mass.scatter_add_(1, index, shares.reshape(layers, -1).double())
        self.token_count += torch.bincount(compact_ids.flatten(), minlength=self.token_count.numel()).double()
        self.rows += shares.shape[1]


@torch.no_grad()
def compute_sink_statistics(adapter: DLMAdapter, calib: CalibrationSet, k: float = DEFAULT_K,
                            alpha: float = DEFAULT_ALPHA, top_tokens: int = DEFAULT_TOP_TOKENS) -> SinkStatistics:
    """Sink statistics of ``adapter``'s model over every state of ``calib`` (see the module docstring).

    Token types are the ids present in the calibration states; the ``top_tokens`` with the most
    total mass are kept, and ``[MASK]`` always is.
    """
    heads = heads_per_layer(adapter)
    vocab = torch.unique(torch.cat([calib.sequences.flatten(), torch.tensor([calib.mask_token_id])]))
    n_layers, seq_len = len(heads), calib.sequences.shape[1]
    accumulators = [_Accumulator(torch.zeros(n_layers, seq_len, dtype=torch.float64),
                                 torch.zeros(n_layers, vocab.numel(), dtype=torch.float64),
                                 torch.zeros(vocab.numel(), dtype=torch.float64)) for _ in calib.timesteps]
    states = tqdm(calib.states(), total=calib.num_states, desc="sink statistics", unit="state", disable=None)
    for state in states:
        shares = attention_shares(adapter, state.ids).double()
        accumulators[state.timestep_index].add(shares, torch.searchsorted(vocab, state.ids))
    mass = torch.stack([acc.position_mass / acc.rows for acc in accumulators])  # (T, Y, L)
    token_mass = torch.stack([acc.token_mass / acc.rows for acc in accumulators])  # (T, Y, S)
    token_frequency = torch.stack([acc.token_count / acc.token_count.sum() for acc in accumulators])
    keep = _top_token_columns(token_mass, vocab, calib.mask_token_id, top_tokens)
    paper_units = mass * torch.tensor(heads, dtype=mass.dtype)[None, :, None] * seq_len
    threshold = sink_threshold(mass, k)
    stats = SinkStatistics(
        timesteps=np.asarray(calib.timesteps, dtype=np.float32),
        mass=mass.float().numpy(),
        soft_mask=soft_sink_mask(paper_units, k, alpha).numpy(),
        threshold=threshold.squeeze(-1).float().numpy(),
        is_sink=(mass > threshold).numpy(),
        token_ids=vocab[keep].tolist(),
        token_labels=[token_label(adapter, int(i)) for i in vocab[keep].tolist()],
        token_mass=token_mass[..., keep].float().numpy(),
        token_frequency=token_frequency[:, keep].float().numpy(),
        heads=heads, k=k, alpha=alpha,
        metadata={"model": adapter.name, "n_sequences": int(calib.sequences.shape[0]), "seq_len": seq_len,
                  "seed": calib.seed})
    logger.info("sink statistics: %d timesteps x %d layers x %d positions; %.1f%% of (timestep, layer, position) "
                "cells are sinks", len(calib.timesteps), n_layers, seq_len, 100 * float(stats.is_sink.mean()))
    return stats


def _top_token_columns(token_mass: torch.Tensor, vocab: torch.Tensor, mask_token_id: int,
                       top_tokens: int) -> torch.Tensor:
    """Columns of the ``top_tokens`` token types with the most total mass, plus [MASK], by decreasing mass."""
    total = token_mass.sum(dim=(0, 1))
    order = torch.argsort(total, descending=True, stable=True)
    chosen = order[:top_tokens]
    mask_column = torch.searchsorted(vocab, torch.tensor(mask_token_id))
    if not bool((chosen == mask_column).any()):
        chosen = torch.cat([chosen, mask_column.reshape(1)])
    return chosen
