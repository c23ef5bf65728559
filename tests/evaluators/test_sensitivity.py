"""Sensitivity profiles: one entry per layer group and setting, and per timestep group; cached."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlmsearch.evaluators import ProxyEvaluator, ProxySettings
from dlmsearch.evaluators.sensitivity import sensitivity_table
from tests.evaluators.tiny import tiny_data, tiny_model


def test_table_covers_groups_and_timesteps_and_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLMSEARCH_CACHE", str(tmp_path))
    adapter = tiny_model()
    ids, calib = tiny_data(adapter)
    settings = ProxySettings(windows=4, window_length=32, repeats=3, low_fidelity_windows=4, trajectory_prompts=1,
                             unconditional_rows=1, infill_windows=2, low_fidelity_infill_windows=1)
    evaluator = ProxyEvaluator(adapter, settings, text_ids=ids, calibration=calib)
    table = sensitivity_table(evaluator, bits=(2, 8), sparsities=(0.5,), timestep_groups=2)
    assert sorted(table.layers) == ["block0.attn", "block0.mlp", "block1.attn", "block1.mlp"]
    for row in table.layers.values():
        assert set(row) == {"w2", "w8", "s0.5"}
        assert 0 < row["w8"] < row["w2"]
    assert sorted(table.timesteps) == ["t0", "t1"]
    assert all(0 < entry["w8"] < entry["w2"] for entry in table.timesteps.values())

    def fail(*args: object) -> float:
        raise AssertionError("a cached table must not be recomputed")

    monkeypatch.setattr(ProxyEvaluator, "masked_kl_of", fail)
    assert sensitivity_table(evaluator, bits=(2, 8), sparsities=(0.5,), timestep_groups=2) == table
