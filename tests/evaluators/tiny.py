"""The tiny random model and data the evaluator tests share (seconds, not minutes)."""

from __future__ import annotations

import torch

from dlmsearch.compress import CalibrationSet
from dlmsearch.models.adapters import DLMAdapter
from dlmsearch.models.loading import build_random_model


def tiny_model() -> DLMAdapter:
    """A two-block random Llama-style DLM with a 64-token context."""
    return build_random_model("llama", hidden_size=64, num_heads=4, intermediate_size=128, max_length=64)


def tiny_data(adapter: DLMAdapter) -> tuple[torch.Tensor, CalibrationSet]:
    """Seeded random text ids (4,000 tokens) and a two-sequence calibration set cut from them."""
    ids = torch.randint(0, 60, (4000,), generator=torch.Generator().manual_seed(0))
    return ids, CalibrationSet.from_ids(ids, adapter.mask_token_id, n_sequences=2, seq_len=32, timesteps=(0.5,))
