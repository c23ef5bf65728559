"""Real low-bit matmul kernels that torch ships, each with a numerical availability probe.

Every kernel computes ``x @ dequantize(W)^T`` for a :class:`QuantizedWeight` ``W`` with codes
``c``, scale ``s`` and zero ``z`` (``w = (c - z) * s``); the zero points become a correction term
or an offset in the kernel's own format, so the result matches dequantize-then-matmul up to float
rounding:

- ``int8_weight_only`` (CPU; CUDA where torch has it): ``torch._weight_int8pack_mm`` with
  symmetric per-channel int8 ``c - 128``; the zero point is a rank-1 correction
  ``rowsum(x) * (z - 128) * s``. 8-bit, per-channel weights only.
- ``int4_weight_only``: tinygemm int4 (CPU: ``torch._convert_weight_to_int4pack_for_cpu`` +
  ``torch._weight_int4pack_mm_for_cpu``; CUDA sm80+: ``torch._convert_weight_to_int4pack`` +
  ``torch._weight_int4pack_mm`` in bf16). It computes ``(c - 8) * S + Z`` per group of 32-256
  columns, so ``S = s`` and ``Z = (8 - z) * s``; 2- and 3-bit codes run through it unchanged.
  CPU needs ``N % 16 == 0``; CUDA needs ``N % 8 == 0`` and ``K % 32 == 0``.
- ``int8_dynamic`` (W8A8): per-token symmetric int8 activations (exactly
  :func:`~dlmsearch.compress.quantize.quantize_activations` at 8 bits) times int8 weights with
  ``torch._int_mm`` (int32 accumulation), zero points corrected with the activation code sums.
  CUDA needs more than 16 rows (inputs are padded) and ``K, N`` multiples of 8.

- ``int8_fbgemm`` (W8A8, CPU): fbgemm's dynamic int8 linear (``quantized::linear_dynamic``, the op
  behind ``torch.ao.quantization.quantize_dynamic``). Its own format: the layer's 8-bit weight is
  requantized *symmetric per output channel* and activations are quantized *per tensor*
  (asymmetric uint8; 7-bit on CPUs without VNNI, where the kernel's int16 pair sums would
  saturate), not the Plan's per-token scheme. :func:`fbgemm_reference` computes it in float,
  and ``bench/nested_quality.py`` measures its KL and NELBO against the simulated format.

Real is not fast everywhere. On CPUs (``bench/compress_speed.py``) ``int8_fbgemm`` runs a DLM
step's token counts at 0.1-0.8 of float32's time, while the other three are several times slower
than a float32 matmul. On CUDA (where ``int8_fbgemm`` does not run) none of the other three is
faster than bf16: on an H200 (torch 2.11,
``bench/gpu_cost_accuracy.py``, a LLaDA-8B MLP projection at M = 128 tokens) ``int8_weight_only``
ran at 0.0039x bf16's speed, ``int4_weight_only`` at 0.116x and ``int8_dynamic`` at 0.151x (2:4
semi-structured sparsity 0.068x; only fp8 ``torch._scaled_mm``, 1.11x, beat bf16, and no Plan
format runs fp8). Each kernel names the device types where it was measured faster than the float
matmul (:attr:`Kernel.fast_on`: ``int8_fbgemm`` on ``cpu``, nothing on ``cuda``), and
:func:`kernels_for` is the one place that turns a ``use_kernels`` setting into the kernels that
run: ``None`` (``apply_plan_``'s default) the fast ones -- so on a GPU every quantized layer is
dequantized once and multiplied in bf16 -- ``True`` every available one, ``False`` none
(dequantize-then-matmul, ``simulated``).

:func:`bf16_linear` serves benchmarks only.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from dlmsearch.compress.quantize import QuantizedWeight, activation_codes, quantize_activations, quantize_rtn

logger = logging.getLogger("dlmsearch.compress.kernels")

INT8_WEIGHT_ONLY = "int8_weight_only"
INT4_WEIGHT_ONLY = "int4_weight_only"
INT8_DYNAMIC = "int8_dynamic"
INT8_FBGEMM = "int8_fbgemm"
#: Input dtypes every kernel here accepts (others fall back to dequantize-then-matmul).
KERNEL_INPUT_DTYPES: frozenset[torch.dtype] = frozenset({torch.float32, torch.bfloat16, torch.float16})
#: Group sizes the tinygemm int4 kernels accept, largest first.
TINYGEMM_GROUP_SIZES: tuple[int, ...] = (256, 128, 64, 32)
_CUDA_INT_MM_MIN_ROWS = 17


# ---------------------------------------------------------------- int8 weight-only


@dataclass(frozen=True)
class Int8WeightOnlyWeights:
    """``_weight_int8pack_mm`` operands: int8 ``c - 128`` (N, K), per-row scale and zero offset."""

    qweight: torch.Tensor
    scale: torch.Tensor
    offset: torch.Tensor  # (z - 128) * s: subtracted times the row sum of x


def pack_int8_weight_only(qw: QuantizedWeight, dtype: torch.dtype) -> Int8WeightOnlyWeights:
    """Prepare an 8-bit per-channel weight for :func:`int8_weight_only_linear` with inputs of ``dtype``."""
    _require(qw.bits == 8 and qw.scale.shape[1] == 1, "int8 weight-only needs 8-bit per-channel weights")
    qweight = (qw.codes.to(torch.int16) - 128).to(torch.int8)
    scale = qw.scale[:, 0]
    return Int8WeightOnlyWeights(qweight, scale.to(dtype), ((qw.zero[:, 0] - 128) * scale).to(dtype))


def int8_weight_only_linear(x: torch.Tensor, w: Int8WeightOnlyWeights) -> torch.Tensor:
    """``x (M, K) @ W^T`` with ``torch._weight_int8pack_mm``."""
    out = torch._weight_int8pack_mm(x, w.qweight, w.scale)
    return out - x.sum(dim=-1, keepdim=True) * w.offset


# ---------------------------------------------------------------- int4 weight-only (tinygemm)


@dataclass(frozen=True)
class Int4WeightOnlyWeights:
    """tinygemm operands: packed int4 codes, (K / g, N, 2) scales and offsets, group size, dtype."""

    packed: torch.Tensor
    scale_and_zero: torch.Tensor
    group_size: int
    dtype: torch.dtype


def int4_group_size(group_size: int, in_features: int) -> int | None:
    """Largest tinygemm group size dividing the weight's group (or ``K`` when per channel)."""
    span = group_size or in_features
    return next((g for g in TINYGEMM_GROUP_SIZES if span % g == 0), None)


