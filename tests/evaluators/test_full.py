"""The full evaluator: real generation with the whole Plan, scored against the dense model."""

from __future__ import annotations

import torch

from dlmsearch.compress import CalibrationSet
from dlmsearch.evaluators import FullEvaluator, FullSettings
from dlmsearch.evaluators.full import distinct_ngrams
from dlmsearch.models.loading import build_random_model
from dlmsearch.plan import uniform_plan


def test_full_evaluator_scores_dense_near_zero_and_damage_higher() -> None:
    adapter = build_random_model("llama", hidden_size=64, num_heads=4, intermediate_size=128, max_length=64)
    ids = torch.randint(0, 60, (4000,), generator=torch.Generator().manual_seed(0))
    calib = CalibrationSet.from_ids(ids, adapter.mask_token_id, n_sequences=2, seq_len=32, timesteps=(0.5,))
    settings = FullSettings(infill_windows=4, window_length=32, infill_span=8, prompts=2, prompt_length=8,
                            unconditional=2)
    evaluator = FullEvaluator(adapter, settings, text_ids=ids, calibration=calib)
    dense = evaluator.evaluate(uniform_plan(adapter, steps=8, gen_length=8, block_length=8))
    assert dense.score == 0.0 and dense.metrics["agreement"] == 1.0
    harsh = evaluator.evaluate(uniform_plan(adapter, weight_bits=2, steps=2, gen_length=8, block_length=8))
    assert harsh.score > 0 and harsh.metrics["agreement"] < 1.0
    assert evaluator.evaluate(uniform_plan(adapter, weight_bits=2, steps=2, gen_length=8, block_length=8)) == harsh
    low = evaluator.evaluate(uniform_plan(adapter, weight_bits=2, steps=2, gen_length=8, block_length=8), "low")
    assert low.fidelity == "low"


def test_distinct_ngrams_sees_repetition() -> None:
    assert distinct_ngrams(torch.tensor([[1, 1, 1, 1, 1, 1, 1, 1]])) == 1 / 5
    assert distinct_ngrams(torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]])) == 1.0


def test_user_prompts_replace_the_held_out_prompts(embedded: object) -> None:
    from dlmsearch.models.adapters import DLMAdapter

    assert isinstance(embedded, DLMAdapter)
    settings = FullSettings(infill_windows=2, prompts=2, unconditional=1, infill_span=8)
    evaluator = FullEvaluator(embedded, settings, prompts=["ROMEO.\n", "To be, or not"])
    plan = uniform_plan(embedded, steps=8, gen_length=8, block_length=8)
    tokens = evaluator.generations(embedded, plan.sampler, prompts=2, unconditional=1)
    assert tokens.shape == (3, 8)
