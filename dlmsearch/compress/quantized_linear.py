"""A drop-in replacement for ``nn.Linear`` whose precision follows the denoising timestep.

A :class:`QuantizedLinear` holds its weight once (``storage="nested"``: one 8-bit master whose
most significant bits serve every lower precision) or once per distinct bit-width
(``storage="copies"``). Each forward pass reads the sampler's step context
(:func:`dlmsearch.models.sampler.current_step`), maps the denoising progress to a timestep group,
and computes with that group's weight and activation bit-widths. When torch has a real kernel for
the format on the running device (see :mod:`dlmsearch.compress.kernels`) it runs; otherwise the
weight is dequantized (cached per bit-width) and multiplied in float, and the layer says so
through :meth:`QuantizedLinear.simulated` and :attr:`QuantizedLinear.summary`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dlmsearch.compress.gptq import gptq_quantize
from dlmsearch.compress.kernels import Kernel, select_kernel
from dlmsearch.compress.quantize import (
    ACT_QUANT_BITS,
    MASTER_BITS,
    QuantizedWeight,
    nested_from_master,
    quantize_activations,
    quantize_rtn,
)
from dlmsearch.models.sampler import current_step

logger = logging.getLogger("dlmsearch.compress.quantized_linear")

WEIGHT_BITS: tuple[int, ...] = (2, 3, 4, 8, 16)
STORAGES: tuple[str, ...] = ("nested", "copies")
METHODS: tuple[str, ...] = ("rtn", "gptq")
SIMULATED = "simulated (dequantize+matmul)"


@dataclass(frozen=True)
class QuantConfig:
    """Per-timestep precision of one layer.

    Group ``g`` serves denoising progress ``p`` with ``boundaries[g-1] <= p < boundaries[g]``;
    ``weight_bits[g]`` / ``act_bits[g]`` are its bit-widths (16 = not quantized).
    """

    weight_bits: tuple[int, ...]
    act_bits: tuple[int, ...]
    timestep_boundaries: tuple[float, ...] = ()
    group_size: int = 0  # 0 = one scale per output channel
    storage: str = "nested"
    method: str = "rtn"

    def __post_init__(self) -> None:
        problems = []
        groups = len(self.timestep_boundaries) + 1
        for name, values, allowed in (("weight_bits", self.weight_bits, WEIGHT_BITS),
                                      ("act_bits", self.act_bits, ACT_QUANT_BITS)):
            if len(values) != groups:
                problems.append(f"{name}={values} needs one value per timestep group ({groups})")
            if any(v not in allowed for v in values):
                problems.append(f"{name}={values}: values must be in {allowed}")
        bounds = self.timestep_boundaries
        if any(not 0 < b <= 1 for b in bounds) or any(a >= b for a, b in zip(bounds, bounds[1:], strict=False)):
            problems.append(f"timestep_boundaries={bounds} must increase strictly within (0, 1]")
        if self.group_size < 0:
            problems.append(f"group_size={self.group_size} must be 0 or positive")
        if self.storage not in STORAGES:
            problems.append(f"storage={self.storage!r}; allowed: {STORAGES}")
        if self.method not in METHODS:
            problems.append(f"method={self.method!r}; allowed: {METHODS}")
        if problems:
            raise ValueError("invalid quantization config: " + "; ".join(problems))

    @property
    def quantized_bits(self) -> tuple[int, ...]:
        """Distinct weight bit-widths below 16, ascending."""
        return tuple(sorted({b for b in self.weight_bits if b < 16}))

    @property
    def stored_bits(self) -> tuple[int, ...]:
        """Bit-widths that get their own code tensor: the master's top slice (nested) or every one (copies)."""
        if self.storage == "nested" and self.quantized_bits:
            return (max(self.quantized_bits),)  # the master's slice at the highest precision used
        return self.quantized_bits

    def group_of(self, progress: float) -> int:
        """Timestep group of denoising ``progress`` (0..1)."""
        return sum(1 for boundary in self.timestep_boundaries if progress >= boundary)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QuantConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(weight_bits=tuple(data["weight_bits"]), act_bits=tuple(data["act_bits"]),
                   timestep_boundaries=tuple(float(b) for b in data["timestep_boundaries"]),
                   group_size=int(data["group_size"]), storage=str(data["storage"]),
                   method=str(data["method"]))


