"""Adapter (3): a checkpoint folder with its own modelling code, mapped by LLaDA's module names."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dlmsearch.models.adapters import RemoteCodeAdapter
from dlmsearch.models.loading import ModelLoadError, load_model
from dlmsearch.models.sampler import generate
from tests.models.remote_code_fixture import write_tiny_llada


@pytest.fixture
def llada_folder(tmp_path: Path) -> Path:
    return write_tiny_llada(tmp_path / "tiny-llada")


def test_remote_code_needs_explicit_trust(llada_folder: Path) -> None:
    with pytest.raises(ModelLoadError, match="trust_remote_code"):
        load_model(llada_folder)


def test_remote_code_adapter_maps_llada_names(llada_folder: Path) -> None:
    adapter = load_model(llada_folder, trust_remote_code=True)
    assert isinstance(adapter, RemoteCodeAdapter)
    assert adapter.mask_token_id == 39
    names = {(info.block, info.role): info.name for info in adapter.linears()}
    assert names[(1, "o")] == "model.transformer.blocks.1.attn_out"
    assert names[(0, "gate")] == "model.transformer.blocks.0.ff_proj"
    assert names[(0, "down")] == "model.transformer.blocks.0.ff_out"
    assert len(names) == 14
    assert adapter.shape.hidden_size == 32 and adapter.shape.intermediate_size == 64


def test_remote_code_model_runs_bidirectionally_and_generates(llada_folder: Path) -> None:
    adapter = load_model(llada_folder, trust_remote_code=True)
    ids = torch.randint(0, 38, (1, 12))
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 1) % 38
    with torch.no_grad():
        first = adapter.forward_logits(ids)[0, 0]
        second = adapter.forward_logits(changed)[0, 0]
    assert not torch.allclose(first, second)
    out = generate(adapter, ids[0, :4], gen_length=8, steps=4, block_length=8)
    assert out.shape == (1, 12) and not (out == adapter.mask_token_id).any()


def test_remote_code_attention_capture(llada_folder: Path) -> None:
    adapter = load_model(llada_folder, trust_remote_code=True)
    with adapter.capture_attention() as capture, torch.no_grad():
        adapter.forward_logits(torch.randint(0, 38, (2, 10)))
    assert sorted(capture.mass) == [0, 1]
    assert torch.allclose(capture.mass[0][0].sum(-1), torch.ones(2))
