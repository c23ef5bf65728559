"""The training script: seeded, reproducible, resumable, writes a loadable model folder."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dlmsearch.models.loading import load_model
from dlmsearch.models.train import TrainConfig, learning_rate, train

TINY = TrainConfig(steps=4, batch_size=2, seq_len=32, warmup_steps=1, eval_every=2, eval_sequences=2,
                   hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, compile=False)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_training_is_reproducible_and_resumable(tmp_path: Path) -> None:
    card = train(TINY, tmp_path / "a")
    train(TINY, tmp_path / "b")
    train(TINY, tmp_path / "c", stop_after=3)
    resumed_card = train(TINY, tmp_path / "c", resume=True)
    a, b, c = (_weights(tmp_path / name) for name in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(a[k], c[k]) for k in a)
    assert resumed_card["steps_done"] == card["steps_done"] == 4
    assert resumed_card["tokens_seen"] == card["tokens_seen"]
    assert a["model.embed_tokens.weight"].dtype == torch.float16
    assert "validation NELBO" in (tmp_path / "a" / "MODEL_CARD.md").read_text()
    model = load_model(tmp_path / "a")
    assert model.shape.num_layers == 1


def test_learning_rate_schedule() -> None:
    cfg = TrainConfig(steps=100, warmup_steps=10, lr=1.0, min_lr_ratio=0.1)
    assert learning_rate(0, cfg) == 0.1
    assert learning_rate(9, cfg) == 1.0
    assert abs(learning_rate(100, cfg) - 0.1) < 1e-9
    assert learning_rate(50, cfg) < learning_rate(20, cfg)


def test_training_can_continue_from_a_finished_model(tmp_path: Path) -> None:
    train(TINY, tmp_path / "first")
    card = train(TINY, tmp_path / "second", init_from=tmp_path / "first")
    assert card["previous"]["steps_done"] == 4
    text = (tmp_path / "second" / "MODEL_CARD.md").read_text()
    assert "continuing a run of 4 steps" in text
    assert "| all 2 runs (this one and those it continued) | 8 steps, " in text


def test_bf16_autocast_trains_a_loadable_model(tmp_path: Path) -> None:
    card = train(dataclasses.replace(TINY, autocast_bf16=True), tmp_path / "bf16")
    train(TINY, tmp_path / "fp32")
    bf16, fp32 = _weights(tmp_path / "bf16"), _weights(tmp_path / "fp32")
    assert math.isfinite(card["val_nelbo"])
    assert any(not torch.equal(bf16[k], fp32[k]) for k in bf16)  # the autocast changed the maths
    assert card["config"]["autocast_bf16"] is True
    assert load_model(tmp_path / "bf16").shape.num_layers == 1


@pytest.mark.parametrize(("device", "message"), [("tpu", "expected 'cpu', 'cuda'"), ("cuda", "sees no CUDA GPU")])
def test_unusable_device_is_refused_before_training(tmp_path: Path, device: str, message: str) -> None:
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU: 'cuda' is usable")
    with pytest.raises(ValueError, match=message):
        train(TINY, tmp_path / "x", device=device)
    assert not (tmp_path / "x").exists()