def quantize_weights(weight: torch.Tensor, config: QuantConfig,
                     hessian: torch.Tensor | None = None) -> dict[int, QuantizedWeight]:
    """The stored weights of ``config``: one per bit-width (copies), or for nested storage the 8-bit
    master sliced to the layer's highest precision (all lower ones are slices of that)."""
    if config.storage == "nested" and config.quantized_bits:
        top = config.stored_bits[0]
        return {top: nested_from_master(_quantize_one(weight, MASTER_BITS, config, hessian), top)}
    return {bits: _quantize_one(weight, bits, config, hessian) for bits in config.stored_bits}


def _quantize_one(weight: torch.Tensor, bits: int, config: QuantConfig,
                  hessian: torch.Tensor | None) -> QuantizedWeight:
    if config.method == "rtn":
        return quantize_rtn(weight, bits, config.group_size)
    if hessian is None:
        raise ValueError("method='gptq' needs the layer's Hessian (see HessianAccumulator)")
    return gptq_quantize(weight, hessian, bits, config.group_size)


@dataclass(frozen=True)
class _Route:
    """How one timestep group computes for one input device and dtype."""

    kernel: Kernel | None  # None: F.linear with the dequantized (or 16-bit) weight
    operand: Any  # the float weight or the kernel's packed operand
    bias: torch.Tensor | None
    fake_act_bits: int  # activations fake-quantized to this width before the matmul (16: none)


