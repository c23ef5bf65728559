"""Group-wise weight quantization, nested ("Matryoshka") codes and per-token activation fake-quant.

A weight ``W`` (N, K) is split along its input dimension into groups of ``group_size`` consecutive
columns (``group_size=0``: one group per output row, i.e. per channel). Each group gets a float
scale ``s`` and a zero point ``z`` in code units, and every weight an unsigned code ``c`` in
``[0, 2^bits - 1]``; the weight it stands for is ``(c - z) * s``.

Storage on disk (:meth:`QuantizedWeight.to_state_dict`) packs codes densely at ``bits`` bits each:
8 codes of ``b`` bits fill exactly ``b`` bytes, so 2-, 3- and 4-bit weights take 2, 3 and 4 bits
(no nibble padding for 3-bit). Scales and zero points stay float32 so a reload reproduces the
dequantized weights bit for bit; with ``group_size=g`` they add ``64/g`` bits per weight.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

logger = logging.getLogger("dlmsearch.compress.quantize")

#: Weight bit-widths with integer codes (16 means "not quantized" and never reaches this module).
QUANT_BITS: tuple[int, ...] = (2, 3, 4, 8)
#: Activation bit-widths; 16 leaves activations untouched.
ACT_QUANT_BITS: tuple[int, ...] = (4, 8, 16)
MASTER_BITS = 8


@dataclass(frozen=True)
class QuantizedWeight:
    """Codes plus per-group scale and zero point of one quantized weight matrix.

    ``codes`` uint8 (N, K) in ``[0, 2^bits - 1]``; ``scale`` and ``zero`` float32 (N, G) with
    ``G = K // group_size`` (``G = 1`` when ``group_size == 0``). ``zero`` is in code units and may
    be fractional (nested codes have half-integer offsets).
    """

    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    bits: int
    group_size: int

    def __post_init__(self) -> None:
        if self.bits not in QUANT_BITS:
            raise ValueError(f"bits={self.bits}; allowed: {QUANT_BITS}")
        if self.codes.dtype != torch.uint8 or self.codes.dim() != 2:
            raise ValueError(f"codes must be a 2-D uint8 tensor, got {self.codes.dtype} {tuple(self.codes.shape)}")
        rows, cols = self.codes.shape
        groups = _num_groups(cols, self.group_size)
        for name, tensor in (("scale", self.scale), ("zero", self.zero)):
            if tuple(tensor.shape) != (rows, groups):
                raise ValueError(f"{name} has shape {tuple(tensor.shape)}; expected ({rows}, {groups})")

    @property
    def shape(self) -> tuple[int, int]:
        """(out_features, in_features) of the weight."""
        return int(self.codes.shape[0]), int(self.codes.shape[1])

    @property
    def effective_group_size(self) -> int:
        """Columns per group (the full row when ``group_size == 0``)."""
        return self.group_size or self.shape[1]

    def dequantize(self) -> torch.Tensor:
        """The float32 weight (N, K) the codes stand for: ``(code - zero) * scale`` per group."""
        rows, cols = self.shape
        g = self.effective_group_size
        codes = self.codes.to(torch.float32).view(rows, cols // g, g)
        return ((codes - self.zero.unsqueeze(-1)) * self.scale.unsqueeze(-1)).view(rows, cols)

    def to(self, device: torch.device | str) -> QuantizedWeight:
        """The same weight with its tensors on ``device``."""
        return QuantizedWeight(self.codes.to(device), self.scale.to(device), self.zero.to(device),
                               self.bits, self.group_size)

    def to_state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors only (safetensors-ready): densely packed codes, scale, zero and a meta vector.

        ``meta`` is int64 ``[N, K, bits, group_size]``.
        """
        rows, cols = self.shape
        return {"packed": pack_codes(self.codes, self.bits), "scale": self.scale.contiguous(),
                "zero": self.zero.contiguous(),
                "meta": torch.tensor([rows, cols, self.bits, self.group_size], dtype=torch.int64)}

    @classmethod
    def from_state_dict(cls, tensors: dict[str, torch.Tensor]) -> QuantizedWeight:
        """Inverse of :meth:`to_state_dict`."""
        rows, cols, bits, group_size = (int(v) for v in tensors["meta"].tolist())
        codes = unpack_codes(tensors["packed"], bits, rows * cols).view(rows, cols)
        return cls(codes, tensors["scale"].to(torch.float32), tensors["zero"].to(torch.float32), bits, group_size)


def _num_groups(in_features: int, group_size: int) -> int:
    if group_size < 0:
        raise ValueError(f"group_size={group_size}: must be 0 (per channel) or a positive divisor of K")
    if group_size == 0:
        return 1
    if in_features % group_size:
        raise ValueError(f"group_size={group_size} does not divide in_features K={in_features}; "
                         "use 0 (per channel) or a divisor of K")
    return in_features // group_size


def _check_bits(bits: int, allowed: tuple[int, ...]) -> None:
    if bits not in allowed:
        raise ValueError(f"bits={bits}; allowed: {allowed}")


