"""The study report: plain data objects first (tested), then plotly figures, then one HTML file.

``dlmsearch report RUN_DIR`` (and the end of every ``dlmsearch run``) writes a self-contained
``report.html`` (plotly.js embedded, opens offline) with

- the Pareto front in 2-D (each pair of objectives) and 3-D, feasible front highlighted,
  infeasible trials drawn apart, the budget drawn as lines, hover showing the Plan summary;
- the hypervolume history;
- the front table, the Plan that ``export --pick 'min quality'`` (and ``dlmsearch demo``) exports marked;
- for the front's Plans (a dropdown picks one, that Plan first): weight bits per layer x timestep group
  (heatmap) and sparsity per layer (bars);
- the front verification: the proxy's score against the full evaluator's per verified front Plan
  (a scatter with their rank correlation: how far to trust the proxy on this study);
- the Plans measured on a real machine (``dlmsearch measure``, the end of ``dlmsearch demo``): measured
  against predicted speed-up, full-evaluator score, the text each model wrote, and every timed round;
- parameter importances for quality, and the sensitivity profile the warm start used.
"""

from __future__ import annotations

import html
import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from dlmsearch.plan import Plan
from dlmsearch.search.attributes import FIDELITY_ATTR, LIMITS_ATTR, PLAN_ATTR, REFERENCE_ATTR, SENSITIVITY_ATTR
from dlmsearch.search.measurements import Measurement, measurements
from dlmsearch.search.pareto import feasible_front, hypervolume_history, is_feasible
from dlmsearch.search.results import degeneracy, select_trial
from dlmsearch.search.verification import Verification, proxy_agreement, verifications

logger = logging.getLogger("dlmsearch.reports.study_report")

AXIS_TITLES = {"quality": "quality (proxy score; lower is better)", "latency_ms": "latency per generation (ms)",
               "peak_mem_bytes": "peak memory (bytes)", "latency_per_step_ms": "latency per step (ms)"}
MAX_PLANS_IN_DROPDOWN = 30
#: The front table's columns: header and cell format per objective (other objectives: 4 significant digits).
TABLE_COLUMNS = {"quality": ("quality (proxy)", "{:.3f}"), "latency_ms": ("latency (ms)", "{:.1f}"),
                 "latency_per_step_ms": ("latency per step (ms)", "{:.2f}"),
                 "peak_mem_bytes": ("peak memory (MiB)", "{:.2f}")}
#: Above the top right corner of a figure, clear of its axis labels.
DROPDOWN_PLACE = {"x": 1.0, "xanchor": "right", "y": 1.02, "yanchor": "bottom"}
ROW_PIXELS = 20  # height of one labelled row in the per-layer and importance charts


@dataclass(frozen=True)
class TrialPoint:
    """One COMPLETE trial in objective space."""

    number: int
    values: dict[str, float]
    feasible: bool
    on_front: bool
    summary: str
    fidelity: str
    verified_quality: float | None = None  # the full evaluator's score, where the front was verified
    degenerate: str | None = None  # why its text counts as collapsed (export refuses it), or None


@dataclass(frozen=True)
class FrontData:
    """Every COMPLETE trial as a point, the objective names and the budget limits."""

    objectives: list[str]
    points: list[TrialPoint]
    budget: dict[str, float]
    pick: int | None = None  # the trial ``export --pick 'min quality'`` exports (None: every one degenerate)

    def front(self) -> list[TrialPoint]:
        """The feasible front, sorted by the first objective."""
        return sorted((p for p in self.points if p.on_front), key=lambda p: p.values[self.objectives[0]])

    def verified(self) -> list[TrialPoint]:
        """The points the full evaluator verified, sorted by trial number."""
        return [p for p in self.points if p.verified_quality is not None]

    def proxy_agreement(self) -> float | None:
        """Spearman of proxy and verified quality over :meth:`verified` (see
        :func:`~dlmsearch.search.verification.proxy_agreement`)."""
        return proxy_agreement([Verification(p.number, p.verified_quality or 0.0, p.values.get("quality", 0.0), {})
                                for p in self.verified()])


@dataclass(frozen=True)
class PlanLayout:
    """A Plan as the heatmap and the bar chart draw it."""

    trial: int
    layers: list[str]
    timestep_labels: list[str]
    weight_bits: list[list[int]]  # [layer][timestep group]
    sparsity: list[float]