class QuantizedLinear(nn.Module):
    """``nn.Linear`` replacement with per-timestep weight and activation precision.

    Build it with :meth:`from_linear`. The group used by a forward pass is, in order: the
    ``active_group`` attribute when set (see :func:`force_timestep_group`), else the group of the
    sampler's current step, else group 0. ``use_kernels`` picks the real kernels it may run
    (:func:`~dlmsearch.compress.kernels.kernels_for`): ``None`` (the default) those fast on the
    input's device, ``True`` every available one, ``False`` none (always simulate).
    Buffers are not part of ``state_dict()``; save with :meth:`state_tensors`.
    """

    weight16: torch.Tensor | None
    bias: torch.Tensor | None

    def __init__(self, in_features: int, out_features: int, config: QuantConfig,
                 weights: Mapping[int, QuantizedWeight], weight16: torch.Tensor | None = None,
                 bias: torch.Tensor | None = None, use_kernels: bool | None = None) -> None:
        super().__init__()
        expected = config.stored_bits
        if tuple(sorted(weights)) != expected:
            raise ValueError(f"storage={config.storage!r} with weight_bits={config.weight_bits} stores bits "
                             f"{expected}; got {tuple(sorted(weights))}")
        if (weight16 is None) == (16 in config.weight_bits):
            raise ValueError("weight16 must be given exactly when some timestep group uses 16-bit weights")
        self.in_features = in_features
        self.out_features = out_features
        self.config = config
        self.use_kernels = use_kernels
        self.active_group: int | None = None
        for bits, qw in weights.items():
            if qw.shape != (out_features, in_features) or qw.bits != bits or qw.group_size != config.group_size:
                raise ValueError(f"stored {bits}-bit weight does not match the layer "
                                 f"({qw.shape}, {qw.bits} bits, group {qw.group_size})")
            self.register_buffer(f"codes_{bits}", qw.codes, persistent=False)
            self.register_buffer(f"scale_{bits}", qw.scale, persistent=False)
            self.register_buffer(f"zero_{bits}", qw.zero, persistent=False)
        self.register_buffer("weight16", weight16, persistent=False)
        self.register_buffer("bias", bias, persistent=False)
        self._dequantized: dict[tuple[int, torch.dtype], torch.Tensor] = {}
        self._packed: dict[tuple[str, int, torch.dtype], Any] = {}
        # (group, device, dtype) -> how a forward pass computes: decided once, not per call
        self._routes: dict[tuple[int, torch.device, torch.dtype], _Route] = {}

    @classmethod
    def from_linear(cls, linear: nn.Linear, config: QuantConfig, hessian: torch.Tensor | None = None,
                    use_kernels: bool | None = None) -> QuantizedLinear:
        """Quantize ``linear``'s weight as ``config`` says (GPTQ needs the layer's ``hessian``)."""
        weight = linear.weight.detach()
        weights = quantize_weights(weight, config, hessian)
        weight16 = weight.clone() if 16 in config.weight_bits else None
        bias = linear.bias.detach().clone() if linear.bias is not None else None
        return cls(linear.in_features, linear.out_features, config, weights, weight16, bias, use_kernels)

    # ------------------------------------------------------------ stored weights

    @property
    def stored_bits(self) -> tuple[int, ...]:
        """Bit-widths that have their own code tensor (one for nested storage)."""
        return self.config.stored_bits

    def _stored(self, bits: int) -> QuantizedWeight:
        return QuantizedWeight(getattr(self, f"codes_{bits}"), getattr(self, f"scale_{bits}"),
                               getattr(self, f"zero_{bits}"), bits, self.config.group_size)

    def weight_for(self, bits: int) -> QuantizedWeight:
        """The quantized weight the layer computes with at ``bits`` (< 16)."""
        if bits not in self.config.quantized_bits:
            raise ValueError(f"this layer has no {bits}-bit weights; it uses {self.config.quantized_bits}")
        if self.config.storage == "nested":
            return nested_from_master(self._stored(self.stored_bits[0]), bits)
        return self._stored(bits)

    def clear_cache(self) -> None:
        """Drop dequantized and kernel-packed weights (rebuilt on the next forward)."""
        self._dequantized.clear()
        self._packed.clear()
        self._routes.clear()

    def _apply(self, fn: Any, recurse: bool = True) -> QuantizedLinear:
        # Caches are plain attributes, so moves must rebuild them. Scales and zero points stay float32
        # through dtype casts (a bf16 scale would move every dequantized weight); they follow devices.
        self.clear_cache()
        exact = {bits: (getattr(self, f"scale_{bits}"), getattr(self, f"zero_{bits}")) for bits in self.stored_bits}
        super()._apply(fn, recurse)
        for bits, (scale, zero) in exact.items():
            device = getattr(self, f"codes_{bits}").device
            self._buffers[f"scale_{bits}"], self._buffers[f"zero_{bits}"] = scale.to(device), zero.to(device)
        return self

    # ------------------------------------------------------------ precision selection

    def current_group(self) -> int:
        """Timestep group the next forward pass uses (override, else sampler step, else 0)."""
        if self.active_group is not None:
            return self.active_group
        step = current_step()
        return 0 if step is None else self.config.group_of(step.progress)

    def current_bits(self) -> tuple[int, int]:
        """(weight bits, activation bits) of :meth:`current_group`."""
        group = self.current_group()
        return self.config.weight_bits[group], self.config.act_bits[group]

    def _device(self) -> torch.device:
        source = self.weight16 if self.weight16 is not None else getattr(self, f"codes_{self.stored_bits[0]}")
        return source.device

    def _float_dtype(self) -> torch.dtype:
        return self.weight16.dtype if self.weight16 is not None else torch.float32

    def _kernel(self, bits: int, act_bits: int, device: torch.device, dtype: torch.dtype) -> Kernel | None:
        if bits == 16:
            return None
        return select_kernel(bits, act_bits, self.config.group_size, self.out_features, self.in_features,
                             device, dtype, self.use_kernels)

    def kernel_for(self, bits: int, act_bits: int = 16) -> str:
        """Name of what computes a ``bits``-weight, ``act_bits``-activation matmul on this device.

        A real kernel's name (e.g. ``"int4_weight_only"``), ``"dense_<dtype>"`` for 16-bit weights, or
        ``"simulated (dequantize+matmul)"``; ``"+fake_act<b>"`` is appended when the activations are
        fake-quantized in float rather than by the kernel. Inputs are assumed to have the dtype of the
        layer's float weight (float32 when it keeps none).
        """
        kernel = self._kernel(bits, act_bits, self._device(), self._float_dtype())
        if bits == 16:
            name = f"dense_{str(self._float_dtype()).removeprefix('torch.')}"
        else:
            name = kernel.name if kernel is not None else SIMULATED
        if act_bits < 16 and (kernel is None or kernel.act_bits != act_bits):
            name += f"+fake_act{act_bits}"
        return name

    def simulated(self, bits: int, act_bits: int = 16) -> bool:
        """True when some part of the requested quantization has no real kernel (no speed to measure)."""
        kernel = self._kernel(bits, act_bits, self._device(), self._float_dtype())
        weight_simulated = bits < 16 and kernel is None
        act_simulated = act_bits < 16 and (kernel is None or kernel.act_bits != act_bits)
        return weight_simulated or act_simulated

    @property
    def summary(self) -> dict[str, Any]:
        """JSON-able description for cost models: per timestep group, the kernel and whether it is simulated."""
        pairs = list(zip(self.config.weight_bits, self.config.act_bits, strict=True))
        return {**self.config.to_dict(), "stored_bits": list(self.stored_bits), "device": str(self._device()),
                "kernels": [self.kernel_for(w, a) for w, a in pairs],
                "simulated": [self.simulated(w, a) for w, a in pairs]}

    # ------------------------------------------------------------ compute

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = (self.current_group(), x.device, x.dtype)
        route = self._routes.get(key)
        if route is None:
            route = self._routes[key] = self._route(*key)
        if route.fake_act_bits < 16:
            x = quantize_activations(x, route.fake_act_bits)
        if route.kernel is None:
            return F.linear(x, route.operand, route.bias)
        out = route.kernel.linear(x.reshape(-1, self.in_features).contiguous(), route.operand)
        if route.bias is not None:
            out = out + route.bias
        return out.reshape(*x.shape[:-1], self.out_features)

    def _route(self, group: int, device: torch.device, dtype: torch.dtype) -> _Route:
        bits, act_bits = self.config.weight_bits[group], self.config.act_bits[group]
        kernel = self._kernel(bits, act_bits, device, dtype)
        fake = act_bits if act_bits < 16 and (kernel is None or kernel.act_bits != act_bits) else 16
        operand = self._float_weight(bits, dtype) if kernel is None else self._packed_weight(kernel, bits, dtype)
        return _Route(kernel, operand, self._bias(dtype), fake)

    def _bias(self, dtype: torch.dtype) -> torch.Tensor | None:
        return None if self.bias is None else self.bias.to(dtype)

    def _float_weight(self, bits: int, dtype: torch.dtype) -> torch.Tensor:
        if bits == 16:
            assert self.weight16 is not None
            return self.weight16.to(dtype)
        key = (bits, dtype)
        if key not in self._dequantized:
            self._dequantized[key] = self.weight_for(bits).dequantize().to(dtype)
        return self._dequantized[key]

    def _packed_weight(self, kernel: Kernel, bits: int, dtype: torch.dtype) -> Any:
        key = (kernel.name, bits, dtype)
        if key not in self._packed:
            self._packed[key] = kernel.pack(self.weight_for(bits), dtype)
        return self._packed[key]

    def extra_repr(self) -> str:
        cfg = self.config
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"weight_bits={cfg.weight_bits}, act_bits={cfg.act_bits}, "
                f"boundaries={cfg.timestep_boundaries}, group_size={cfg.group_size}, storage={cfg.storage}")

    # ------------------------------------------------------------ serialisation

    def state_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Plain tensors (packed codes, scales, float weight, bias) and JSON-able metadata.

        :meth:`from_state_tensors` rebuilds an identical layer from them (safetensors-ready).
        """
        tensors: dict[str, torch.Tensor] = {}
        for bits in self.stored_bits:
            for key, tensor in self._stored(bits).to_state_dict().items():
                tensors[f"w{bits}.{key}"] = tensor
        if self.weight16 is not None:
            tensors["weight16"] = self.weight16
        if self.bias is not None:
            tensors["bias"] = self.bias
        metadata = {"in_features": self.in_features, "out_features": self.out_features,
                    "config": self.config.to_dict(), "use_kernels": self.use_kernels}
        return {name: t.detach().contiguous() for name, t in tensors.items()}, metadata

    @classmethod
    def from_state_tensors(cls, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> QuantizedLinear:
        """Inverse of :meth:`state_tensors`."""
        config = QuantConfig.from_dict(metadata["config"])
        weights = {bits: QuantizedWeight.from_state_dict({key: tensors[f"w{bits}.{key}"]
                                                          for key in ("packed", "scale", "zero", "meta")})
                   for bits in config.stored_bits}
        return cls(int(metadata["in_features"]), int(metadata["out_features"]), config, weights,
                   tensors.get("weight16"), tensors.get("bias"), _use_kernels(metadata.get("use_kernels")))


def _use_kernels(value: Any) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"use_kernels: {value!r} is not allowed; allowed: true, false or null")
    return value


@contextlib.contextmanager
def force_timestep_group(model: nn.Module, group: int | None) -> Iterator[None]:
    """Make every :class:`QuantizedLinear` in ``model`` use timestep ``group`` inside the block.

    Evaluators use it to score one group's precision without running the sampler; ``None``
    restores step-driven selection. Previous overrides come back on exit.
    """
    layers = [m for m in model.modules() if isinstance(m, QuantizedLinear)]
    for layer in layers:
        if group is not None and not 0 <= group < len(layer.config.weight_bits):
            raise ValueError(f"group={group}: the layer has {len(layer.config.weight_bits)} timestep groups")
    previous = [layer.active_group for layer in layers]
    for layer in layers:
        layer.active_group = group
    try:
        yield
    finally:
        for layer, old in zip(layers, previous, strict=True):
            layer.active_group = old