def _int4_supported(out_features: int, in_features: int, group_size: int, device: torch.device) -> bool:
    if int4_group_size(group_size, in_features) is None:
        return False
    if device.type == "cpu":
        return out_features % 16 == 0
    return out_features % 8 == 0 and in_features % 32 == 0


def _inner_k_tiles(in_features: int) -> int:
    return next(t for t in (8, 4, 2) if in_features % (16 * t) == 0)


def pack_int4_weight_only(qw: QuantizedWeight, dtype: torch.dtype) -> Int4WeightOnlyWeights:
    """Prepare a weight of at most 4 bits for :func:`int4_weight_only_linear` (CUDA computes in bf16)."""
    rows, cols = qw.shape
    kernel_group = int4_group_size(qw.group_size, cols)
    if qw.bits > 4 or kernel_group is None or not _int4_supported(rows, cols, qw.group_size, qw.codes.device):
        raise ValueError(f"int4 weight-only cannot run a {qw.bits}-bit {rows}x{cols} weight "
                         f"with group_size={qw.group_size} on {qw.codes.device}")
    repeat = qw.effective_group_size // kernel_group
    scale = qw.scale.repeat_interleave(repeat, dim=1)
    offset = (8 - qw.zero.repeat_interleave(repeat, dim=1)) * scale
    on_cpu = qw.codes.device.type == "cpu"
    compute = dtype if on_cpu else torch.bfloat16
    scale_and_zero = torch.stack([scale, offset], dim=-1).transpose(0, 1).contiguous().to(compute)
    if on_cpu:
        packed = torch._convert_weight_to_int4pack_for_cpu(qw.codes.to(torch.int32), _inner_k_tiles(cols))
    else:
        pairs = (qw.codes[:, ::2] << 4) | qw.codes[:, 1::2]
        packed = torch._convert_weight_to_int4pack(pairs.contiguous(), _inner_k_tiles(cols))
    return Int4WeightOnlyWeights(packed, scale_and_zero, kernel_group, compute)


