"""Study report data on a hand-built study: front membership, budget lines, heatmap and bars; the HTML."""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna

from dlmsearch.models.loading import build_random_model
from dlmsearch.plan import LayerPlan, uniform_plan
from dlmsearch.reports.study_report import front_data, plan_layout, render_html, study_report_data
from dlmsearch.search.attributes import LIMITS_ATTR, REFERENCE_ATTR

ADAPTER = build_random_model("llama", num_layers=2, hidden_size=64, num_heads=4)


def hand_built(last_metrics: dict[str, float] | None = None) -> optuna.Study:
    """Three trials: a feasible front of two (0 and 2) and one over the latency budget (1); the last one
    with ``last_metrics`` as its evaluator's metrics."""
    study = optuna.create_study(directions=["minimize", "minimize"])
    with warnings.catch_warnings():  # experimental in optuna; the search names its objectives the same way
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["quality", "latency_ms"])
    study.set_user_attr(LIMITS_ATTR, {"latency_ms": 100.0})
    study.set_user_attr(REFERENCE_ATTR, {"quality": 1.0, "latency_ms": 200.0})
    base = uniform_plan(ADAPTER, timestep_groups=2, weight_bits=8)
    first = next(iter(base.layers))
    mixed = {**base.layers, first: LayerPlan(weight_bits=(2, 4), act_bits=(16, 16), sparsity=0.3)}
    plans = [base, base, type(base)(base.model, base.sampler, base.timestep_groups, base.weight_storage, mixed)]
    for plan, (quality, latency) in zip(plans, [(0.1, 90.0), (0.05, 150.0), (0.3, 40.0)], strict=True):
        trial = study.ask()
        trial.set_user_attr("plan", plan.to_dict())
        trial.set_user_attr("fidelity", "full")
        extra = last_metrics if last_metrics is not None and plan is plans[-1] else {}
        trial.set_user_attr("metrics", {"quality": quality, "latency_ms": latency, **extra})
        trial.set_constraint("latency_ms", latency - 100.0)
        study.tell(trial, [quality, latency])
    return study


def test_front_data_marks_the_feasible_front_and_the_budget() -> None:
    data = front_data(hand_built())
    assert data.objectives == ["quality", "latency_ms"]
    assert [(p.number, p.feasible, p.on_front) for p in data.points] == [(0, True, True), (1, False, False),
                                                                        (2, True, True)]
    assert [p.number for p in data.front()] == [0, 2]  # sorted by quality
    assert data.budget == {"latency_ms": 100.0}
    assert "weight bits 8.0/8.0" in data.points[0].summary


def test_plan_layout_is_bits_per_layer_and_timestep_group() -> None:
    layout = plan_layout(hand_built().trials[2])
    assert layout.timestep_labels == ["progress 0.00-0.50", "progress 0.50-1.00"]
    assert layout.weight_bits[0] == [2, 4] and layout.weight_bits[1] == [8, 8]
    assert layout.sparsity[0] == 0.3 and layout.sparsity[1] == 0.0
    assert len(layout.layers) == len(list(ADAPTER.linears()))


def test_report_html_is_self_contained(tmp_path: Path) -> None:
    data = study_report_data(hand_built())
    assert [p.trial for p in data.plans] == [0, 2]
    assert data.hypervolume[-1][1] > 0
    page = render_html(data)
    assert "plotly" in page and len(page) > 1_000_000 and "<script src=" not in page  # plotly.js inline
    assert "Feasible Pareto front" in page and "budget latency_ms" in page


def test_front_table_formats_each_objective_and_suggests_a_pick_this_study_answers() -> None:
    study = hand_built()
    page = render_html(study_report_data(study))
    assert "<th>latency (ms)</th>" in page and "<td>90.0</td><td></td>" in page  # one decimal, not 4 digits
    limit = int(page.split("latency_ms &lt;= ")[1].split("'")[0])
    front_latencies = sorted(p.values["latency_ms"] for p in front_data(study).front())
    assert front_latencies[0] <= limit  # the suggested --pick finds a Plan on this front


def test_front_table_marks_plans_whose_text_collapsed() -> None:
    """A user sees why a front Plan with a good score is not the one exported."""
    study = hand_built({"distinct4_ratio": 0.94, "collapsed_rows": 0.75, "dense_collapsed_rows": 0.19})
    page = render_html(study_report_data(study))
    assert page.count("collapsed (collapsed_rows 0.750): not exported") == 1
    assert "75% of its prompted generations collapsed" in page  # the whole reason, on hover


def test_report_marks_the_plan_the_best_pick_exports_and_shows_it_first() -> None:
    """The row export --pick 'min quality' (and the demo) would write is marked, and the per-layer charts
    open on it, not on the best proxy score."""
    study = hand_built({"distinct4_ratio": 0.2})  # trial 2 (quality 0.3) collapsed: trial 0 is the pick
    data = study_report_data(study)
    assert data.front.pick == 0 and data.plans[0].trial == 0
    page = render_html(data)
    assert "<tr style='font-weight:bold;background:#fff3c4'><td>0</td>" in page
    assert "Marked: trial 0" in page
    assert study_report_data(hand_built()).front.pick == 0  # no collapse: the best quality


def test_report_shows_a_measured_plan_its_text_and_every_timed_round() -> None:
    """What `dlmsearch measure` kept is what a user opening the report sees first."""
    from dlmsearch.search.measurements import BudgetCheck, Measurement, PlanValidation, store_measurement

    study = hand_built()
    check = PlanValidation((700.0, 720.0, 710.0), (300.0, 330.0, 310.0), 0.9, 0.0, 1.2, 0.12, 0.19,
                           ("ROMEO.", "JULIET."), ("and <the> rest", "words"), ("   \n\n  ", "more words"))
    store_measurement(study, Measurement(2, check, 40.0, 90.0, "local", {"device": "cpu/Test CPU/threads2"}, {},
                                         (BudgetCheck("latency_fraction", 0.45, 0.437, 0.42, 0.44),)))
    data = study_report_data(study)
    assert [m.trial for m in data.measured] == [2]
    page = render_html(data)
    section = page.split("Measured on a real machine")[1]
    assert "2.29x measured, 2.25x predicted for hardware local" in section  # 710/310 and 90/40
    assert "and &lt;the&gt; rest" in section and "   \n\n  </pre>" in section  # escaped; blank text stays visible
    assert section.count("<pre") == 6 and section.index("JULIET.") < section.index("more words")  # a row per prompt
    assert "cpu/Test CPU/threads2" in section and "12%" in section and "19%" in section
    assert "budget latency_fraction &lt;= 0.45</td><td></td><td>measured 0.437 (rounds 0.42-0.44), met" in section
    assert page.index("Measured on a real machine") < page.index("quality (proxy score; lower is better) vs")
    assert page.count("<script type=\"text/javascript\">/**") <= 1  # plotly.js once, with the first figure
    assert "timed round" in page and "[300.0,330.0,310.0]" in page.replace(" ", "")


def test_report_without_measurements_has_no_measured_section() -> None:
    assert "Measured on a real machine" not in render_html(study_report_data(hand_built()))
