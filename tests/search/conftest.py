"""A tiny study: a random 2-block model, a small proxy, the analytic cost model on a datasheet GPU."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from dlmsearch.compress import CalibrationSet
from dlmsearch.cost_models import AnalyticCostModel, load_hardware
from dlmsearch.evaluators import ProxyEvaluator, ProxySettings
from dlmsearch.models.loading import build_random_model
from dlmsearch.plan import ModelRef
from dlmsearch.search.context import StudyContext
from dlmsearch.search.spec import StudySpec, spec_from_dict
from dlmsearch.spaces import SearchSpace

TINY_SPEC: dict[str, Any] = {
    "study": "tiny",
    "hardware": "h100-sxm",
    "objectives": ["quality", "latency_ms", "peak_mem_bytes"],
    "space": {"weight_bits": [2, 4, 8, 16], "sparsity": {"min": 0.0, "max": 0.4, "step": 0.2},
              "steps": [4, 8], "block_lengths": [4, 8], "timestep_groups": 2},
    "generation": {"gen_length": 8, "prompt_length": 8},
    "evaluator": {"fidelity": "multi"},
    "n_trials": 6,
    "seed": 0,
    "verify_front": 0,  # the random model has no held-out text: verification is tested on the embedded model
}


def tiny_spec(**overrides: Any) -> StudySpec:
    """The tiny spec with top-level fields replaced."""
    return spec_from_dict({**TINY_SPEC, **overrides})


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLMSEARCH_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tiny_parts() -> tuple[Any, ProxyEvaluator]:
    """Model and evaluator shared by a module's tests (building the reference is the slow part)."""
    adapter = build_random_model("llama", num_layers=2, hidden_size=64, num_heads=4, intermediate_size=128,
                                 max_length=64)
    ids = torch.randint(0, 60, (4000,), generator=torch.Generator().manual_seed(0))
    calibration = CalibrationSet.from_ids(ids, adapter.mask_token_id, n_sequences=2, seq_len=32, timesteps=(0.5,))
    settings = ProxySettings(windows=4, window_length=32, repeats=2, low_fidelity_windows=2, trajectory_prompts=1,
                             prompt_length=8, unconditional_rows=1, infill_windows=2, low_fidelity_infill_windows=1)
    return adapter, ProxyEvaluator(adapter, settings, text_ids=ids, calibration=calibration)


@pytest.fixture
def make_context(tiny_parts: tuple[Any, ProxyEvaluator]) -> Callable[..., StudyContext]:
    """Build a StudyContext for a tiny spec (top-level overrides as keyword arguments)."""
    adapter, evaluator = tiny_parts

    def make(**overrides: Any) -> StudyContext:
        spec = tiny_spec(**overrides)
        linears = list(adapter.linears())
        space = SearchSpace(spec.space, spec.generation, ModelRef(adapter.name, adapter.shape.fingerprint), linears,
                            adapter.shape)
        cost = AnalyticCostModel(adapter.shape, linears, prompt_length=spec.generation.prompt_length)
        return StudyContext(spec, adapter, space, evaluator, cost, load_hardware(spec.hardware))

    return make
