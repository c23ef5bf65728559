"""Calibration data for compression: masked states across timesteps and linear-input statistics.

A DLM never sees clean text at inference: every forward pass reads a partly masked sequence. So
calibration follows the timestep sampling of Sink-Aware Pruning (arXiv 2602.17664): each clean
sequence is masked at every timestep ``t`` of a grid (default ``{5, 10, ..., 50} / 50``), each
token independently with probability ``t`` and a seeded generator, and every resulting *masked
state* is one calibration forward pass.

:func:`collect_input_statistics` runs those states through the model with forward hooks on every
compressible linear and accumulates what pruning and GPTQ need: per-input-column squared norms
``||X_j||^2`` (optionally of token-weighted activations, as sink-aware pruning uses) and the
Hessian ``X^T X``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from dlmsearch.models.adapters import DLMAdapter, linear_dims
from dlmsearch.models.diffusion import mask_tokens

logger = logging.getLogger("dlmsearch.compress.calibration")

#: Mask probabilities of Sink-Aware Pruning's calibration: diffusion steps 5, 10, ..., 50 of 50.
DEFAULT_TIMESTEPS: tuple[float, ...] = tuple(step / 50 for step in range(5, 51, 5))
#: The paper calibrates on 128 sequences (Wanda's and SparseGPT's default as well).
DEFAULT_N_SEQUENCES = 128
#: Calibration window length when the model allows it (the embedded model's context).
DEFAULT_SEQ_LEN = 128


@dataclass(frozen=True)
class MaskedState:
    """One calibration forward pass: a batch of sequences masked at one timestep."""

    timestep_index: int  # index into CalibrationSet.timesteps
    mask_prob: float  # t: each token was masked with this probability
    first_sequence: int  # index of the batch's first row in CalibrationSet.sequences
    ids: torch.Tensor  # (B, L) token ids with [MASK] at the masked positions
    masked: torch.Tensor  # (B, L) bool: which positions were masked


@dataclass(frozen=True)
class CalibrationSet:
    """Clean calibration sequences plus the seeded timestep masking that turns them into states.

    :meth:`states` yields the masked states timestep by timestep, batch by batch; the masks of
    timestep ``i`` come from a generator seeded with ``seed * len(timesteps) + i``, so every run
    (and every consumer: sink statistics, activation statistics) sees the same states.
    """

    sequences: torch.Tensor  # (N, L) int64 clean token ids
    mask_token_id: int
    timesteps: tuple[float, ...] = DEFAULT_TIMESTEPS
    seed: int = 0
    batch_size: int = 16  # sequences per forward pass: bounds the memory of attention capture

    def __post_init__(self) -> None:
        if self.sequences.dim() != 2 or self.sequences.dtype != torch.long or self.sequences.shape[0] == 0:
            raise ValueError(f"sequences must be a non-empty (N, L) int64 tensor; got {tuple(self.sequences.shape)} "
                             f"{self.sequences.dtype}")
        bad = [t for t in self.timesteps if not 0 < t <= 1]
        if not self.timesteps or bad:
            raise ValueError(f"timesteps {list(self.timesteps)}: need at least one, each in (0, 1]")
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size}: must be a positive integer")

    @classmethod
    def from_ids(cls, ids: torch.Tensor, mask_token_id: int, n_sequences: int = DEFAULT_N_SEQUENCES,
                 seq_len: int = DEFAULT_SEQ_LEN, seed: int = 0, **options: Any) -> CalibrationSet:
        """``n_sequences`` windows of ``seq_len`` tokens at seeded random offsets of the 1-D ``ids``.

        ``options`` go to the constructor (``timesteps``, ``batch_size``).
        """
        flat = torch.as_tensor(ids, dtype=torch.long).flatten()
        if n_sequences < 1 or seq_len < 1:
            raise ValueError(f"n_sequences={n_sequences}, seq_len={seq_len}: both must be positive")
        if flat.numel() < seq_len:
            raise ValueError(f"{flat.numel()} calibration tokens cannot fill one window of {seq_len}")
        generator = torch.Generator().manual_seed(seed)
        starts = torch.randint(0, flat.numel() - seq_len + 1, (n_sequences,), generator=generator)
        windows = torch.stack([flat[s:s + seq_len] for s in starts.tolist()])
        return cls(windows, int(mask_token_id), seed=seed, **options)

    @classmethod
    def from_split(cls, adapter: DLMAdapter, n_sequences: int = DEFAULT_N_SEQUENCES, seq_len: int | None = None,
                   seed: int = 0, split: str = "calibration", **options: Any) -> CalibrationSet:
        """Windows of the shipped corpus split ``split`` (default: the calibration plays).

        ``seq_len`` defaults to :data:`DEFAULT_SEQ_LEN`, capped by the model's context length.
        """
        from dlmsearch.data import load_split

        length = seq_len or min(DEFAULT_SEQ_LEN, adapter.shape.max_length)
        ids = adapter.encode(load_split(split))
        return cls.from_ids(ids, adapter.mask_token_id, n_sequences, length, seed, **options)

    @property
    def num_batches(self) -> int:
        """Forward passes per timestep."""
        return math.ceil(self.sequences.shape[0] / self.batch_size)

    @property
    def num_states(self) -> int:
        """Masked states (forward passes) over all timesteps."""
        return len(self.timesteps) * self.num_batches

    def states(self) -> Iterator[MaskedState]:
        """The masked states, timestep by timestep, batch by batch (deterministic)."""
        for index, t in enumerate(self.timesteps):
            generator = torch.Generator().manual_seed(self.seed * len(self.timesteps) + index)
            for start in range(0, self.sequences.shape[0], self.batch_size):
                batch = self.sequences[start:start + self.batch_size]
                probs = torch.full((batch.shape[0],), float(t))
                noisy, masked = mask_tokens(batch, probs, self.mask_token_id, generator)
                yield MaskedState(index, float(t), start, noisy, masked)


@dataclass
class LinearInputStats:
    """What one linear layer saw over the calibration states.

    ``sq_norms[j]`` is ``sum over tokens of (w_token * x_j)^2``; ``w_token`` is 1 unless token
    weights were given (``token_weighted``). ``hessian`` is ``sum over tokens of (w x)(w x)^T``
    (not averaged; divide by ``tokens`` for the mean) when it was requested.
    """

    sq_norms: torch.Tensor  # (K,) float64
    tokens: int = 0
    token_weighted: bool = False
    hessian: torch.Tensor | None = None  # (K, K) float32

    @property
    def col_norms(self) -> torch.Tensor:
        """``||X_j||_2`` per input column: the activation factor of Wanda's score."""
        return self.sq_norms.sqrt()

    def add(self, inputs: torch.Tensor, weights: torch.Tensor | None) -> None:
        """Accumulate one batch of inputs (..., K), scaled per token by ``weights`` (same leading shape)."""
        x = inputs.detach().reshape(-1, inputs.shape[-1]).float()
        if weights is not None:
            if weights.numel() != x.shape[0]:
                raise ValueError(f"token weights {tuple(weights.shape)} do not match the {x.shape[0]} tokens "
                                 f"of a linear input {tuple(inputs.shape)}")
            x = x * weights.reshape(-1, 1).to(device=x.device, dtype=x.dtype)
        self.sq_norms += x.double().pow(2).sum(dim=0).to(self.sq_norms.device)
        self.tokens += x.shape[0]
        if self.hessian is not None:
            self.hessian.addmm_(x.T, x)


