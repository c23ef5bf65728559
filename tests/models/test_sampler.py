"""LLaDA's denoising sampler: constraints, determinism, block order, step context."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from dlmsearch.models.adapters import DLMAdapter
from dlmsearch.models.sampler import (
    SamplerSettingsError,
    current_step,
    generate,
    infill,
    tokens_per_step,
)


def _record_inputs(adapter: DLMAdapter, record: Callable[[torch.Tensor], object]) -> None:
    """Make every forward pass of ``adapter`` call ``record(ids)`` first."""
    original = adapter.forward_logits

    def spy(ids: torch.Tensor) -> torch.Tensor:
        record(ids)
        return original(ids)

    adapter.forward_logits = spy  # type: ignore[method-assign]


@pytest.mark.parametrize(("gen_length", "steps", "block_length", "message"), [
    (30, 8, 8, "block_length=8: must be a divisor of gen_length=30"),
    (32, 6, 8, "steps=6: must be a multiple of the number of blocks"),
    (32, 64, 8, "steps=64: must be at most 32"),
    (0, 8, 8, "gen_length=0: must be a positive integer"),
])
def test_invalid_settings_are_refused(tiny_llama: DLMAdapter, gen_length: int, steps: int,
                                      block_length: int, message: str) -> None:
    with pytest.raises(SamplerSettingsError, match=message):
        generate(tiny_llama, torch.tensor([1, 2]), gen_length=gen_length, steps=steps,
                 block_length=block_length)


def test_unknown_remasking_is_refused(tiny_llama: DLMAdapter) -> None:
    with pytest.raises(SamplerSettingsError, match="remasking='best'"):
        generate(tiny_llama, torch.tensor([1]), gen_length=8, steps=8, block_length=8, remasking="best")


def test_tokens_per_step_spreads_remainder_first() -> None:
    assert tokens_per_step(10, 4).tolist() == [3, 3, 2, 2]
    assert tokens_per_step(8, 8).tolist() == [1] * 8


@pytest.mark.parametrize("remasking", ["low_confidence", "random"])
def test_generation_fills_every_mask_and_keeps_prompt(tiny_llama: DLMAdapter, remasking: str) -> None:
    prompt = torch.tensor([[5, 6, 7], [8, 9, 10]])
    out = generate(tiny_llama, prompt, gen_length=16, steps=8, block_length=8, remasking=remasking,
                   temperature=1.0, seed=3)
    assert out.shape == (2, 19)
    assert torch.equal(out[:, :3], prompt)
    assert not (out == tiny_llama.mask_token_id).any()


def test_generation_is_deterministic_under_a_seed(tiny_llama: DLMAdapter) -> None:
    args = dict(gen_length=16, steps=16, block_length=4, temperature=1.0)
    a = generate(tiny_llama, torch.tensor([1, 2]), seed=7, **args)
    b = generate(tiny_llama, torch.tensor([1, 2]), seed=7, **args)
    c = generate(tiny_llama, torch.tensor([1, 2]), seed=8, **args)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_blocks_are_filled_left_to_right(tiny_llama: DLMAdapter) -> None:
    """After each block's steps, later blocks are still fully masked."""
    seen: list[torch.Tensor] = []
    _record_inputs(tiny_llama, lambda ids: seen.append(ids.clone()))
    generate(tiny_llama, torch.tensor([1]), gen_length=8, steps=4, block_length=4)
    mask = tiny_llama.mask_token_id
    assert len(seen) == 4
    # steps 0-1 work on block 1 (positions 1-4): block 2 (positions 5-8) untouched
    for ids in seen[:2]:
        assert (ids[0, 5:] == mask).all()
    assert not (seen[2][0, 1:5] == mask).any()  # block 1 complete before block 2 starts
    # each step commits block_length / steps_per_block = 2 tokens
    assert [(ids[0] == mask).sum().item() for ids in seen] == [8, 6, 4, 2]


def test_step_context_reports_every_step(tiny_llama: DLMAdapter) -> None:
    steps_seen = []
    _record_inputs(tiny_llama, lambda ids: steps_seen.append(current_step()))
    generate(tiny_llama, torch.tensor([1]), gen_length=8, steps=8, block_length=4)
    assert [s.index for s in steps_seen] == list(range(8))
    assert [s.progress for s in steps_seen] == [i / 8 for i in range(8)]
    assert current_step() is None


def test_infill_of_a_tail_span_matches_generate(tiny_llama: DLMAdapter) -> None:
    prompt = torch.tensor([[3, 4, 5, 6]])
    generated = generate(tiny_llama, prompt, gen_length=8, steps=4, block_length=8)
    masked = torch.zeros(1, 12, dtype=torch.bool)
    masked[:, 4:] = True
    filled = infill(tiny_llama, generated, masked, steps=4)
    assert torch.equal(filled, generated)


def test_infill_fills_ragged_masks_and_keeps_the_rest(tiny_llama: DLMAdapter) -> None:
    ids = torch.randint(0, 60, (2, 10))
    masked = torch.zeros(2, 10, dtype=torch.bool)
    masked[0, 2:5] = True
    masked[1, 1:9] = True
    filled = infill(tiny_llama, ids, masked, steps=4)
    assert not (filled == tiny_llama.mask_token_id).any()
    assert torch.equal(filled[~masked], ids[~masked])


def test_infill_blocks_fill_left_to_right(tiny_llama: DLMAdapter) -> None:
    seen: list[torch.Tensor] = []
    _record_inputs(tiny_llama, lambda ids: seen.append(ids.clone()))
    ids = torch.randint(0, 60, (1, 12))
    masked = torch.zeros(1, 12, dtype=torch.bool)
    masked[0, 2:10] = True
    infill(tiny_llama, ids, masked, steps=4, block_length=4)
    mask = tiny_llama.mask_token_id
    assert len(seen) == 4
    assert (seen[1][0, 6:10] == mask).all()  # second block untouched while the first is filled
    assert not (seen[2][0, 2:6] == mask).any()
    with pytest.raises(ValueError, match="multiple of the number of blocks"):
        infill(tiny_llama, ids, masked, steps=3, block_length=4)
