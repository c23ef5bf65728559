"""Group-wise RTN, nested (MSB-sliced) codes, packing and activation fake-quant."""

from __future__ import annotations

import pytest
import torch

from dlmsearch.compress.quantize import (
    QuantizedWeight,
    nested_from_master,
    pack_codes,
    quantize_activations,
    quantize_rtn,
    unpack_codes,
)


def _weight(rows: int = 8, cols: int = 64) -> torch.Tensor:
    return torch.randn(rows, cols) * torch.linspace(0.1, 2.0, cols)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group_size", [0, 16, 64])
def test_rtn_error_is_at_most_half_a_step(bits: int, group_size: int) -> None:
    weight = _weight()
    qw = quantize_rtn(weight, bits, group_size)
    assert qw.codes.dtype == torch.uint8 and int(qw.codes.max()) <= 2**bits - 1
    groups = 64 // group_size if group_size else 1
    assert qw.scale.shape == (8, groups) and qw.zero.shape == (8, groups)
    step = qw.scale.repeat_interleave(64 // groups, dim=1)
    error = (weight - qw.dequantize()).abs()
    assert bool((error <= step / 2 * (1 + 1e-5) + 1e-7).all())


def test_rtn_error_shrinks_with_bits_and_groups() -> None:
    weight = _weight(16, 128)
    errors = {(b, g): float((weight - quantize_rtn(weight, b, g).dequantize()).pow(2).mean())
              for b in (2, 3, 4, 8) for g in (0, 32)}
    for g in (0, 32):
        assert errors[(2, g)] > errors[(3, g)] > errors[(4, g)] > errors[(8, g)]
    for b in (2, 3, 4):
        assert errors[(b, 32)] < errors[(b, 0)]


def test_rtn_formula_and_constant_groups() -> None:
    weight = torch.tensor([[-1.0, 0.0, 0.5, 2.0], [3.0, 3.0, 3.0, 3.0]])
    qw = quantize_rtn(weight, 2, 0)
    assert qw.scale[0, 0].item() == pytest.approx(1.0)  # (2 - (-1)) / 3
    assert qw.zero[0, 0].item() == 1.0  # round(1 / 1)
    torch.testing.assert_close(qw.dequantize()[1], weight[1])  # a constant row is exact
    torch.testing.assert_close(quantize_rtn(torch.zeros(2, 4), 4).dequantize(), torch.zeros(2, 4))


def test_rtn_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="group_size=48 does not divide in_features K=64"):
        quantize_rtn(_weight(), 4, 48)
    with pytest.raises(ValueError, match="bits=5"):
        quantize_rtn(_weight(), 5, 0)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group_size", [0, 32])
def test_nested_codes_equal_msb_slicing(bits: int, group_size: int) -> None:
    master = quantize_rtn(_weight(), 8, group_size)
    nested = nested_from_master(master, bits)
    shift = 8 - bits
    assert torch.equal(nested.codes, master.codes >> shift)
    assert nested.bits == bits and int(nested.codes.max()) <= 2**bits - 1
    # documented formula: the b-bit bucket is the middle of its 2^(8-b) master codes
    groups = master.scale.shape[1]
    width = 64 // groups
    middle = (master.codes.long() >> shift << shift).float() + (2**shift - 1) / 2
    expected = (middle - master.zero.repeat_interleave(width, 1)) * master.scale.repeat_interleave(width, 1)
    torch.testing.assert_close(nested.dequantize(), expected, rtol=1e-6, atol=1e-6)
    step = nested.scale.repeat_interleave(width, 1)
    assert bool(((master.dequantize() - nested.dequantize()).abs() <= (2**shift - 1) / 2 * step / 2**shift
                 + 1e-6).all())


def test_nested_slicing_composes_and_refuses_to_widen() -> None:
    master = quantize_rtn(_weight(), 8, 16)
    via_four = nested_from_master(nested_from_master(master, 4), 2)
    direct = nested_from_master(master, 2)
    assert torch.equal(via_four.codes, direct.codes)
    torch.testing.assert_close(via_four.dequantize(), direct.dequantize(), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="cannot take 8 bits from a 4-bit master"):
        nested_from_master(quantize_rtn(_weight(), 4), 8)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_pack_round_trip_and_size(bits: int) -> None:
    codes = torch.randint(0, 2**bits, (7, 13), dtype=torch.uint8)
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8
    padded = codes.numel() if bits == 8 else -(-codes.numel() // 8) * 8  # sub-byte codes pad the last run of 8
    assert packed.numel() == padded * bits // 8
    assert torch.equal(unpack_codes(packed, bits, codes.numel()).view(7, 13), codes)


@pytest.mark.parametrize("bits", [3, 4])
def test_state_dict_round_trip(bits: int) -> None:
    qw = nested_from_master(quantize_rtn(_weight(16, 64), 8, 32), bits)
    state = qw.to_state_dict()
    assert all(isinstance(t, torch.Tensor) for t in state.values())
    assert state["packed"].numel() == 16 * 64 * bits // 8
    again = QuantizedWeight.from_state_dict(state)
    assert torch.equal(again.codes, qw.codes) and again.bits == bits and again.group_size == 32
    assert torch.equal(again.dequantize(), qw.dequantize())


@pytest.mark.parametrize("bits", [4, 8])
def test_activation_fake_quant_is_per_token_symmetric(bits: int) -> None:
    x = torch.randn(2, 5, 32)
    x[0, 0] *= 100  # one outlier token must not change the other tokens' scales
    out = quantize_activations(x, bits)
    qmax = 2 ** (bits - 1) - 1
    scale = x.abs().amax(dim=-1, keepdim=True) / qmax
    levels = out / scale
    torch.testing.assert_close(levels, levels.round(), atol=1e-4, rtol=0)
    assert bool(((x - out).abs() <= scale / 2 + 1e-6).all())
    torch.testing.assert_close(quantize_activations(x[:, 1:], bits), out[:, 1:])


def test_activation_16_bits_and_zero_tokens() -> None:
    x = torch.randn(3, 8)
    assert quantize_activations(x, 16) is x
    assert torch.equal(quantize_activations(torch.zeros(2, 8), 8), torch.zeros(2, 8))
    assert quantize_activations(x.bfloat16(), 8).dtype == torch.bfloat16
