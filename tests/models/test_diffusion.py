"""The masked-diffusion objective: masking rates, NELBO weighting, deterministic evaluation."""

from __future__ import annotations

import math

import torch

from dlmsearch.models.diffusion import (
    evaluate_nelbo,
    mask_tokens,
    nelbo_loss,
    stratified_mask_probs,
    unigram_entropy,
)


def test_mask_rate_follows_t() -> None:
    ids = torch.zeros(4, 20000, dtype=torch.long)
    noisy, masked = mask_tokens(ids, torch.tensor([0.1, 0.5, 0.9, 1.0]), 7, torch.Generator().manual_seed(0))
    rates = masked.float().mean(1)
    assert torch.allclose(rates, torch.tensor([0.1, 0.5, 0.9, 1.0]), atol=0.02)
    assert torch.equal(noisy == 7, masked)


def test_uniform_predictor_nelbo_equals_log_vocab() -> None:
    """A model that predicts uniformly scores log V per token in expectation (masked CE/t)."""
    vocab = 10
    ids = torch.randint(0, vocab, (256, 64), generator=torch.Generator().manual_seed(0))
    nelbo = evaluate_nelbo(lambda x: torch.zeros(*x.shape, vocab), ids, mask_token_id=vocab, repeats=2)
    assert abs(nelbo - math.log(vocab)) < 0.03


def test_evaluation_is_deterministic() -> None:
    ids = torch.randint(0, 5, (8, 16))
    fn = lambda x: torch.nn.functional.one_hot(x.clamp(max=4), 6).float()  # noqa: E731
    assert evaluate_nelbo(fn, ids, 5, seed=3) == evaluate_nelbo(fn, ids, 5, seed=3)


def test_loss_weights_masked_tokens_by_inverse_t() -> None:
    logits = torch.zeros(1, 4, 2)
    targets = torch.zeros(1, 4, dtype=torch.long)
    masked = torch.tensor([[True, False, False, False]])
    loss = nelbo_loss(logits, targets, masked, torch.tensor([0.25]))
    assert math.isclose(float(loss), math.log(2) / 0.25 / 4, rel_tol=1e-6)


def test_stratified_probs_and_unigram_entropy() -> None:
    assert torch.allclose(stratified_mask_probs(4), torch.tensor([0.125, 0.375, 0.625, 0.875]))
    assert math.isclose(unigram_entropy(torch.tensor([0, 1, 0, 1]), 3), math.log(2))
