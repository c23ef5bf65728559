"""Shared fixtures: tiny random models (fast) and the shipped embedded model."""

from __future__ import annotations

import pytest
import torch

from dlmsearch.models.adapters import DLMAdapter
from dlmsearch.models.loading import build_random_model, load_model

# One intra-op thread: the tests' tensors are tiny, and on a busy 2-core machine OpenMP threads that
# spin-wait for a descheduled partner make each small matmul tens of times slower.
torch.set_num_threads(1)


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
