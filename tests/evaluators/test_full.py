"""The full evaluator: real generation with the whole Plan, scored against the dense model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from dlmsearch.evaluators import FullEvaluator, FullSettings
from dlmsearch.evaluators.full import collapsed_rows, distinct_ngrams
from dlmsearch.evaluators.infill_task import span_masks
from dlmsearch.models.adapters import DLMAdapter
from dlmsearch.models.diffusion import eval_windows
from dlmsearch.plan import uniform_plan
from tests.evaluators.tiny import tiny_data, tiny_model


def test_full_evaluator_scores_dense_near_zero_and_damage_higher() -> None:
    adapter = tiny_model()
    ids, calib = tiny_data(adapter)
    settings = FullSettings(infill_windows=4, window_length=32, infill_span=4, infill_spans=2, prompts=2,
                            prompt_length=8, unconditional=2)
    evaluator = FullEvaluator(adapter, settings, text_ids=ids, calibration=calib)
    dense = evaluator.evaluate(uniform_plan(adapter, steps=8, gen_length=8, block_length=8))
    assert dense.score == 0.0 and dense.metrics["agreement"] == 1.0
    harsh = evaluator.evaluate(uniform_plan(adapter, weight_bits=2, steps=2, gen_length=8, block_length=8))
    assert harsh.score > 0 and harsh.metrics["agreement"] < 1.0
    assert evaluator.evaluate(uniform_plan(adapter, weight_bits=2, steps=2, gen_length=8, block_length=8)) == harsh
    low = evaluator.evaluate(uniform_plan(adapter, weight_bits=2, steps=2, gen_length=8, block_length=8), "low")
    assert low.fidelity == "low"


def _one_draw_evaluator(rows: int) -> tuple[DLMAdapter, FullEvaluator]:
    """The tiny model and a one-draw full evaluator with ``rows`` prompted and ``rows`` free rows."""
    adapter = tiny_model()
    ids, calib = tiny_data(adapter)
    settings = FullSettings(infill_windows=4, window_length=32, infill_span=4, infill_spans=2, prompts=rows,
                            prompt_length=8, unconditional=rows, draws=1)
    return adapter, FullEvaluator(adapter, settings, text_ids=ids, calibration=calib)


def test_prompted_and_free_rows_are_scored_apart() -> None:
    """Each kind of generated row is compared with the dense model's rows of its kind and clipped at 0
    before the kinds are averaged, so likely-but-repetitive rows of one kind cannot offset the other's;
    the compression part against the dense model with the Plan's sampler, the step part between the
    dense model with it and at one token per step."""
    adapter, evaluator = _one_draw_evaluator(rows=3)
    harsh = evaluator.evaluate(uniform_plan(adapter, weight_bits=2, steps=2, gen_length=8, block_length=8))
    m = harsh.metrics
    kinds = ("prompted", "free")
    compression = [m[f"gen_nelbo_{k}"] - m[f"paired_gen_nelbo_{k}"] for k in kinds]
    steps = [m[f"paired_gen_nelbo_{k}"] - m[f"dense_gen_nelbo_{k}"] for k in kinds]
    shortfalls = [m[f"paired_gen_diversity_{k}"] - m[f"gen_diversity_{k}"] for k in kinds]
    assert m["gen_gap_compression"] == pytest.approx(sum(max(0.0, g) for g in compression) / 2, abs=1e-12)
    assert m["gen_gap_steps"] == pytest.approx(sum(max(0.0, g) for g in steps) / 2, abs=1e-12)
    assert m["diversity_gap_compression"] == pytest.approx(sum(max(0.0, d) for d in shortfalls) / 2, abs=1e-12)
    assert m["compression_cost"] + m["step_cost"] == pytest.approx(harsh.score)
    assert m["gen_nelbo"] == pytest.approx((m["gen_nelbo_prompted"] + m["gen_nelbo_free"]) / 2)
    ids, calib = tiny_data(adapter)
    only_free = FullEvaluator(adapter, dataclasses.replace(evaluator.settings, prompts=0), text_ids=ids,
                              calibration=calib)
    free = only_free.evaluate(uniform_plan(adapter, weight_bits=2, steps=2, gen_length=8, block_length=8)).metrics
    assert "gen_nelbo_prompted" not in free and free["gen_gap_compression"] == max(
        0.0, free["gen_nelbo_free"] - free["paired_gen_nelbo_free"])


def test_the_step_cost_is_the_dense_models_own_and_the_same_for_every_plan() -> None:
    """The dense model at the Plan's steps scores exactly its step cost (no compression cost), and a
    compressed Plan with those steps carries the same step cost."""
    adapter, evaluator = _one_draw_evaluator(rows=2)
    dense_few = evaluator.evaluate(uniform_plan(adapter, steps=2, gen_length=8, block_length=8))
    assert dense_few.metrics["compression_cost"] == 0.0
    assert dense_few.score == dense_few.metrics["step_cost"] > 0
    harsh = evaluator.evaluate(uniform_plan(adapter, weight_bits=2, steps=2, gen_length=8, block_length=8))
    assert harsh.metrics["step_cost"] == dense_few.metrics["step_cost"]
    assert harsh.metrics["compression_cost"] > 0
    assert evaluator.step_cost(uniform_plan(adapter, steps=2, gen_length=8, block_length=8).sampler)[
        "step_cost"] == dense_few.metrics["step_cost"]


def test_the_score_is_the_mean_of_independent_draws() -> None:
    adapter = tiny_model()
    ids, calib = tiny_data(adapter)
    one = FullSettings(infill_windows=4, window_length=32, infill_span=4, infill_spans=2, prompts=2,
                       prompt_length=8, unconditional=2, draws=1)
    first, second, both = (FullEvaluator(adapter, settings, text_ids=ids, calibration=calib)
                           for settings in (one, dataclasses.replace(one, seed=1), dataclasses.replace(one, draws=2)))
    second.compressor = both.compressor = first.compressor
    plan = uniform_plan(adapter, weight_bits=2, steps=2, gen_length=8, block_length=8)
    a, b, mean = first.evaluate(plan), second.evaluate(plan), both.evaluate(plan)
    assert a.score != b.score  # the draws differ: other generations, spans and NELBO masks
    assert mean.score == pytest.approx((a.score + b.score) / 2, abs=1e-12)
    assert mean.metrics["gen_nelbo"] == pytest.approx((a.metrics["gen_nelbo"] + b.metrics["gen_nelbo"]) / 2)
    assert mean.metrics["score_sd"] == pytest.approx(abs(a.score - b.score) / 2 ** 0.5)
    assert mean.metrics["draws"] == 2 and a.metrics["score_sd"] == 0.0
    assert (mean.metrics["score_draw0"], mean.metrics["score_draw1"]) == pytest.approx((a.score, b.score), abs=1e-12)
    assert both.evaluate(plan, "low").metrics["draws"] == 1
    with pytest.raises(ValueError, match="draws=0: must be >= 1"):
        FullSettings(draws=0)
    with pytest.raises(ValueError, match="prompts=-1: must be >= 0"):
        FullSettings(prompts=-1)
    with pytest.raises(ValueError, match="prompts=0, unconditional=0: at least one row"):
        FullSettings(prompts=0, unconditional=0)


def test_distinct_ngrams_sees_repetition() -> None:
    assert distinct_ngrams(torch.tensor([[1, 1, 1, 1, 1, 1, 1, 1]])) == 1 / 5
    assert distinct_ngrams(torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]])) == 1.0


def test_collapsed_rows_are_counted_one_by_one() -> None:
    """Rows that repeat each other keep a low pooled share without collapsing; a row of spaces collapses."""
    varied = torch.arange(1, 17)
    spaces_tail = torch.cat([torch.tensor([5, 6, 7]), torch.zeros(13, dtype=torch.long)])
    alike = torch.stack([varied] * 4)
    assert distinct_ngrams(alike) == 0.25 and collapsed_rows(alike) == 0.0
    assert collapsed_rows(torch.stack([varied, spaces_tail, varied, spaces_tail])) == 0.5
    assert collapsed_rows(torch.empty(0, 16, dtype=torch.long)) == 0.0


def test_user_prompts_replace_the_held_out_prompts(embedded: object) -> None:
    from dlmsearch.models.adapters import DLMAdapter

    assert isinstance(embedded, DLMAdapter)
    settings = FullSettings(infill_windows=2, prompts=2, unconditional=1)
    evaluator = FullEvaluator(embedded, settings, prompts=["ROMEO.\n", "To be, or not"])
    plan = uniform_plan(embedded, steps=8, gen_length=8, block_length=8)
    tokens = evaluator.generations(embedded, plan.sampler, prompts=2, unconditional=1)
    assert tokens.shape == (3, 8)


def test_span_masks_place_non_overlapping_spans_per_row() -> None:
    masks = span_masks((50, 128), spans=4, span=6, seed=3)
    assert masks.sum(dim=1).tolist() == [24] * 50
    assert not masks[:, 0].any() and not masks[:, -1].any()
    segments = masks[:, 1:1 + 4 * 31].view(50, 4, 31)  # (128 - 2) // 4 = 31 positions per segment
    assert (segments.sum(dim=-1) == 6).all()
    starts = segments.float().argmax(dim=-1)
    assert bool(segments.gather(-1, (starts[..., None] + torch.arange(6)).clamp(max=30)).all())
    assert torch.equal(masks, span_masks((50, 128), spans=4, span=6, seed=3))
    assert not torch.equal(masks, span_masks((50, 128), spans=4, span=6, seed=4))


def test_span_masks_that_do_not_fit_name_both_fields() -> None:
    with pytest.raises(ValueError, match=r"infill_spans=4 x infill_span=40"):
        span_masks((2, 128), spans=4, span=40, seed=0)


def test_full_evaluator_and_proxy_windows_share_no_text() -> None:
    ids = torch.arange(200 * 128)
    proxy_windows = eval_windows(ids, 128, 32)
    full_windows = eval_windows(ids, 128, 32, phase=0.5)
    assert not set(proxy_windows[:, 0].tolist()) & set(full_windows[:, 0].tolist())
    assert full_windows.shape == (32, 128) and int(full_windows[:, -1].max()) < ids.numel()
    with pytest.raises(ValueError, match="phase=1.0"):
        eval_windows(ids, 128, 32, phase=1.0)
    tight = torch.arange(8 * 128)  # 8 windows for 4 + 4: the last shifted window is clamped inside
    starts = set(eval_windows(tight, 128, 4)[:, 0].tolist()), set(eval_windows(tight, 128, 4, 0.5)[:, 0].tolist())
    assert len(starts[1]) == 4 and not starts[0] & starts[1]
    with pytest.raises(ValueError, match="as many between them"):
        eval_windows(tight[:-1], 128, 4, phase=0.5)


def test_dense_references_are_kept_on_disk_for_the_next_evaluator(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A second evaluator of the same model, settings and text scores the same without running the dense
    model again; other text is measured afresh."""
    monkeypatch.setenv("DLMSEARCH_CACHE", str(tmp_path))
    adapter, first = _one_draw_evaluator(rows=2)
    plan = uniform_plan(adapter, weight_bits=2, steps=2, gen_length=8, block_length=8)
    scored = first.evaluate(plan)
    _, second = _one_draw_evaluator(rows=2)
    measured: list[object] = []
    real = second._measure

    def counting(model: DLMAdapter, *args: object) -> object:
        measured.append(model)
        return real(model, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(second, "_measure", counting)
    assert second.evaluate(plan) == scored
    assert measured and all(model is not second.dense for model in measured)  # only the compressed model ran
    ids, calib = tiny_data(adapter)
    other = FullEvaluator(adapter, second.settings, text_ids=ids.roll(7), calibration=calib)
    monkeypatch.setattr(other, "_measure", counting)
    measured.clear()
    other.evaluate(plan)
    assert any(model is other.dense for model in measured)
    two_draws = FullEvaluator(adapter, dataclasses.replace(second.settings, draws=2), text_ids=ids, calibration=calib)
    dense_draws: list[object] = []
    real_two = two_draws._measure

    def counting_draws(model: DLMAdapter, sampler: object, fidelity: object, draw: int) -> object:
        if model is two_draws.dense:
            dense_draws.append(draw)
        return real_two(model, sampler, fidelity, draw)  # type: ignore[arg-type]

    monkeypatch.setattr(two_draws, "_measure", counting_draws)
    two_draws.evaluate(plan)
    assert dense_draws and set(dense_draws) == {1}  # draw 0's dense references are the one-draw evaluator's


def test_rows_collapsing_beyond_the_reference_cost_what_their_likely_text_saves() -> None:
    """Collapsed rows are likely under the dense model: the NELBO term alone would prefer them."""
    from dlmsearch.evaluators.full import _cost, _Measured

    def measured(collapsed: float, nelbo: float) -> _Measured:
        return _Measured(torch.zeros(4, 8, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long), 0.5,
                         {"prompted": nelbo}, {"prompted": 0.3}, collapsed)

    reference = measured(0.25, 2.0)
    total, parts = _cost(measured(0.75, 1.8), reference)  # likelier text, half the rows collapsed beyond
    assert parts["gen_gap"] == 0.0 and parts["collapse_gap"] == pytest.approx(0.5) and total == pytest.approx(0.5)
    assert _cost(measured(0.0, 2.0), reference)[1]["collapse_gap"] == 0.0  # fewer collapsed rows: no credit
    stored = measured(0.75, 1.8)
    assert _Measured.from_tensors(stored.to_tensors()).collapsed == 0.75  # kept in the dense-reference cache
