"""Calibration: timestep-sampled masked states and linear-input statistics collected by hooks."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from dlmsearch.compress.calibration import DEFAULT_TIMESTEPS, CalibrationSet, collect_input_statistics
from dlmsearch.models.adapters import DLMAdapter


def _calib(adapter: DLMAdapter, **options: Any) -> CalibrationSet:
    ids = torch.randint(0, 60, (3, 16), generator=torch.Generator().manual_seed(0))
    return CalibrationSet(ids, adapter.mask_token_id, **options)


def test_default_timesteps_follow_the_paper() -> None:
    assert [round(t, 6) for t in DEFAULT_TIMESTEPS] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


def test_states_cover_every_timestep_and_batch_deterministically(tiny_llama: DLMAdapter) -> None:
    calib = _calib(tiny_llama, batch_size=2)
    states = list(calib.states())
    assert calib.num_states == len(states) == 10 * 2
    assert [s.timestep_index for s in states] == [i for i in range(10) for _ in range(2)]
    assert [s.ids.shape[0] for s in states[:2]] == [2, 1]
    again = list(calib.states())
    assert all(torch.equal(a.ids, b.ids) for a, b in zip(states, again, strict=True))
    other_seed = list(CalibrationSet(calib.sequences, calib.mask_token_id, seed=1, batch_size=2).states())
    assert any(not torch.equal(a.ids, b.ids) for a, b in zip(states, other_seed, strict=True))
    for state in states:
        clean = calib.sequences[state.first_sequence:state.first_sequence + state.ids.shape[0]]
        assert torch.equal(state.ids[~state.masked], clean[~state.masked])
        assert (state.ids[state.masked] == calib.mask_token_id).all()
    assert states[-1].masked.all()  # t = 1 masks everything


def test_mask_rate_follows_the_timestep(tiny_llama: DLMAdapter) -> None:
    ids = torch.zeros(64, 64, dtype=torch.long)
    calib = CalibrationSet(ids, tiny_llama.mask_token_id, timesteps=(0.1, 0.5), batch_size=64)
    rates = [float(state.masked.float().mean()) for state in calib.states()]
    assert rates == pytest.approx([0.1, 0.5], abs=0.02)


def test_from_ids_takes_seeded_windows() -> None:
    text = torch.arange(1000)
    a = CalibrationSet.from_ids(text, mask_token_id=9999, n_sequences=5, seq_len=20, seed=3)
    b = CalibrationSet.from_ids(text, mask_token_id=9999, n_sequences=5, seq_len=20, seed=3)
    assert a.sequences.shape == (5, 20) and torch.equal(a.sequences, b.sequences)
    assert (a.sequences[:, 1:] - a.sequences[:, :-1] == 1).all()  # contiguous windows of the text
    with pytest.raises(ValueError, match="cannot fill"):
        CalibrationSet.from_ids(text[:10], mask_token_id=9999, seq_len=20)


def test_from_split_reads_the_calibration_plays(embedded: DLMAdapter) -> None:
    calib = CalibrationSet.from_split(embedded, n_sequences=4, seq_len=32)
    assert calib.sequences.shape == (4, 32)
    assert calib.mask_token_id == embedded.mask_token_id
    assert (calib.sequences != embedded.mask_token_id).all()


def test_invalid_settings_are_refused() -> None:
    ids = torch.zeros(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="timesteps"):
        CalibrationSet(ids, 1, timesteps=(0.0, 0.5))
    with pytest.raises(ValueError, match="int64"):
        CalibrationSet(ids.float(), 1)


def _recorded_inputs(adapter: DLMAdapter, calib: CalibrationSet, name: str) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    handle = adapter.get_module(name).register_forward_hook(lambda m, args, out: seen.append(args[0].detach()))
    with torch.no_grad():
        for state in calib.states():
            adapter.forward_logits(state.ids)
    handle.remove()
    return seen


def test_statistics_match_the_inputs(tiny_llama: DLMAdapter) -> None:
    calib = _calib(tiny_llama, timesteps=(0.3, 0.9), batch_size=2)
    stats = collect_input_statistics(tiny_llama, calib, hessian=True)
    assert set(stats) == {info.name for info in tiny_llama.linears()}
    for name in ("model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"):
        x = torch.cat([t.reshape(-1, t.shape[-1]) for t in _recorded_inputs(tiny_llama, calib, name)])
        assert stats[name].tokens == x.shape[0] == 2 * 3 * 16
        torch.testing.assert_close(stats[name].sq_norms.float(), x.pow(2).sum(0), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(stats[name].hessian, x.T @ x, rtol=1e-4, atol=1e-4)
        assert not stats[name].token_weighted


def test_token_weights_scale_each_token(tiny_llama: DLMAdapter) -> None:
    calib = _calib(tiny_llama, timesteps=(0.5,), batch_size=2)
    plain = collect_input_statistics(tiny_llama, calib, names=["model.layers.0.mlp.up_proj"])
    halves = [torch.full(s.ids.shape, 0.5) for s in calib.states()]
    halved = collect_input_statistics(tiny_llama, calib, token_weights=halves, names=["model.layers.0.mlp.up_proj"])
    name = "model.layers.0.mlp.up_proj"
    torch.testing.assert_close(halved[name].sq_norms, plain[name].sq_norms * 0.25)
    assert halved[name].token_weighted
    one_token = []
    for state in calib.states():
        weights = torch.zeros(state.ids.shape)
        weights[0, 0] = 1.0
        one_token.append(weights)
    only_first = collect_input_statistics(tiny_llama, calib, token_weights=one_token, names=[name])
    x = torch.cat([t[0, 0][None] for t in _recorded_inputs(tiny_llama, calib, name)])
    torch.testing.assert_close(only_first[name].sq_norms.float(), x.pow(2).sum(0), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="one \\(B, L\\) tensor per state"):
        collect_input_statistics(tiny_llama, calib, token_weights=halves[:0])
