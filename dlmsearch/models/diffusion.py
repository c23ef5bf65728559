"""The masked-diffusion objective shared by training and evaluation (MDLM / LLaDA).

A clean sequence x0 is corrupted by masking each token independently with probability t; the
model predicts the masked tokens from the rest. ``sum over masked tokens of CE / t``, averaged
per token, is the negative ELBO (NELBO): an upper bound on the per-token negative log-likelihood.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

LogitsFn = Callable[[torch.Tensor], torch.Tensor]

#: Smallest mask probability drawn; keeps the 1/t weight finite.
MIN_MASK_PROB = 1e-3


def bidirectional_attention_mask(batch: int, length: int, dtype: torch.dtype,
                                 device: torch.device | str = "cpu") -> torch.Tensor:
    """Additive 4-D zero mask (batch, 1, L, L): every position attends to every position.

    Passing it to a transformers decoder (Llama, Qwen2, ...) overrides the causal mask, which turns
    the stock module into a bidirectional denoiser without custom modelling code.
    """
    return torch.zeros(batch, 1, length, length, dtype=dtype, device=device)


def mask_tokens(ids: torch.Tensor, mask_prob: torch.Tensor, mask_token_id: int,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask each token of ``ids`` (B, L) with its row's probability ``mask_prob`` (B,).

    Returns the corrupted ids and the boolean mask of masked positions.
    """
    draws = torch.rand(ids.shape, generator=generator, device=ids.device)
    masked = draws < mask_prob[:, None]
    return torch.where(masked, torch.full_like(ids, mask_token_id), ids), masked


def nelbo_loss(logits: torch.Tensor, targets: torch.Tensor, masked: torch.Tensor,
               mask_prob: torch.Tensor) -> torch.Tensor:
    """Per-token NELBO in nats: ``sum(masked CE / t) / (B * L)``."""
    ce = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")
    weighted = (ce * masked) / mask_prob[:, None]
    return weighted.sum() / targets.numel()


def stratified_mask_probs(n: int, offset: float = 0.5) -> torch.Tensor:
    """``n`` mask probabilities evenly spread over (0, 1]: a low-variance grid for evaluation."""
    grid = (torch.arange(n, dtype=torch.float64) + offset) / n
    return grid.clamp(min=MIN_MASK_PROB).float()


@torch.no_grad()
def evaluate_nelbo(logits_fn: LogitsFn, sequences: torch.Tensor, mask_token_id: int,
                   seed: int = 0, repeats: int = 4, batch_size: int = 16) -> float:
    """Deterministic NELBO (nats/token) of ``sequences`` (N, L) under ``logits_fn``.

    Every sequence is scored ``repeats`` times; the mask probabilities of all N*repeats scored
    states form one stratified grid over (0, 1], and the masks come from a generator seeded with
    ``seed``, so the same model gives the same figure every time.
    """
    n = sequences.shape[0]
    probs = stratified_mask_probs(n * repeats)
    order = torch.randperm(n * repeats, generator=torch.Generator().manual_seed(seed))
    probs = probs[order].view(repeats, n)
    generator = torch.Generator().manual_seed(seed + 1)
    total, count = 0.0, 0
    for r in range(repeats):
        for start in range(0, n, batch_size):
            batch = sequences[start:start + batch_size]
            t = probs[r, start:start + batch_size]
            noisy, masked = mask_tokens(batch, t, mask_token_id, generator)
            logits = logits_fn(noisy)
            total += float(nelbo_loss(logits, batch, masked, t)) * batch.numel()
            count += batch.numel()
    return total / count


def unigram_entropy(ids: torch.Tensor, vocab_size: int) -> float:
    """Entropy (nats/token) of the empirical unigram distribution of ``ids``: the floor to beat."""
    counts = torch.bincount(ids.flatten(), minlength=vocab_size).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())


def eval_windows(ids: torch.Tensor, length: int, count: int, phase: float = 0.0) -> torch.Tensor:
    """``count`` non-overlapping windows of ``length`` tokens spread evenly over ``ids``.

    ``phase`` in [0, 1) shifts every window by that share of the spacing between windows: with
    ``phase=0.5`` the windows sit halfway between those of ``phase=0`` (same count), so two
    evaluators can measure on disjoint held-out text.
    """
    if not 0.0 <= phase < 1.0:
        raise ValueError(f"phase={phase}: must be in [0, 1)")
    n_windows = ids.numel() // length
    if n_windows < count * (2 if phase else 1):
        between = f" (phase={phase}: and as many between them)" if phase else ""
        raise ValueError(f"count={count} windows of length {length}{between} do not fit in {ids.numel()} tokens")
    spacing = (n_windows - 1) / max(count - 1, 1)
    last = n_windows - 2 if phase else n_windows - 1
    starts = (torch.linspace(0, n_windows - 1, count) + phase * spacing).clamp(max=last).long() * length
    return torch.stack([ids[s:s + length] for s in starts.tolist()])
