"""The attention-sink report: data first (:func:`sink_report_data`), then plotly figures, then HTML.

``dlmsearch sinks --out sinks.html`` calls :func:`run_sinks`: it measures
:class:`~dlmsearch.compress.sinks.SinkStatistics` of a model on the calibration plays and writes one
self-contained HTML file (plotly.js embedded, so it opens offline) with

- per layer, a heatmap of attention mass over timestep (mask ratio) x key position, sinks marked;
- the sink frequency of each position (fraction of timesteps at which it is a sink), per layer;
- the attention mass received per token type against how often that token type occurs.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlmsearch.compress.calibration import DEFAULT_N_SEQUENCES, CalibrationSet
from dlmsearch.compress.sinks import SinkStatistics, compute_sink_statistics

logger = logging.getLogger("dlmsearch.reports.sinks")


@dataclass(frozen=True)
class LayerHeatmap:
    """Attention mass of one layer: ``z[timestep][position]`` plus the sink cells."""

    layer: int
    z: list[list[float]]
    sinks: list[tuple[int, int]]  # (timestep index, position) of every sink cell


@dataclass(frozen=True)
class TokenTypeRow:
    """One token type: its share of attention mass against its share of positions (means over timesteps)."""

    label: str
    token_id: int
    mass_share: float  # mean over timesteps and layers
    frequency_share: float  # mean over timesteps
    mass_by_timestep: list[float]  # mean over layers, one per timestep

    @property
    def attraction(self) -> float:
        """How many times more mass the token type gets than its frequency alone would give."""
        return self.mass_share / self.frequency_share if self.frequency_share > 0 else float("inf")


@dataclass(frozen=True)
class SinkReportData:
    """Everything the sink figures draw, as plain lists (tested; no plotly needed)."""

    title: str
    timestep_labels: list[str]
    positions: list[int]
    heatmaps: list[LayerHeatmap]
    sink_frequency: list[list[float]]  # [layer][position]
    tokens: list[TokenTypeRow]  # by decreasing mass share
    summary: list[str]


def sink_report_data(stats: SinkStatistics) -> SinkReportData:
    """The plain data of the sink report built from ``stats``."""
    labels = [f"t={t:.2f}" for t in stats.timesteps.tolist()]
    heatmaps = []
    for layer in range(stats.num_layers):
        cells = np.argwhere(stats.is_sink[:, layer, :])
        heatmaps.append(LayerHeatmap(layer, stats.mass[:, layer, :].tolist(),
                                     [(int(t), int(p)) for t, p in cells]))
    mass_share = stats.token_mass.mean(axis=(0, 1))
    frequency_share = stats.token_frequency.mean(axis=0)
    by_timestep = stats.token_mass.mean(axis=1)  # (T, S)
    tokens = [TokenTypeRow(label, token_id, float(mass_share[i]), float(frequency_share[i]),
                           by_timestep[:, i].tolist())
              for i, (label, token_id) in enumerate(zip(stats.token_labels, stats.token_ids, strict=True))]
    tokens.sort(key=lambda row: row.mass_share, reverse=True)
    return SinkReportData(
        title=f"Attention sinks of {stats.metadata.get('model') or 'model'}",
        timestep_labels=labels,
        positions=list(range(stats.seq_len)),
        heatmaps=heatmaps,
        sink_frequency=stats.sink_frequency.tolist(),
        tokens=tokens,
        summary=_summary(stats, tokens),
    )


def _summary(stats: SinkStatistics, tokens: list[TokenTypeRow]) -> list[str]:
    meta = stats.metadata
    lines = [f"{meta.get('n_sequences', '?')} calibration sequences of {stats.seq_len} tokens, "
             f"{len(stats.timesteps)} mask ratios, {stats.num_layers} layers; sink: mass > mean + "
             f"{stats.k:g} std; soft mask slope alpha={stats.alpha:g}.",
             f"{100 * float(stats.is_sink.mean()):.1f}% of (timestep, layer, position) cells are sinks; "
             f"{int((stats.sink_frequency == 1).sum())} (layer, position) pairs are sinks at every timestep."]
    if tokens:
        top = max(tokens, key=lambda row: row.mass_share)
        lines.append(f"Token type with the most attention: {top.label} ({100 * top.mass_share:.1f}% of the mass, "
                     f"{100 * top.frequency_share:.1f}% of the positions).")
    return lines


def _plotly() -> Any:
    try:
        import plotly.graph_objects as go
    except ImportError as exc:  # pragma: no cover - plotly is a dependency
        raise ImportError("the sink report draws with plotly: pip install plotly") from exc
    return go


def sink_figures(data: SinkReportData) -> list[Any]:
    """Plotly figures of ``data``: one heatmap per layer, sink frequency, mass per token type."""
    go = _plotly()
    figures = []
    for heatmap in data.heatmaps:
        fig = go.Figure(go.Heatmap(z=heatmap.z, x=data.positions, y=data.timestep_labels, colorscale="Viridis",
                                   colorbar={"title": "mass share"}))
        if heatmap.sinks:
            fig.add_trace(go.Scatter(x=[p for _, p in heatmap.sinks],
                                     y=[data.timestep_labels[t] for t, _ in heatmap.sinks], mode="markers",
                                     name="sink", marker={"symbol": "x", "color": "red", "size": 6}))
        fig.update_layout(title=f"Layer {heatmap.layer}: attention mass per key position",
                          xaxis_title="key position", yaxis_title="mask ratio (timestep)")
        figures.append(fig)
    frequency = go.Figure([go.Scatter(x=data.positions, y=row, mode="lines", name=f"layer {layer}")
                           for layer, row in enumerate(data.sink_frequency)])
    frequency.update_layout(title="Sink frequency per position (fraction of timesteps; 1 - frequency = sink variance)",
                            xaxis_title="key position", yaxis_title="sink frequency", yaxis_range=[0, 1.05])
    figures.append(frequency)
    labels = [row.label for row in data.tokens]
    tokens = go.Figure([
        go.Bar(x=labels, y=[row.mass_share for row in data.tokens], name="share of attention mass"),
        go.Bar(x=labels, y=[row.frequency_share for row in data.tokens], name="share of positions"),
    ])
    tokens.update_layout(title="Attention mass per token type (mean over timesteps and layers)", barmode="group",
                         xaxis_title="token type", yaxis_title="share")
    figures.append(tokens)
    by_timestep = go.Figure(go.Heatmap(z=[list(col) for col in zip(*[row.mass_by_timestep for row in data.tokens],
                                                                     strict=True)],
                                       x=labels, y=data.timestep_labels, colorscale="Viridis",
                                       colorbar={"title": "mass share"}))
    by_timestep.update_layout(title="Attention mass per token type and timestep (mean over layers)",
                              xaxis_title="token type", yaxis_title="mask ratio (timestep)")
    figures.append(by_timestep)
    return figures


def write_sink_report(stats: SinkStatistics, path: str | Path) -> Path:
    """Write the sink report of ``stats`` as one self-contained HTML file (plotly.js embedded)."""
    data = sink_report_data(stats)
    parts = [fig.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, fig in enumerate(sink_figures(data))]
    summary = "".join(f"<li>{html.escape(line)}</li>" for line in data.summary)
    document = (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(data.title)}</title></head>"
                f"<body><h1>{html.escape(data.title)}</h1><ul>{summary}</ul>\n" + "\n".join(parts) +
                "\n</body></html>\n")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(document, encoding="utf-8")
    logger.info("wrote sink report %s", out)
    return out


def run_sinks(model_name_or_path: str | Path, out_path: str | Path, n_sequences: int = DEFAULT_N_SEQUENCES,
              seq_len: int | None = None, seed: int = 0, trust_remote_code: bool = False,
              json_path: str | Path | None = None) -> Path:
    """Measure the sink statistics of a model on the calibration plays and write the HTML report.

    ``seq_len`` defaults to 128 tokens (or the model's context when shorter); ``json_path`` also
    saves the statistics as JSON. Returns the report path.
    """
    from dlmsearch.models.loading import load_model

    adapter = load_model(model_name_or_path, trust_remote_code=trust_remote_code)
    calib = CalibrationSet.from_split(adapter, n_sequences=n_sequences, seq_len=seq_len, seed=seed)
    stats = compute_sink_statistics(adapter, calib)
    if json_path is not None:
        stats.save(json_path)
    return write_sink_report(stats, out_path)
