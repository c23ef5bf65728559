"""Validating an exported Plan for real: timed beside the dense model, scored, made to write text."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlmsearch.evaluators import FullSettings
from dlmsearch.models.adapters import DLMAdapter
from dlmsearch.plan import uniform_plan
from dlmsearch.search import validation
from dlmsearch.search.validation import validate_plan

SMALL = FullSettings(infill_windows=2, prompts=1, unconditional=1, calibration_sequences=2, nelbo_repeats=2, draws=1)


def test_validation_times_scores_and_decodes_both_models(embedded: DLMAdapter, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLMSEARCH_CACHE", str(tmp_path / "cache"))
    dense = uniform_plan(embedded, steps=16, gen_length=16, block_length=16)
    plan = uniform_plan(embedded, weight_bits=4, steps=4, gen_length=16, block_length=16)
    before = {name: tensor.clone() for name, tensor in embedded.model.state_dict().items()}
    calls: list[str] = []
    timed = validation.time_call

    def recording(adapter: DLMAdapter, run: object) -> float:
        calls.append("dense" if adapter is embedded else "plan")
        return timed(adapter, run)  # type: ignore[arg-type]

    monkeypatch.setattr(validation, "time_call", recording)
    check = validate_plan(embedded, plan, dense, ["ROMEO.\nWhat", "JULIET.\nO R"], 16, repeats=3, settings=SMALL)
    assert calls == ["dense", "plan", "plan", "dense", "dense", "plan"] and check.rounds == 3  # drift hits both
    assert check.dense_score == 0.0 and check.plan_score > 0  # dense at one token per step is the reference
    assert check.prompts == ("ROMEO.\nWhat", "JULIET.\nO R")
    assert [len(t) for t in (*check.dense_texts, *check.plan_texts)] == [16] * 4  # one of each per prompt
    assert check.dense_ms > 0 and check.plan_ms > 0 and check.speedup == check.dense_ms / check.plan_ms
    assert check.distinct4_ratio >= 0.0
    after = embedded.model.state_dict()
    assert after.keys() == before.keys() and all(after[k].equal(v) for k, v in before.items())  # dense unchanged


def test_sample_prompts_spread_over_the_held_out_plays() -> None:
    from dlmsearch.data import load_split
    from dlmsearch.search.validation import sample_prompts

    prompts = sample_prompts(32)
    text = load_split("evaluation")
    assert len(prompts) == 3 and len(set(prompts)) == 3 and all(len(p) == 32 for p in prompts)
    assert prompts[0] == text[:32] and text.index(prompts[2]) > len(text) // 2
