"""GPTQ beats round-to-nearest on correlated inputs; the Hessian accumulator matches 2 X^T X / n."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dlmsearch.compress.gptq import HessianAccumulator, gptq_quantize
from dlmsearch.compress.quantize import quantize_rtn


def _correlated_inputs(rows: int, directions: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mixtures of a few shared ``directions`` plus small noise: strongly correlated features."""
    latent = torch.randn(rows, directions.shape[0], generator=generator)
    return latent @ directions + 0.1 * torch.randn(rows, directions.shape[1], generator=generator)


@pytest.mark.parametrize("bits", [3, 4])
@pytest.mark.parametrize("group_size", [0, 32])
def test_gptq_output_error_is_lower_than_rtn(bits: int, group_size: int) -> None:
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(32, 64, generator=generator)
    directions = torch.randn(8, 64, generator=generator)
    x = _correlated_inputs(512, directions, generator)
    held_out = _correlated_inputs(256, directions, generator)
    hessian = 2 * x.t() @ x / x.shape[0]
    gptq = gptq_quantize(weight, hessian, bits, group_size, block_size=16)
    rtn = quantize_rtn(weight, bits, group_size)
    assert gptq.bits == bits and gptq.group_size == group_size and int(gptq.codes.max()) < 2**bits
    for inputs in (x, held_out):
        reference = inputs @ weight.t()
        gptq_error = (reference - inputs @ gptq.dequantize().t()).norm()
        rtn_error = (reference - inputs @ rtn.dequantize().t()).norm()
        assert gptq_error < 0.7 * rtn_error


def test_gptq_block_size_does_not_change_the_result() -> None:
    generator = torch.Generator().manual_seed(2)
    weight = torch.randn(8, 64, generator=generator)
    x = _correlated_inputs(128, torch.randn(8, 64, generator=generator), generator)
    hessian = 2 * x.t() @ x / x.shape[0]
    small = gptq_quantize(weight, hessian, 4, 16, block_size=16)
    large = gptq_quantize(weight, hessian, 4, 16, block_size=64)
    torch.testing.assert_close(small.dequantize(), large.dequantize(), rtol=1e-4, atol=1e-4)


def test_gptq_handles_dead_inputs_and_rejects_bad_shapes() -> None:
    x = torch.randn(64, 16)
    x[:, 3] = 0
    hessian = 2 * x.t() @ x / 64
    qw = gptq_quantize(torch.randn(4, 16), hessian, 4, 0)
    assert bool(qw.dequantize().isfinite().all())
    with pytest.raises(ValueError, match="expected \\(16, 16\\)"):
        gptq_quantize(torch.randn(4, 16), torch.eye(8), 4)
    with pytest.raises(ValueError, match="group_size=5"):
        gptq_quantize(torch.randn(4, 16), hessian, 4, 5)


def test_hessian_accumulator_matches_closed_form() -> None:
    x = torch.randn(3, 10, 8)
    accumulator = HessianAccumulator(8)
    accumulator.add(x[:1])
    accumulator.add(x[1:])
    flat = x.reshape(-1, 8)
    torch.testing.assert_close(accumulator.hessian, 2 * flat.t() @ flat / 30)
    assert accumulator.num_samples == 30


def test_hessian_accumulator_captures_forward_inputs() -> None:
    linear = nn.Linear(8, 4)
    x = torch.randn(2, 5, 8)
    accumulator = HessianAccumulator(8)
    with accumulator.capture(linear):
        linear(x)
    linear(torch.randn(1, 8))  # the hook is gone after the block
    flat = x.reshape(-1, 8)
    torch.testing.assert_close(accumulator.hessian, 2 * flat.t() @ flat / 10)
    with pytest.raises(ValueError, match="expects 8"):
        accumulator.add(torch.randn(2, 3))
