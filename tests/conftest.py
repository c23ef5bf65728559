"""Shared fixtures: tiny random models (fast) and the shipped embedded model."""

from __future__ import annotations

import pytest
import torch

from dlmsearch.models.adapters import DLMAdapter
from dlmsearch.models.loading import build_random_model, load_model


@pytest.fixture(autouse=True)
def _deterministic_threads() -> None:
    torch.manual_seed(0)


@pytest.fixture
def tiny_llama() -> DLMAdapter:
    return build_random_model("llama", num_layers=2, hidden_size=64, num_heads=4)


@pytest.fixture
def tiny_qwen2() -> DLMAdapter:
    return build_random_model("qwen2", num_layers=2, hidden_size=64, num_heads=4, num_kv_heads=2)


@pytest.fixture(scope="session")
def embedded() -> DLMAdapter:
    return load_model("shakespeare-char")
