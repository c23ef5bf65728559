"""GPTQ: quantize a weight column by column, compensating each column's error in the rest.

Frantar et al., "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained Transformers"
(arXiv 2210.17323; reference code IST-DASLab/gptq). For a linear with calibration inputs ``X``
(n, K) it minimises ``||X W^T - X Q^T||^2`` row by row using the Hessian ``H = 2 X^T X / n``:
columns are quantized in order (act-order off) and the error of each column, divided by the
matching diagonal of the inverse Hessian's upper Cholesky factor, is spread onto the columns not
yet quantized. Updates inside a block of columns are applied immediately, updates to later
columns once per block ("lazy batch updates"). Group scales are computed from the
already-updated weights when a group's first column comes up.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from dlmsearch.compress.quantize import (
    QUANT_BITS,
    QuantizedWeight,
    group_params,
    quantize_codes,
)

logger = logging.getLogger("dlmsearch.compress.gptq")


class HessianAccumulator:
    """Builds ``H = 2 X^T X / n`` incrementally from the inputs (..., K) of one linear layer.

    Feed it directly with :meth:`add`, or attach it as a forward hook with :meth:`capture`.
    """

    def __init__(self, in_features: int, device: torch.device | str | None = None) -> None:
        self.in_features = in_features
        self.hessian = torch.zeros(in_features, in_features, dtype=torch.float32, device=device)
        self.num_samples = 0

    def add(self, x: torch.Tensor) -> None:
        """Fold the rows of ``x`` (..., K) into the running mean."""
        if x.shape[-1] != self.in_features:
            raise ValueError(f"input has {x.shape[-1]} features; this accumulator expects {self.in_features}")
        rows = x.detach().reshape(-1, self.in_features).to(self.hessian.device, torch.float32)
        total = self.num_samples + rows.shape[0]
        if total == 0:
            return
        self.hessian.mul_(self.num_samples / total).addmm_(rows.t(), rows, alpha=2.0 / total)
        self.num_samples = total

    def hook(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        """Forward-hook signature: records the module's first positional input."""
        self.add(inputs[0])

    @contextlib.contextmanager
    def capture(self, module: nn.Module) -> Iterator[HessianAccumulator]:
        """Record every input of ``module`` while the block runs."""
        handle = module.register_forward_hook(self.hook)
        try:
            yield self
        finally:
            handle.remove()


def _inverse_cholesky_upper(hessian: torch.Tensor) -> torch.Tensor:
    """Upper Cholesky factor of ``H^-1`` (the form GPTQ's updates need)."""
    lower, info = torch.linalg.cholesky_ex(hessian)
    if int(info) != 0:
        raise ValueError("the damped Hessian is not positive definite; raise `damp` or add calibration data")
    return torch.linalg.cholesky(torch.cholesky_inverse(lower), upper=True)


def gptq_quantize(weight: torch.Tensor, hessian: torch.Tensor, bits: int, group_size: int = 0,
                  damp: float = 0.01, block_size: int = 128) -> QuantizedWeight:
    """GPTQ-quantize ``weight`` (N, K) with ``hessian`` (K, K) to asymmetric ``bits``-bit codes.

    ``damp`` adds ``damp * mean(diag H)`` to the diagonal. Columns that no calibration input ever
    activated (zero diagonal) get weight 0, as in the reference code. ``block_size`` is rounded up
    to a multiple of ``group_size`` so that each group lies inside one block.
    """
    if bits not in QUANT_BITS:
        raise ValueError(f"bits={bits}; allowed: {QUANT_BITS}")
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D (out_features, in_features), got {tuple(weight.shape)}")
    rows, cols = weight.shape
    if tuple(hessian.shape) != (cols, cols):
        raise ValueError(f"hessian has shape {tuple(hessian.shape)}; expected ({cols}, {cols})")
    if group_size < 0 or (group_size and cols % group_size):
        raise ValueError(f"group_size={group_size} must be 0 (per channel) or divide in_features K={cols}")
    w = weight.detach().to(torch.float32).clone()
    h = hessian.detach().to(w.device, torch.float32).clone()
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    h.diagonal().add_(damp * torch.diagonal(h).mean())
    hinv = _inverse_cholesky_upper(h)

    codes = torch.zeros(rows, cols, dtype=torch.uint8, device=w.device)
    num_groups = cols // group_size if group_size else 1
    scales = torch.zeros(rows, num_groups, device=w.device)
    zeros = torch.zeros(rows, num_groups, device=w.device)
    if group_size:
        block_size = max(block_size // group_size, 1) * group_size
    else:
        scale, zero = group_params(w, bits)
        scales[:, 0], zeros[:, 0] = scale, zero
    for start in range(0, cols, block_size):
        end = min(start + block_size, cols)
        block = w[:, start:end].clone()
        errors = torch.zeros_like(block)
        hinv_block = hinv[start:end, start:end]
        for i in range(end - start):
            column = start + i
            if group_size and column % group_size == 0:
                scale, zero = group_params(block[:, i:i + group_size], bits)
                scales[:, column // group_size], zeros[:, column // group_size] = scale, zero
            code = quantize_codes(block[:, i], scale, zero, bits)
            codes[:, column] = code.to(torch.uint8)
            error = (block[:, i] - (code - zero) * scale) / hinv_block[i, i]
            block[:, i:] -= error.unsqueeze(1) * hinv_block[i, i:].unsqueeze(0)
            errors[:, i] = error
        w[:, end:] -= errors @ hinv[start:end, end:]
    logger.debug("GPTQ %dx%d at %d bits (group %d)", rows, cols, bits, group_size)
    return QuantizedWeight(codes, scales, zeros, bits, group_size)
