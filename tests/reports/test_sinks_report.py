"""Sink report: the plain data (tested in detail), the figures, and one self-contained HTML file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dlmsearch.compress.sinks import SinkStatistics
from dlmsearch.reports.sinks import run_sinks, sink_figures, sink_report_data, write_sink_report


def _stats() -> SinkStatistics:
    """2 timesteps, 2 layers, 4 positions; position 1 is a sink of layer 0 at the first timestep only."""
    mass = np.array([[[0.1, 0.7, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25]],
                     [[0.25, 0.25, 0.25, 0.25], [0.4, 0.2, 0.2, 0.2]]], dtype=np.float32)
    is_sink = np.zeros_like(mass, dtype=bool)
    is_sink[0, 0, 1] = True
    return SinkStatistics(
        timesteps=np.array([0.1, 0.9], dtype=np.float32), mass=mass, soft_mask=np.zeros_like(mass),
        threshold=np.full((2, 2), 0.5, dtype=np.float32), is_sink=is_sink,
        token_ids=[3, 9], token_labels=["' '", "[MASK]"],
        token_mass=np.array([[[0.6, 0.4], [0.5, 0.5]], [[0.1, 0.9], [0.3, 0.7]]], dtype=np.float32),
        token_frequency=np.array([[0.5, 0.5], [0.1, 0.9]], dtype=np.float32), heads=[2, 2],
        metadata={"model": "toy", "n_sequences": 3})


def test_report_data_holds_every_panel() -> None:
    data = sink_report_data(_stats())
    assert data.title == "Attention sinks of toy"
    assert data.timestep_labels == ["t=0.10", "t=0.90"] and data.positions == [0, 1, 2, 3]
    assert [h.layer for h in data.heatmaps] == [0, 1]
    assert data.heatmaps[0].z[0] == pytest.approx([0.1, 0.7, 0.1, 0.1])
    assert data.heatmaps[0].sinks == [(0, 1)] and data.heatmaps[1].sinks == []
    assert data.sink_frequency == [[0.0, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    mask, space = data.tokens  # by decreasing mass share
    assert mask.label == "[MASK]" and mask.mass_share == pytest.approx((0.4 + 0.5 + 0.9 + 0.7) / 4)
    assert mask.frequency_share == pytest.approx(0.7)
    assert space.mass_by_timestep == pytest.approx([0.55, 0.2])
    assert space.attraction == pytest.approx(space.mass_share / 0.3)
    assert any(f"{100 / 16:.1f}% of (timestep, layer, position) cells are sinks" in line for line in data.summary)


def test_figures_one_heatmap_per_layer_plus_three() -> None:
    figures = sink_figures(sink_report_data(_stats()))
    assert len(figures) == 2 + 3
    assert figures[0].data[0].type == "heatmap" and figures[0].data[1].name == "sink"
    assert len(figures[2].data) == 2  # sink frequency: one line per layer


def test_html_report_is_self_contained(tmp_path: Path) -> None:
    path = write_sink_report(_stats(), tmp_path / "out" / "sinks.html")
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>") and "Attention sinks of toy" in text
    assert "<script src=" not in text and text.count("Plotly.newPlot") == 5
    assert len(text) > 1_000_000  # plotly.js is embedded, the file opens offline


def test_run_sinks_on_the_embedded_model(tmp_path: Path) -> None:
    path = run_sinks("shakespeare-char", tmp_path / "sinks.html", n_sequences=2, seq_len=16, seed=0,
                     json_path=tmp_path / "sinks.json")
    assert path.is_file()
    stats = SinkStatistics.load(tmp_path / "sinks.json")
    assert stats.mass.shape == (10, 6, 16) and stats.metadata["model"] == "shakespeare-char"