@dataclass(frozen=True)
class StudyReportData:
    """Everything the report draws."""

    study: str
    front: FrontData
    hypervolume: list[tuple[int, float]]
    plans: list[PlanLayout]
    importances: dict[str, float]
    sensitivity: dict[str, dict[str, float]] = field(default_factory=dict)
    failed: int = 0
    measured: list[Measurement] = field(default_factory=list)  # by trial number


def _summary(plan_data: dict[str, Any] | None) -> str:
    from dlmsearch.search.results import plan_summary

    if plan_data is None:
        return ""
    return plan_summary(Plan.from_dict(plan_data))


def front_data(study: optuna.Study) -> FrontData:
    """The points of every COMPLETE trial, which of them form the feasible front, and the budget."""

    objectives = list(study.metric_names or [f"objective {i}" for i in range(len(study.directions))])
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    front = {t.number for t in feasible_front(trials)}
    checked = verifications(study)
    points = [TrialPoint(t.number, dict(zip(objectives, t.values or [], strict=True)), is_feasible(t),
                         t.number in front, _summary(t.user_attrs.get(PLAN_ATTR)),
                         str(t.user_attrs.get(FIDELITY_ATTR, "")),
                         checked[t.number].quality if t.number in checked else None,
                         degeneracy(t, checked.get(t.number)))
              for t in sorted(trials, key=lambda t: t.number)]
    budget = {k: float(v) for k, v in study.user_attrs.get(LIMITS_ATTR, {}).items() if k in objectives}
    return FrontData(objectives, points, budget, best_pick(study))


#: The ``--pick`` expression whose Plan the report marks: what ``dlmsearch demo`` exports.
BEST_PICK = "min quality"


def best_pick(study: optuna.Study) -> int | None:
    """The trial ``export --pick 'min quality'`` would export, or None (no feasible Plan, or every feasible
    one degenerate)."""
    if "quality" not in (study.metric_names or []):
        return None
    try:
        return select_trial(study, pick=BEST_PICK).number
    except ValueError:  # DegenerateTextError or PickError: nothing to export
        return None


def plan_layout(trial: FrozenTrial) -> PlanLayout:
    """Weight bits per layer and timestep group, and sparsity per layer, of a trial's Plan."""
    plan = Plan.from_dict(trial.user_attrs[PLAN_ATTR])
    names = list(plan.layers)
    bounds = [0.0, *plan.timestep_groups, 1.0]
    labels = [f"progress {bounds[i]:.2f}-{bounds[i + 1]:.2f}" for i in range(len(bounds) - 1)]
    return PlanLayout(trial.number, names, labels, [list(plan.layers[n].weight_bits) for n in names],
                      [plan.layers[n].sparsity for n in names])