def int4_weight_only_linear(x: torch.Tensor, w: Int4WeightOnlyWeights) -> torch.Tensor:
    """``x (M, K) @ W^T`` with the tinygemm int4 kernel of ``x``'s device."""
    inputs = x.to(w.dtype).contiguous()
    if x.device.type == "cpu":
        out = torch._weight_int4pack_mm_for_cpu(inputs, w.packed, w.group_size, w.scale_and_zero)
    else:
        out = torch._weight_int4pack_mm(inputs, w.packed, w.group_size, w.scale_and_zero)
    return out.to(x.dtype)


# ---------------------------------------------------------------- int8 dynamic (W8A8)


@dataclass(frozen=True)
class Int8DynamicWeights:
    """``_int_mm`` operands: int8 ``(c - 128)^T`` (K, N), per-row scale and zero offset ``z - 128``."""

    qweight_t: torch.Tensor
    scale: torch.Tensor
    zero_offset: torch.Tensor


def pack_int8_dynamic(qw: QuantizedWeight, dtype: torch.dtype) -> Int8DynamicWeights:
    """Prepare an 8-bit per-channel weight for :func:`int8_dynamic_linear` (works in float32)."""
    _require(qw.bits == 8 and qw.scale.shape[1] == 1, "int8 dynamic needs 8-bit per-channel weights")
    qweight = (qw.codes.to(torch.int16) - 128).to(torch.int8)
    return Int8DynamicWeights(qweight.t(), qw.scale[:, 0].float(), (qw.zero[:, 0] - 128).float())


def int8_dynamic_linear(x: torch.Tensor, w: Int8DynamicWeights) -> torch.Tensor:
    """``quantize_activations(x, 8) @ W^T`` with int8 x int8 -> int32 ``torch._int_mm``."""
    codes, x_scale = activation_codes(x, 8)
    rows = codes.shape[0]
    qx = codes.to(torch.int8)
    if x.device.type == "cuda" and rows < _CUDA_INT_MM_MIN_ROWS:
        qx = F.pad(qx, (0, 0, 0, _CUDA_INT_MM_MIN_ROWS - rows))
    acc = torch._int_mm(qx, w.qweight_t)[:rows].to(torch.float32)
    out = (acc - codes.sum(dim=-1, keepdim=True) * w.zero_offset) * (x_scale * w.scale)
    return out.to(x.dtype)


# ---------------------------------------------------------------- int8 fbgemm (W8A8 on CPU)


@dataclass(frozen=True)
class FbgemmInt8Weights:
    """``quantized::linear_dynamic`` operand: the prepacked per-channel symmetric qint8 weight."""

    packed: Any
    reduce_range: bool  # 7-bit activations: the CPU has no VNNI (see :func:`fbgemm_full_range`)


def symmetric_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 codes in ``[-127, 127]`` and float64 per-row scales ``absmax / 127`` of a float weight."""
    scale = (weight.abs().amax(dim=1) / 127).clamp_min(1e-12).to(torch.float64)
    codes = torch.round(weight.double() / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return codes, scale


def _prepack_symmetric(weight: torch.Tensor) -> Any:
    """``weight`` (N, K, float, CPU) as fbgemm's prepacked symmetric per-channel qint8 operand."""
    codes, scale = symmetric_per_channel(weight)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # quantized tensors are deprecated; the op still ships
        qweight = torch._make_per_channel_quantized_tensor(codes, scale, torch.zeros_like(scale, dtype=torch.int64), 0)
        return torch.ops.quantized.linear_prepack(qweight, None)


def pack_int8_fbgemm(qw: QuantizedWeight, dtype: torch.dtype) -> FbgemmInt8Weights:
    """Requantize an 8-bit weight symmetric per channel and prepack it for fbgemm (CPU only)."""
    _require(qw.bits == 8, "int8 fbgemm needs 8-bit weights")
    return FbgemmInt8Weights(_prepack_symmetric(qw.dequantize().cpu()), not fbgemm_full_range())


def int8_fbgemm_linear(x: torch.Tensor, w: FbgemmInt8Weights) -> torch.Tensor:
    """``x (M, K) @ W^T`` with fbgemm's dynamic int8 linear (per-tensor activations, int32 accumulation)."""
    out = torch.ops.quantized.linear_dynamic(x.float().contiguous(), w.packed, w.reduce_range)
    return out.to(x.dtype)