def group_params(groups: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric scale and integer zero point over the last dim of ``groups`` (..., g).

    ``scale = (max - min) / (2^bits - 1)`` and ``zero = round(-min / scale)``. The zero stays a
    float and is not clamped to the code range: rounding it shifts the grid by at most half a step,
    so every value in ``[min, max]`` stays within ``scale / 2`` of a grid point. A constant group
    gets ``scale = |value|`` (1 for zeros), which represents it exactly with code 0.
    """
    groups = groups.to(torch.float32)
    low = groups.amin(dim=-1)
    high = groups.amax(dim=-1)
    step = (high - low) / (2**bits - 1)
    constant = torch.where(low != 0, low.abs(), torch.ones_like(low))
    scale = torch.where(step > 0, step, constant)
    zero = torch.round(-low / scale)
    return scale, zero


def quantize_codes(values: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes ``clamp(round(v / scale) + zero, 0, 2^bits - 1)`` as float (scale/zero broadcast)."""
    return (torch.round(values / scale) + zero).clamp_(0, 2**bits - 1)


def quantize_rtn(weight: torch.Tensor, bits: int, group_size: int = 0) -> QuantizedWeight:
    """Asymmetric round-to-nearest, group-wise over input columns (``group_size=0``: per channel).

    Every element satisfies ``|w - dequantize(w)| <= scale / 2`` of its group.
    """
    _check_bits(bits, QUANT_BITS)
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D (out_features, in_features), got {tuple(weight.shape)}")
    rows, cols = weight.shape
    groups = _num_groups(cols, group_size)
    grouped = weight.detach().to(torch.float32).reshape(rows, groups, cols // groups)
    scale, zero = group_params(grouped, bits)
    codes = quantize_codes(grouped, scale.unsqueeze(-1), zero.unsqueeze(-1), bits)
    return QuantizedWeight(codes.to(torch.uint8).reshape(rows, cols), scale, zero, bits, group_size)


def nested_from_master(master: QuantizedWeight, bits: int) -> QuantizedWeight:
    """The ``bits``-bit weight made of the most significant bits of an 8-bit master's codes.

    With ``r = 8 - bits`` the nested code is ``c_b = c_8 >> r``. Code ``c_b`` covers the ``2^r``
    master codes ``c_b * 2^r ... c_b * 2^r + 2^r - 1``; it stands for their middle,
    ``c_b * 2^r + (2^r - 1) / 2``. Dequantizing that middle with the master's scale and zero::

        w_b = (c_b * 2^r + (2^r - 1) / 2 - z_8) * s_8
            = (c_b - (z_8 - (2^r - 1) / 2) / 2^r) * (s_8 * 2^r)

    so the nested weight is an ordinary quantized weight with ``s_b = s_8 * 2^r`` and
    ``z_b = (z_8 - (2^r - 1) / 2) / 2^r`` (fractional in general). Its error against the master is
    at most ``(2^r - 1) / 2 * s_8``, so against the original weight at most ``s_b / 2`` (for an
    RTN master). ``bits == 8`` returns the master itself.

    The same formula with ``r = m - bits`` slices any ``m``-bit nested code, and slicing composes
    exactly (8 -> 4 -> 2 gives the codes, scales and zeros of 8 -> 2), so a layer whose highest
    precision is ``m < 8`` keeps only the ``m``-bit slice of its master.
    """
    _check_bits(bits, QUANT_BITS)
    if bits > master.bits:
        raise ValueError(f"cannot take {bits} bits from a {master.bits}-bit master")
    if bits == master.bits:
        return master
    shift = master.bits - bits
    step = float(2**shift)
    return QuantizedWeight(master.codes >> shift, master.scale * step,
                           (master.zero - (step - 1) / 2) / step, bits, master.group_size)


def activation_codes(x: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-token integer codes of ``x`` over its last dim and the float32 scale (..., 1).

    ``scale = absmax / (2^(bits-1) - 1)`` per token (1 for an all-zero token); codes are
    ``round(x / scale)`` in ``[-(2^(bits-1) - 1), 2^(bits-1) - 1]``, returned as float32.
    """
    _check_bits(bits, (4, 8))
    qmax = 2 ** (bits - 1) - 1
    x32 = x.to(torch.float32)
    absmax = x32.abs().amax(dim=-1, keepdim=True)
    scale = torch.where(absmax > 0, absmax / qmax, torch.ones_like(absmax))
    return torch.round(x32 / scale).clamp_(-qmax, qmax), scale


def quantize_activations(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-token dynamic fake-quant of ``x`` (symmetric over the last dim); 16 bits returns ``x``."""
    _check_bits(bits, ACT_QUANT_BITS)
    if bits == 16:
        return x
    codes, scale = activation_codes(x, bits)
    return (codes * scale).to(x.dtype)


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes (any shape, values < 2^bits) as a flat uint8 tensor, 8 codes per ``bits`` bytes.

    The flattened codes are padded with zeros to a multiple of 8; within each run of 8, code ``i``
    occupies bits ``[bits*i, bits*(i+1))`` of a little-endian ``bits``-byte word.
    """
    _check_bits(bits, QUANT_BITS)
    flat = codes.reshape(-1).to(torch.uint8)
    if bits == 8:
        return flat.clone()
    pad = (-flat.numel()) % 8
    runs = torch.nn.functional.pad(flat, (0, pad)).view(-1, 8).to(torch.int64)
    shifts = torch.arange(8, device=flat.device, dtype=torch.int64) * bits
    words = (runs << shifts).sum(dim=1, keepdim=True)
    byte_shifts = torch.arange(bits, device=flat.device, dtype=torch.int64) * 8
    return ((words >> byte_shifts) & 0xFF).to(torch.uint8).reshape(-1)


def unpack_codes(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """Inverse of :func:`pack_codes`: the first ``count`` codes as flat uint8."""
    _check_bits(bits, QUANT_BITS)
    if bits == 8:
        return packed[:count].clone()
    chunks = packed.to(torch.int64).view(-1, bits)
    byte_shifts = torch.arange(bits, device=packed.device, dtype=torch.int64) * 8
    words = (chunks << byte_shifts).sum(dim=1, keepdim=True)
    shifts = torch.arange(8, device=packed.device, dtype=torch.int64) * bits
    return ((words >> shifts) & (2**bits - 1)).to(torch.uint8).reshape(-1)[:count]