def importances(study: optuna.Study) -> dict[str, float]:
    """Parameter importances for the quality objective (empty when there are too few trials)."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    names = study.metric_names or []
    if len(trials) < 4 or "quality" not in names:
        return {}
    index = names.index("quality")
    try:
        with warnings.catch_warnings():  # "importance for low target values" is what we want: quality is a loss
            warnings.simplefilter("ignore", UserWarning)
            evaluator = optuna.importance.PedAnovaImportanceEvaluator()
            return dict(optuna.importance.get_param_importances(study, evaluator=evaluator,
                                                                target=lambda t: t.values[index]))
    except (RuntimeError, ValueError) as exc:
        logger.info("no parameter importances: %s", exc)
        return {}


def study_report_data(study: optuna.Study) -> StudyReportData:
    """Build every data object of the report from the study storage."""

    front = front_data(study)
    stored = study.user_attrs.get(REFERENCE_ATTR, {})
    reference = [float(stored.get(name, 1.0)) for name in front.objectives]
    trials = study.get_trials(deepcopy=False)
    on_front = sorted(feasible_front(trials), key=lambda t: (t.number != front.pick, t.values[0]))
    on_front = on_front[:MAX_PLANS_IN_DROPDOWN]
    failed = sum(t.state == TrialState.FAIL for t in trials)
    return StudyReportData(study.study_name, front, hypervolume_history(trials, reference),
                           [plan_layout(t) for t in on_front], importances(study),
                           dict(study.user_attrs.get(SENSITIVITY_ATTR, {})), failed,
                           [m for _, m in sorted(measurements(study).items())])


# ---------------------------------------------------------------- figures


def _plotly() -> Any:
    try:
        import plotly.graph_objects as go
    except ImportError:  # pragma: no cover - plotly is a dependency; guard for trimmed installs
        raise ImportError("the report needs plotly: pip install plotly") from None
    return go


def _hover(points: list[TrialPoint]) -> list[str]:
    return [f"trial {p.number} ({p.fidelity})<br>{p.summary}<br>" +
            "<br>".join(f"{k}: {v:.4g}" for k, v in p.values.items()) +
            (f"<br>verified quality (full evaluator): {p.verified_quality:.4g}" if p.verified_quality is not None
             else "") for p in points]


def pareto_figures(data: FrontData) -> list[Any]:
    """One 2-D scatter per pair of objectives, plus a 3-D scatter for three objectives."""
    go = _plotly()
    groups = {"feasible front": [p for p in data.points if p.on_front],
              "feasible": [p for p in data.points if p.feasible and not p.on_front],
              "infeasible (over budget)": [p for p in data.points if not p.feasible]}
    styles: dict[str, dict[str, Any]] = {"feasible front": {"color": "#d62728", "size": 10},
                                         "feasible": {"color": "#1f77b4", "size": 6},
                                         "infeasible (over budget)": {"color": "#bbbbbb", "size": 6, "symbol": "x"}}
    objectives = data.objectives
    figures = []
    for i in range(len(objectives)):
        for j in range(i + 1, len(objectives)):
            x, y = objectives[j], objectives[i]
            fig = go.Figure()
            for label, points in groups.items():
                fig.add_trace(go.Scatter(x=[p.values[x] for p in points], y=[p.values[y] for p in points],
                                         mode="markers", name=label, marker=styles[label], text=_hover(points),
                                         hoverinfo="text"))
            for name, limit in data.budget.items():
                if name == x:
                    fig.add_vline(x=limit, line_dash="dash", annotation_text=f"budget {name}")
                if name == y:
                    fig.add_hline(y=limit, line_dash="dash", annotation_text=f"budget {name}")
            fig.update_layout(title=f"{AXIS_TITLES.get(y, y)} vs {AXIS_TITLES.get(x, x)}",
                              xaxis_title=AXIS_TITLES.get(x, x), yaxis_title=AXIS_TITLES.get(y, y))
            figures.append(fig)
    if len(objectives) == 3:
        fig = go.Figure()
        for label, points in groups.items():
            fig.add_trace(go.Scatter3d(x=[p.values[objectives[1]] for p in points],
                                       y=[p.values[objectives[2]] for p in points],
                                       z=[p.values[objectives[0]] for p in points], mode="markers", name=label,
                                       marker={"color": styles[label]["color"], "size": styles[label]["size"] / 2},
                                       text=_hover(points), hoverinfo="text"))
        fig.update_layout(title="Pareto front in 3-D", height=700, margin={"l": 0, "r": 0, "b": 0, "t": 60},
                          scene={"xaxis_title": objectives[1], "yaxis_title": objectives[2],
                                 "zaxis_title": objectives[0],
                                 "camera": {"eye": {"x": 1.7, "y": 1.7, "z": 1.1}}})
        figures.append(fig)
    return figures


def verification_figure(data: FrontData) -> Any | None:
    """Proxy score vs the full evaluator's verified score, one point per verified front Plan, with
    their Spearman rank correlation in the title (None before any verification)."""
    points = data.verified()
    if not points or "quality" not in data.objectives:
        return None
    go = _plotly()
    agreement = data.proxy_agreement()
    rank = f"Spearman {agreement:.2f}" if agreement is not None else "too few distinct Plans for a rank correlation"
    by_proxy = sorted(range(len(points)), key=lambda i: points[i].values["quality"])
    above = {i: rank % 2 == 0 for rank, i in enumerate(by_proxy)}  # neighbours' labels on opposite sides
    fig = go.Figure(go.Scatter(x=[p.values["quality"] for p in points], y=[p.verified_quality for p in points],
                               mode="markers+text", text=[str(p.number) for p in points],
                               textposition=["top center" if above[i] else "bottom center" for i in range(len(points))],
                               hovertext=_hover(points), hoverinfo="text", marker={"color": "#d62728", "size": 9}))
    fig.update_layout(title=f"front verification: proxy vs full evaluator, {len(points)} front Plans ({rank})",
                      xaxis_title="proxy quality (the search's score)",
                      yaxis_title="verified quality (full evaluator; 0 = dense at one token per step)")
    return fig


def measurement_figure(measured: Measurement) -> Any:
    """Every timed ``generate`` call of a measured Plan and of the dense model, round by round (the rounds
    alternate which model runs first, so drift of the machine shows in both lines alike)."""
    go = _plotly()
    check = measured.check
    fig = go.Figure()
    for name, times in (("dense model", check.dense_times_ms), (f"trial {measured.trial}", check.plan_times_ms)):
        fig.add_trace(go.Scatter(x=list(range(1, len(times) + 1)), y=list(times), mode="lines+markers", name=name))
    where = measured.machine.get("device", "this machine")
    fig.update_layout(title=f"trial {measured.trial} measured on {where}: {check.speedup:.2f}x faster than the dense "
                            f"model (predicted {measured.predicted_speedup:.2f}x)",
                      xaxis={"title": "timed round", "tickmode": "linear", "dtick": 1},
                      yaxis={"title": "time per generation (ms)", "rangemode": "tozero"}, height=380)
    return fig


def hypervolume_figure(history: list[tuple[int, float]]) -> Any:
    """Normalised hypervolume of the feasible front after each trial."""
    go = _plotly()
    fig = go.Figure(go.Scatter(x=[n for n, _ in history], y=[v for _, v in history], mode="lines+markers"))
    fig.update_layout(title="hypervolume of the feasible front (normalised to the study's reference point)",
                      xaxis_title="trial", yaxis_title="hypervolume")
    return fig


def _every_label(labels: list[str]) -> dict[str, Any]:
    """A categorical axis that shows every label (plotly drops every other one when rows are dense)."""
    return {"tickmode": "array", "tickvals": labels, "ticktext": labels, "automargin": True}


def plan_figures(plans: list[PlanLayout]) -> list[Any]:
    """Heatmap of weight bits and bars of sparsity per layer; a dropdown selects the front Plan."""
    go = _plotly()
    if not plans:
        return []
    first = plans[0]
    heat = go.Figure(go.Heatmap(z=first.weight_bits, x=first.timestep_labels, y=first.layers, colorscale="Viridis",
                                zmin=2, zmax=16, colorbar={"title": "bits"}))
    bars = go.Figure(go.Bar(x=first.layers, y=first.sparsity))
    heat.update_layout(title=f"weight bits per layer and timestep group (trial {first.trial})",
                       height=max(400, ROW_PIXELS * len(first.layers) + 160), yaxis=_every_label(first.layers),
                       updatemenus=[{**DROPDOWN_PLACE, "buttons": [
                           {"label": f"trial {p.trial}", "method": "update",
                            "args": [{"z": [p.weight_bits]},
                                     {"title": f"weight bits per layer and timestep group (trial {p.trial})"}]}
                           for p in plans]}])
    bars.update_layout(title=f"sparsity per layer (trial {first.trial})", yaxis_title="fraction pruned",
                       yaxis_range=[0, 1], xaxis={**_every_label(first.layers), "tickangle": -90},
                       updatemenus=[{**DROPDOWN_PLACE, "buttons": [
                           {"label": f"trial {p.trial}", "method": "update",
                            "args": [{"y": [p.sparsity]}, {"title": f"sparsity per layer (trial {p.trial})"}]}
                           for p in plans]}])
    return [heat, bars]


def importance_figure(values: dict[str, float]) -> Any | None:
    """Bars of parameter importance for quality."""
    if not values:
        return None
    go = _plotly()
    top = sorted(values.items(), key=lambda kv: kv[1])[-25:]
    fig = go.Figure(go.Bar(x=[v for _, v in top], y=[k for k, _ in top], orientation="h"))
    fig.update_layout(title="parameter importance for quality (PED-ANOVA)",
                      height=max(400, ROW_PIXELS * len(top) + 160), yaxis=_every_label([k for k, _ in top]))
    return fig


def sensitivity_figure(table: dict[str, dict[str, float]]) -> Any | None:
    """Heatmap of the sensitivity profile: proxy KL of compressing one layer group alone."""
    if not table:
        return None
    go = _plotly()
    groups = list(table)
    settings = sorted({s for row in table.values() for s in row})
    fig = go.Figure(go.Heatmap(z=[[table[g].get(s) for s in settings] for g in groups], x=settings, y=groups,
                               colorscale="Reds", colorbar={"title": "KL"}))
    fig.update_layout(title="sensitivity: proxy KL when one layer group alone is compressed",
                      height=max(400, 16 * len(groups)))
    return fig


def _cell(objective: str, value: float) -> str:
    """A front table cell: memory in MiB, the other objectives at their column's precision."""
    shown = value / 2**20 if objective == "peak_mem_bytes" else value
    return TABLE_COLUMNS.get(objective, ("", "{:.4g}"))[1].format(shown)