def per_tensor_activations(x: torch.Tensor, reduce_range: bool) -> torch.Tensor:
    """``x`` fake-quantized as fbgemm's dynamic linear does: one asymmetric uint8 grid over the
    tensor's range widened to include 0 (``[0, 127]`` with ``reduce_range``)."""
    qmax = 127 if reduce_range else 255
    low, high = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = (high - low) / qmax if high > low else 1.0
    zero = min(max(round(-low / scale), 0), qmax)
    return (torch.clamp(torch.round(x / scale) + zero, 0, qmax) - zero) * scale


def fbgemm_reference(x: torch.Tensor, qw: QuantizedWeight, reduce_range: bool | None = None) -> torch.Tensor:
    """What :func:`int8_fbgemm_linear` computes, in float: per-tensor activations times the
    symmetric per-channel requantization of ``qw`` (``reduce_range`` defaults to this CPU's)."""
    if reduce_range is None:
        reduce_range = not fbgemm_full_range()
    codes, scale = symmetric_per_channel(qw.dequantize().cpu())
    weight = (codes.double() * scale[:, None]).float().to(x.device)
    return per_tensor_activations(x.float(), reduce_range) @ weight.t()


@functools.cache
def fbgemm_full_range() -> bool:
    """True when fbgemm's dynamic linear takes full-range uint8 activations without saturating.

    CPUs without VNNI multiply uint8 x int8 in int16 pair sums, which overflow at full range; the
    probe makes every pair sum 2 * 255 * 127 and checks the result against exact arithmetic.
    """
    x = torch.full((2, 64), 1.0)
    x[:, 0] = 0.0  # the range starts at 0, so every other entry gets code 255
    try:
        out = torch.ops.quantized.linear_dynamic(x, _prepack_symmetric(torch.full((8, 64), 1.0)), False)
    except (RuntimeError, NotImplementedError, AttributeError):
        return False
    return bool(torch.allclose(out, torch.full_like(out, 63.0), rtol=1e-3))


# ---------------------------------------------------------------- benchmark-only kernels


def bf16_linear(x: torch.Tensor, weight_bf16: torch.Tensor) -> torch.Tensor:
    """``x @ W^T`` computed in bfloat16 (``weight_bf16`` already converted), returned in ``x``'s dtype."""
    return F.linear(x.to(torch.bfloat16), weight_bf16).to(x.dtype)


# ---------------------------------------------------------------- registry and probes


@dataclass(frozen=True)
class Kernel:
    """A real kernel for ``QuantizedLinear``: which formats it takes and how to run it.

    ``act_bits`` is 16 for weight-only kernels and 8 for W8A8 (the kernel quantizes activations);
    ``fast_on`` names the device types where it was measured faster than a float matmul at a DLM
    step's token counts (what ``apply_plan_`` runs by default, see :func:`kernels_for`);
    ``reference`` computes in float what the kernel computes (the probe checks the kernel against it).
    """

    name: str
    weight_bits: tuple[int, ...]
    act_bits: int
    supports: Callable[[int, int, int, torch.device], bool]  # (out_features, in_features, group_size, device)
    pack: Callable[[QuantizedWeight, torch.dtype], Any]
    linear: Callable[[torch.Tensor, Any], torch.Tensor]
    fast_on: frozenset[str]
    reference: Callable[[torch.Tensor, QuantizedWeight], torch.Tensor]


def _per_channel(out_features: int, in_features: int, group_size: int, device: torch.device) -> bool:
    return group_size in (0, in_features)


def _int8_dynamic_supported(out_features: int, in_features: int, group_size: int, device: torch.device) -> bool:
    shapes_ok = device.type == "cpu" or (in_features % 8 == 0 and out_features % 8 == 0)
    return shapes_ok and _per_channel(out_features, in_features, group_size, device)


def _on_cpu(out_features: int, in_features: int, group_size: int, device: torch.device) -> bool:
    return device.type == "cpu"


def _dequantize_reference(act_bits: int) -> Callable[[torch.Tensor, QuantizedWeight], torch.Tensor]:
    return lambda x, qw: quantize_activations(x, act_bits) @ qw.dequantize().to(x.device).t()


