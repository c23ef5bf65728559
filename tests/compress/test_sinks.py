"""Sink statistics: the soft-mask formula, shapes and ranges on a tiny model, a synthetic sink, JSON."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from dlmsearch.compress.calibration import CalibrationSet
from dlmsearch.compress.sinks import (
    SinkStatistics,
    compute_sink_statistics,
    heads_per_layer,
    sink_threshold,
    sink_token_weights,
    soft_sink_mask,
    summed_mass,
)
from dlmsearch.models.adapters import DLMAdapter
from dlmsearch.models.loading import build_random_model

VOCAB = 32
SINK_TOKEN = 0
SINK_POSITION = 5


def build_sink_model(sink: bool = True) -> DLMAdapter:
    """A tiny Llama whose every layer sends nearly all attention to the token :data:`SINK_TOKEN`.

    Embedding dim 0 marks the sink token and dim 1 is 1 for every token; q reads dim 1 and k reads
    dim 0 into the lowest-frequency RoPE pair (rotation < 0.01 rad over 32 positions), so each
    query's score for the sink key is large and every other score is 0. o and down are zeroed, so
    the residual stream stays the embedding in every layer. ``sink=False`` zeroes q instead:
    every score is 0 and attention is exactly uniform.
    """
    adapter = build_random_model("llama", num_layers=2, hidden_size=64, num_heads=4, vocab_size=VOCAB, seed=1)
    model = adapter.model
    head_dim, low_freq = 16, 7  # rotate_half pairs dim i with i + head_dim / 2; i = 7 turns slowest
    with torch.no_grad():
        embed = model.get_input_embeddings().weight
        embed.normal_(generator=torch.Generator().manual_seed(2))
        embed[:, :2] = 0.0
        embed[:, 1] = 1.0
        embed[SINK_TOKEN] = 0.0
        embed[SINK_TOKEN, :2] = torch.tensor([8.0, 1.0])
        for layer in model.model.layers:
            attention = layer.self_attn
            for proj in (attention.q_proj, attention.k_proj, attention.o_proj, layer.mlp.down_proj):
                proj.weight.zero_()
            for head in range(4):
                if sink:
                    attention.q_proj.weight[head * head_dim + low_freq, 1] = 3.0
                attention.k_proj.weight[head * head_dim + low_freq, 0] = 3.0
    return adapter


def sink_calibration(n_sequences: int = 4, seq_len: int = 32, **options: Any) -> CalibrationSet:
    """Random tokens (never the sink token nor [MASK]) with the sink token at :data:`SINK_POSITION`."""
    ids = torch.randint(1, VOCAB - 1, (n_sequences, seq_len), generator=torch.Generator().manual_seed(3))
    ids[:, SINK_POSITION] = SINK_TOKEN
    return CalibrationSet(ids, VOCAB - 1, batch_size=2, **options)


def test_soft_mask_matches_the_formula() -> None:
    mass = torch.tensor([[1.0, 2.0, 3.0, 10.0], [4.0, 4.5, 5.0, 4.0]])
    k, alpha = 2.0, 5.0
    for row in range(2):
        values = mass[row].tolist()
        mean = sum(values) / 4
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / 4)  # population std
        expected = [1 / (1 + math.exp(-alpha * (v - (mean + k * std)))) for v in values]
        assert soft_sink_mask(mass, k, alpha)[row].tolist() == pytest.approx(expected, rel=1e-5)
        assert sink_threshold(mass, k)[row, 0].item() == pytest.approx(mean + k * std, rel=1e-6)
    sharper = soft_sink_mask(mass, k=1.0, alpha=50.0)[0]
    assert sharper[3] > 0.99 and sharper[:3].max() < 1e-3


def test_uniform_mass_gives_one_half_everywhere() -> None:
    mask = soft_sink_mask(torch.full((2, 8), 3.0))
    assert torch.equal(mask, torch.full((2, 8), 0.5))  # sigmoid(0): a constant factor, no ranking change


def test_statistics_shapes_and_ranges(tiny_llama: DLMAdapter) -> None:
    ids = torch.randint(0, 60, (3, 12), generator=torch.Generator().manual_seed(0))
    calib = CalibrationSet(ids, tiny_llama.mask_token_id, timesteps=(0.2, 0.6, 1.0), batch_size=2)
    stats = compute_sink_statistics(tiny_llama, calib, top_tokens=5)
    assert stats.mass.shape == (3, 2, 12) and stats.soft_mask.shape == (3, 2, 12)
    assert stats.is_sink.shape == (3, 2, 12) and stats.threshold.shape == (3, 2)
    np.testing.assert_allclose(stats.mass.sum(axis=2), 1.0, atol=1e-5)
    assert ((stats.soft_mask >= 0) & (stats.soft_mask <= 1)).all()
    assert stats.sink_frequency.shape == (2, 12)
    assert ((stats.sink_frequency >= 0) & (stats.sink_frequency <= 1)).all()
    np.testing.assert_allclose(stats.sink_variance, 1 - stats.sink_frequency)
    assert np.array_equal(stats.is_sink, stats.mass > stats.threshold[..., None])
    assert "[MASK]" in stats.token_labels and len(stats.token_ids) <= 6
    assert stats.token_mass.shape == (3, 2, len(stats.token_ids))
    assert stats.token_frequency.shape == (3, len(stats.token_ids))
    mask_column = stats.token_labels.index("[MASK]")
    np.testing.assert_allclose(stats.token_mass[2, :, mask_column], 1.0, atol=1e-5)  # t=1: all masked
    assert stats.heads == [4, 4]


def test_token_mass_sums_to_one_when_every_type_is_listed(tiny_llama: DLMAdapter) -> None:
    ids = torch.randint(0, 10, (2, 16), generator=torch.Generator().manual_seed(1))
    stats = compute_sink_statistics(tiny_llama, CalibrationSet(ids, tiny_llama.mask_token_id, timesteps=(0.5,)))
    np.testing.assert_allclose(stats.token_mass.sum(axis=2), 1.0, atol=1e-5)
    np.testing.assert_allclose(stats.token_frequency.sum(axis=1), 1.0, atol=1e-5)


def test_synthetic_sink_is_found_at_its_position_and_token() -> None:
    adapter = build_sink_model()
    calib = sink_calibration(timesteps=(0.1,))
    stats = compute_sink_statistics(adapter, calib)
    assert stats.mass[0, :, SINK_POSITION].min() > 0.5  # most of every layer's attention
    assert stats.is_sink[0, :, SINK_POSITION].all()
    assert stats.soft_mask[0, :, SINK_POSITION].min() > 0.99
    assert np.delete(stats.soft_mask[0], SINK_POSITION, axis=1).max() < 0.01
    assert stats.token_ids[0] == SINK_TOKEN  # listed first: the most mass


def test_sink_weights_down_weight_the_sink_only() -> None:
    adapter = build_sink_model()
    calib = sink_calibration()
    weights = sink_token_weights(adapter, calib)
    assert len(weights) == calib.num_states
    for state, weight in zip(calib.states(), weights, strict=True):
        assert weight.shape == state.ids.shape
        assert ((weight >= 0) & (weight <= 1)).all()
        present = state.ids[:, SINK_POSITION] == SINK_TOKEN
        assert (weight[present, SINK_POSITION] < 0.01).all()
        others = torch.ones_like(weight, dtype=torch.bool)
        others[:, SINK_POSITION] = False
        assert (weight[present][others[present]] > 0.99).all()
        assert torch.equal(weight[~present], torch.full_like(weight[~present], 0.5))  # sink masked: uniform rows


def test_uniform_attention_gives_constant_weights() -> None:
    adapter = build_sink_model(sink=False)
    weights = sink_token_weights(adapter, sink_calibration())
    assert all(torch.equal(w, torch.full_like(w, 0.5)) for w in weights)


def test_summed_mass_uses_paper_units(tiny_llama: DLMAdapter) -> None:
    shares = torch.full((2, 3, 8), 1 / 8)  # uniform: each layer's share is 1/L
    mass = summed_mass(shares, heads_per_layer(tiny_llama))
    assert torch.allclose(mass, torch.full((3, 8), 2 * 4.0))  # layers * heads * queries / L


def test_json_round_trip(tmp_path, tiny_llama: DLMAdapter) -> None:
    ids = torch.randint(0, 60, (2, 8), generator=torch.Generator().manual_seed(0))
    stats = compute_sink_statistics(tiny_llama, CalibrationSet(ids, tiny_llama.mask_token_id, timesteps=(0.5, 1.0)))
    loaded = SinkStatistics.load(stats.save(tmp_path / "sinks.json"))
    np.testing.assert_allclose(loaded.mass, stats.mass)
    assert np.array_equal(loaded.is_sink, stats.is_sink)
    assert loaded.token_labels == stats.token_labels and loaded.k == stats.k
    with pytest.raises(ValueError, match="dlmsearch.sinks"):
        SinkStatistics.from_dict({**stats.to_dict(), "version": 99})