def _text_cell(point: TrialPoint) -> str:
    """A front table cell marking a Plan whose text collapsed (export refuses it): the figure, the whole
    reason on hover; "kept" where the full evaluator verified the text, empty where only the proxy saw it."""
    degenerate = point.degenerate
    if degenerate is None:
        return "kept" if point.verified_quality is not None else ""
    figure = degenerate.split(":")[0]
    return f"<span title='{html.escape(degenerate, quote=True)}'>collapsed ({html.escape(figure)}): not exported</span>"


def _pick_style(point: TrialPoint, front: FrontData) -> str:
    """The front table row attributes that mark :attr:`FrontData.pick`."""
    return " style='font-weight:bold;background:#fff3c4'" if point.number == front.pick else ""


def _pick_note(front: FrontData) -> str:
    """What the marked row is, or why no row is marked."""
    if front.pick is None:
        return "<p>No feasible Plan to export: every one is over the budget or its text collapsed.</p>"
    verified = any(p.number == front.pick and p.verified_quality is not None for p in front.points)
    return (f"<p>Marked: trial {front.pick}, what <code>dlmsearch export RUN_DIR --pick '{BEST_PICK}' -o "
            f"plan.json</code> (and <code>dlmsearch demo</code>) exports: the best "
            f"{'verified ' if verified else ''}quality within the budget among Plans whose text did not "
            "collapse.</p>")


