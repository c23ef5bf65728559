"""Span infilling with the real sampler: the task on which both evaluators measure agreement.

Short spans (about a word) of held-out windows are masked at seeded places and filled by a model
with :func:`~dlmsearch.models.sampler.infill` at a Plan's step budget (``steps / gen_length``
passes per token), in blocks of the Plan's block length. Filling is greedy, so the only randomness
is where the spans sit: two models filling the same task differ only by what they predict.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dlmsearch.models.adapters import DLMAdapter
from dlmsearch.models.sampler import infill


def span_masks(shape: torch.Size | tuple[int, int], spans: int, span: int, seed: int) -> torch.Tensor:
    """(B, L) masks with ``spans`` non-overlapping spans of ``span`` positions per row at seeded places.

    Each row is cut into ``spans`` equal segments (the first and last position excluded) and one
    span is placed at a random offset inside each segment.
    """
    rows, length = shape
    segment = (length - 2) // max(spans, 1)
    if spans < 1 or span < 1 or span > segment:
        raise ValueError(f"infill_spans={spans} x infill_span={span}: must be >= 1 and fit a window of "
                         f"{length} tokens ({segment} positions per span at most)")
    generator = torch.Generator().manual_seed(seed)
    offsets = torch.randint(0, segment - span + 1, (rows, spans), generator=generator)
    starts = 1 + torch.arange(spans) * segment + offsets  # (rows, spans)
    positions = (starts[..., None] + torch.arange(span)).reshape(rows, spans * span)
    return torch.zeros(rows, length, dtype=torch.bool).scatter_(1, positions, True)


@dataclass(frozen=True)
class InfillTask:
    """Windows (B, L) and the positions (B, L) to fill; every row has the same number of them."""

    windows: torch.Tensor
    masked: torch.Tensor

    @classmethod
    def with_spans(cls, windows: torch.Tensor, spans: int, span: int, seed: int) -> InfillTask:
        """The task of filling ``spans`` spans of ``span`` tokens per window (see :func:`span_masks`)."""
        return cls(windows, span_masks(windows.shape, spans, span, seed))

    @property
    def per_window(self) -> int:
        """Masked positions per window."""
        return int(self.masked[0].sum())

    def truth(self, windows: int) -> torch.Tensor:
        """The original tokens at the masked positions of the first ``windows`` windows, (windows, per window)."""
        return self.windows[:windows][self.masked[:windows]].view(windows, self.per_window)

    @torch.no_grad()
    def fill(self, model: DLMAdapter, passes_per_token: float, block_length: int, windows: int) -> torch.Tensor:
        """The tokens ``model`` restores at the masked positions of the first ``windows`` windows,
        (windows, per window): filled in blocks of ``block_length`` masked positions with
        ``passes_per_token`` passes per token (at least one pass per block)."""
        batch, masked = self.windows[:windows], self.masked[:windows]
        count = self.per_window
        blocks = -(-count // block_length)
        steps = blocks * max(1, round(count * passes_per_token / blocks))
        filled = infill(model, batch, masked, steps, block_length=block_length).cpu()
        return filled[masked].view(windows, count)