@dataclass
class _InputRecorder:
    """Forward hooks that feed every named module's input into its :class:`LinearInputStats`."""

    modules: dict[str, nn.Module]
    stats: dict[str, LinearInputStats]
    weights: torch.Tensor | None = None  # token weights of the state being run
    handles: list[Any] = field(default_factory=list)

    def __enter__(self) -> _InputRecorder:
        for name, module in self.modules.items():
            self.handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def _hook(self, name: str) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            self.stats[name].add(args[0], self.weights)

        return hook


def _empty_stats(module: nn.Module, hessian: bool, weighted: bool, device: torch.device) -> LinearInputStats:
    in_features, _ = linear_dims(module)
    return LinearInputStats(
        sq_norms=torch.zeros(in_features, dtype=torch.float64, device=device),
        token_weighted=weighted,
        hessian=torch.zeros(in_features, in_features, dtype=torch.float32, device=device) if hessian else None,
    )


@torch.no_grad()
def collect_input_statistics(adapter: DLMAdapter, calib: CalibrationSet,
                             token_weights: Sequence[torch.Tensor] | None = None, hessian: bool = False,
                             names: Sequence[str] | None = None, progress: bool = True
                             ) -> dict[str, LinearInputStats]:
    """Run every masked state of ``calib`` and record the inputs of the compressible linears.

    ``token_weights`` holds one (B, L) tensor per state, in :meth:`CalibrationSet.states` order,
    that multiplies each token's activations before they are accumulated (sink-aware pruning
    passes ``1 - soft sink mask``). ``hessian`` also accumulates ``X^T X`` (K x K float32, for
    GPTQ). ``names`` restricts the hooks to some linears (default: all of ``adapter.linears()``).
    Returns statistics keyed by module name; deterministic for a given model and ``calib``.
    ``progress`` shows a bar on a terminal.
    """
    wanted = list(names) if names is not None else [info.name for info in adapter.linears()]
    if token_weights is not None and len(token_weights) != calib.num_states:
        raise ValueError(f"token_weights has {len(token_weights)} entries; the calibration set has "
                         f"{calib.num_states} states (one (B, L) tensor per state)")
    modules = {name: adapter.get_module(name) for name in wanted}
    weighted = token_weights is not None
    stats = {name: _empty_stats(module, hessian, weighted, adapter.device) for name, module in modules.items()}
    logger.info("collecting input statistics of %d linears over %d states (weighted=%s, hessian=%s)",
                len(modules), calib.num_states, weighted, hessian)
    device = adapter.device
    with _InputRecorder(modules, stats) as recorder:
        states = tqdm(calib.states(), total=calib.num_states, desc="calibration", unit="state",
                      disable=None if progress else True)
        for index, state in enumerate(states):
            recorder.weights = token_weights[index] if token_weights is not None else None
            adapter.forward_logits(state.ids.to(device))
    return stats