def _pick_example(front: FrontData) -> str:
    """An ``export --pick`` line this study can answer: the best quality within the front's median latency."""
    points = front.front()
    if "latency_ms" not in front.objectives or "quality" not in front.objectives or not points:
        return ""
    latencies = sorted(p.values["latency_ms"] for p in points)
    limit = math.ceil(latencies[len(latencies) // 2])
    return (", or the best within a budget with <code>dlmsearch export RUN_DIR --pick "
            f"'min quality where latency_ms &lt;= {limit}' -o plan.json</code>")


_TEXT_STYLE = "white-space:pre-wrap;background:#f4f4f4;margin:0;font-size:0.9em"


def _measured_html(measured: Measurement) -> str:
    """A measured Plan's figures as a table and the text each model wrote from the same prompt."""
    check = measured.check
    machine = ", ".join(f"{k} {v}" for k, v in measured.machine.items())
    rows = [("time per generation (ms, median)", f"{check.dense_ms:.1f}", f"{check.plan_ms:.1f}"),
            ("speed-up over the dense model", "1", f"{check.speedup:.2f}x measured, "
             f"{measured.predicted_speedup:.2f}x predicted for hardware {html.escape(measured.hardware)}"),
            ("full evaluator score (0 = dense at one token per step)", f"{check.dense_score:.3f}",
             f"{check.plan_score:.3f}"),
            ("distinct 4-grams (share of the dense model's)", "1", f"{check.distinct4_ratio:.2f}"),
            ("prompted rows collapsed (the dense model's at one token per step)", f"{check.dense_collapsed_rows:.0%}",
             f"{check.collapsed_rows:.0%}"),
            *((f"budget {b.name} &lt;= {b.limit:.4g}", "", html.escape(b.describe().split(": ", 1)[1]))
              for b in measured.budget)]
    table = "".join(f"<tr><td>{name}</td><td>{dense}</td><td>{plan}</td></tr>" for name, dense, plan in rows)
    cells = [[f"<td><pre style='{_TEXT_STYLE}'>{html.escape(text)}</pre></td>" for text in row]
             for row in zip(check.prompts, check.dense_texts, check.plan_texts, strict=True)]
    texts = "".join(f"<tr>{''.join(row)}</tr>" for row in cells)
    return (f"<h3>Trial {measured.trial}</h3><p>Measured on {html.escape(machine)}: {check.rounds} timed rounds "
            "of each model, alternating which runs first.</p>"
            f"<table><tr><th></th><th>dense model</th><th>trial {measured.trial}</th></tr>{table}</table>"
            f"<p>Text from the same held-out prompts (greedy):</p><table><tr><th>prompt</th><th>dense model</th>"
            f"<th>trial {measured.trial}</th></tr>{texts}</table>")


def _measured_section(data: StudyReportData) -> list[tuple[str, Any]]:
    """The measured Plans' HTML and figures, in page order (empty before any measurement)."""
    if not data.measured:
        return []
    intro = ("<h2>Measured on a real machine</h2><p>What <code>dlmsearch measure RUN_DIR</code> (and "
             "<code>dlmsearch demo</code>) found when the Plan was applied and run beside the dense model; "
             "the cost model's prediction for the study's hardware beside it.</p>")
    section: list[tuple[str, Any]] = [(intro, None)]
    for measured in data.measured:
        section += [(_measured_html(measured), None), ("", measurement_figure(measured))]
    return section


def render_html(data: StudyReportData) -> str:
    """The whole report as one self-contained HTML page."""
    figures = [*pareto_figures(data.front), verification_figure(data.front), hypervolume_figure(data.hypervolume),
               *plan_figures(data.plans), importance_figure(data.importances), sensitivity_figure(data.sensitivity)]
    blocks = [*_measured_section(data), *(("", fig) for fig in figures if fig is not None)]
    parts, with_js = [], True
    for text, fig in blocks:
        parts.append(text if fig is None else f"<div>{fig.to_html(full_html=False, include_plotlyjs=with_js)}</div>")
        with_js = with_js and fig is None
    front = data.front.front()
    objectives = data.front.objectives
    rows = "".join(f"<tr{_pick_style(p, data.front)}><td>{p.number}</td>"
                   + "".join(f"<td>{_cell(o, p.values[o])}</td>" for o in objectives)
                   + f"<td>{'' if p.verified_quality is None else _cell('quality', p.verified_quality)}</td>"
                   + f"<td>{_text_cell(p)}</td>"
                   + f"<td>{html.escape(p.summary)}</td></tr>" for p in front)
    header = "".join(f"<th>{html.escape(TABLE_COLUMNS.get(o, (o, ''))[0])}</th>"
                     for o in data.front.objectives) + "<th>verified quality (full evaluator)</th><th>text</th>"
    verified = data.front.verified()
    agreement = data.front.proxy_agreement()
    verification = (f" Front verified by the full evaluator: {len(verified)} Plans" + (
        f" (proxy vs verified Spearman {agreement:.2f}); <code>--pick</code> uses their verified quality."
        if agreement is not None else "; <code>--pick</code> uses their verified quality.")) if verified else ""
    complete = len(data.front.points)
    feasible = sum(p.feasible for p in data.front.points)
    hv = data.hypervolume[-1][1] if data.hypervolume else 0.0
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>dlmsearch: {html.escape(data.study)}</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 8px}</style></head><body>"
            f"<h1>Study {html.escape(data.study)}</h1><p>{complete} complete trials ({feasible} feasible), "
            f"{data.failed} failed; feasible front: {len(front)} Plans; hypervolume {hv:.4f}.{verification}</p>"
            f"<h2>Feasible Pareto front</h2><table><tr><th>trial</th>{header}<th>Plan</th></tr>{rows}</table>"
            + _pick_note(data.front)
            + "<p>Export one with <code>dlmsearch export RUN_DIR --trial N -o plan.json</code>"
            + _pick_example(data.front) + ".</p>"
            + "".join(parts) + "</body></html>")


def write_report(study: optuna.Study, path: str | Path) -> Path:
    """Build the report data of ``study`` and write the HTML file."""
    out = Path(path)
    out.write_text(render_html(study_report_data(study)), encoding="utf-8")
    return out