#: Measured slower than the float matmul at a DLM step's token counts on every device type tried
#: (CPUs: ``bench/compress_speed.py``; CUDA: one H200, ``bench/gpu_cost_accuracy.py``): run only
#: under ``use_kernels=True``.
_NOWHERE: frozenset[str] = frozenset()
KERNELS: dict[str, Kernel] = {
    INT8_FBGEMM: Kernel(INT8_FBGEMM, (8,), 8, _on_cpu, pack_int8_fbgemm, int8_fbgemm_linear, frozenset({"cpu"}),
                        fbgemm_reference),
    INT8_DYNAMIC: Kernel(INT8_DYNAMIC, (8,), 8, _int8_dynamic_supported, pack_int8_dynamic, int8_dynamic_linear,
                         _NOWHERE, _dequantize_reference(8)),
    INT8_WEIGHT_ONLY: Kernel(INT8_WEIGHT_ONLY, (8,), 16, _per_channel, pack_int8_weight_only,
                             int8_weight_only_linear, _NOWHERE, _dequantize_reference(16)),
    INT4_WEIGHT_ONLY: Kernel(INT4_WEIGHT_ONLY, (2, 3, 4), 16, _int4_supported, pack_int4_weight_only,
                             int4_weight_only_linear, _NOWHERE, _dequantize_reference(16)),
}


def kernels_for(device_type: str, use_kernels: bool | None) -> frozenset[str]:
    """Names of the kernels a ``use_kernels`` setting lets run on ``device_type`` (if available there).

    ``None``: those fast on the device (:attr:`Kernel.fast_on`); ``True``: all; ``False``: none.
    """
    if use_kernels is None:
        return frozenset(name for name, kernel in KERNELS.items() if device_type in kernel.fast_on)
    return frozenset(KERNELS) if use_kernels else frozenset()


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _device_key(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return f"cuda:{torch.cuda.current_device()}"
    return str(device)


def kernel_available(name: str, device: torch.device | str) -> bool:
    """Whether kernel ``name`` runs on ``device`` and matches dequantize-then-matmul (probed once)."""
    return _probe(name, _device_key(device))


@functools.cache
def _probe(name: str, device_key: str) -> bool:
    kernel = KERNELS[name]
    device = torch.device(device_key)
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(32, 128, generator=generator)
    x = torch.randn(3, 128, generator=generator).to(device)
    group_size = 0 if name != INT4_WEIGHT_ONLY else 32
    qw = quantize_rtn(weight, kernel.weight_bits[-1], group_size).to(device)
    try:
        out = kernel.linear(x, kernel.pack(qw, torch.float32))
    except (RuntimeError, NotImplementedError, AttributeError, ValueError) as exc:
        logger.debug("kernel %s unavailable on %s: %s", name, device_key, exc)
        return False
    reference = kernel.reference(x, qw)
    error = float((out.float() - reference).abs().max())
    ok = error <= 3e-2 * float(reference.abs().max())
    if not ok:
        logger.warning("kernel %s on %s disagrees with dequantize+matmul (max error %.3g); not used",
                       name, device_key, error)
    return ok


def select_kernel(bits: int, act_bits: int, group_size: int, out_features: int, in_features: int,
                  device: torch.device | str, dtype: torch.dtype = torch.float32,
                  use_kernels: bool | None = True) -> Kernel | None:
    """The real kernel for this weight format, device and input dtype, or None (dequantize-then-matmul).

    Only kernels :func:`kernels_for` allows under ``use_kernels`` are considered. A kernel that
    also quantizes activations (W8A8) is preferred when ``act_bits`` matches, then one fast on
    the device; a weight-only kernel leaves the caller to fake-quantize activations itself.
    """
    device = torch.device(device)
    if dtype not in KERNEL_INPUT_DTYPES:
        return None
    allowed = kernels_for(device.type, use_kernels)
    candidates = sorted((k for k in KERNELS.values() if k.name in allowed),
                        key=lambda k: (k.act_bits != act_bits, device.type not in k.fast_on))
    for kernel in candidates:
        if kernel.act_bits not in (16, act_bits) or bits not in kernel.weight_bits:
            continue
        if kernel.supports(out_features, in_features, group_size, device) and kernel_available(kernel.name, device):
            return kernel
    return None
