"""Masked states shaped like the sampler's, and the log-probabilities a model gives their masked positions.

The proxy's KL term (:class:`~dlmsearch.evaluators.proxy_terms.MaskedKL`) compares the dense and the
compressed model on these fixed states; the dense side is computed once and cached on disk.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dlmsearch.compress import force_timestep_group
from dlmsearch.models.adapters import DLMAdapter
from dlmsearch.models.diffusion import stratified_mask_probs
from dlmsearch.plan import Plan


@dataclass(frozen=True)
class MaskedStates:
    """The fixed masked states of one sampler layout: ids (S, L), scored positions (S, L), denoising
    progress (S,), window index (S,) and the clean text (S, L).

    States are ordered by part (the low-fidelity part first), then by progress; ``chunks`` are the
    fixed ``[start, end)`` batches the model runs on; ``low_chunks`` and ``full_chunks`` are the
    indices of the chunks each fidelity scores.
    """

    ids: torch.Tensor
    masked: torch.Tensor
    progress: torch.Tensor
    window: torch.Tensor
    text: torch.Tensor
    chunks: tuple[tuple[int, int], ...] = ()
    low_chunks: tuple[int, ...] = ()
    full_chunks: tuple[int, ...] = ()


def mask_like_sampler(ids: torch.Tensor, progress: torch.Tensor, block_length: int, mask_token_id: int,
                      generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """States of ``ids`` (B, L) like those the semi-autoregressive sampler visits at ``progress`` (B,).

    With ``L / block_length`` blocks, progress p works on block ``b = floor(p * blocks)``: the blocks
    before it are clean text, the blocks after it all [MASK], and each of its own positions is
    masked with the share of the block not yet denoised, ``1 - (p * blocks - b)`` (at least one
    position). Returns the corrupted ids and the masked positions of the current block, the ones
    the sampler commits from.
    """
    rows, length = ids.shape
    if block_length <= 0 or length % block_length:
        raise ValueError(f"block_length={block_length}: must divide the state length {length}")
    blocks = length // block_length
    scaled = progress.double().clamp(0.0, 1.0) * blocks
    block = scaled.floor().clamp(max=blocks - 1)
    still_masked = (1.0 - (scaled - block)).float()
    first = (block.long() * block_length)[:, None]
    position = torch.arange(length)[None, :]
    in_block = (position >= first) & (position < first + block_length)
    draws = torch.rand(ids.shape, generator=generator)
    masked = in_block & (draws < still_masked[:, None])
    masked[torch.arange(rows), torch.where(in_block, draws, 2.0).argmin(dim=1)] = True
    hidden = masked | (position >= first + block_length)
    return torch.where(hidden, torch.full_like(ids, mask_token_id), ids), masked


def build_masked_states(windows: torch.Tensor, mask_token_id: int, repeats: int, seed: int,
                        low_windows: int, full_windows: int, block_length: int,
                        batch_size: int = 32) -> MaskedStates:
    """The masked states of both fidelities: each window masked ``repeats`` times at stratified progress.

    The low fidelity scores the first ``low_windows`` windows on a stratified grid of
    ``low_windows * repeats`` denoising progress values of their own. Where ``full_windows`` is
    larger, the full fidelity adds the remaining windows on another grid (the low-fidelity states
    are a subset of its states); where it is smaller, the full fidelity scores the first
    ``full_windows`` windows on states of their own. Either way each fidelity covers the whole
    denoising range evenly. Progress values are assigned to windows in a seeded random order and
    masked as the sampler would (:func:`mask_like_sampler`); the states of each part are then
    sorted by progress and cut into batches of ``batch_size`` (sorting keeps most batches inside
    one timestep group). ``windows`` holds at least ``max(low_windows, full_windows)`` rows.
    """
    low, full = max(0, low_windows), max(0, full_windows)
    if max(low, full) > windows.shape[0]:
        raise ValueError(f"windows: {windows.shape[0]} rows, but the fidelities need {max(low, full)}")
    extends = low <= full
    spans = ((0, low), (low, full)) if extends else ((0, low), (0, full))
    generator = torch.Generator().manual_seed(seed)
    parts = []
    for first, last in spans:
        count = (last - first) * repeats
        progress = stratified_mask_probs(count)[torch.randperm(count, generator=generator)]
        window = torch.arange(first, last).repeat(repeats)
        order = torch.sort(progress, stable=True).indices
        parts.append((progress[order], window[order]))
    progress = torch.cat([p for p, _ in parts])
    window = torch.cat([w for _, w in parts])
    ids, masked = mask_like_sampler(windows[window], progress, block_length, mask_token_id,
                                    torch.Generator().manual_seed(seed + 1))
    chunks: list[tuple[int, int]] = []
    part_chunks: list[tuple[int, ...]] = []
    start = 0
    for part_progress, _ in parts:
        end = start + len(part_progress)
        part = [(b, min(b + batch_size, end)) for b in range(start, end, batch_size)]
        part_chunks.append(tuple(range(len(chunks), len(chunks) + len(part))))
        chunks += part
        start = end
    full_chunks = part_chunks[0] + part_chunks[1] if extends else part_chunks[1]
    return MaskedStates(ids, masked, progress, window, windows[window], tuple(chunks), part_chunks[0], full_chunks)


@torch.no_grad()
def chunk_logprobs(adapter: DLMAdapter, states: MaskedStates, chunk: int,
                   rows_by_group: dict[int | None, torch.Tensor]) -> torch.Tensor:
    """Log-probabilities at the masked positions of ``chunk``, (positions, V): one batched forward per
    timestep group (``rows_by_group`` maps a group, or None for the step-free default, to the rows it
    serves)."""
    start, end = states.chunks[chunk]
    ids = states.ids[start:end]
    out: torch.Tensor | None = None
    for group, rows in rows_by_group.items():
        rows = rows[:len(ids)]
        with force_timestep_group(adapter.model, group):  # only this group's rows run at its precision
            logits = adapter.forward_logits(ids[rows].to(adapter.device))
        if out is None:
            out = torch.empty(*ids.shape, logits.shape[-1])
        out[rows] = torch.log_softmax(logits.float(), dim=-1).cpu()
    assert out is not None
    return out[states.masked[start:end]]


def rows_by_group(plan: Plan, progress: torch.Tensor) -> dict[int | None, torch.Tensor]:
    """Rows of a chunk at denoising ``progress`` per timestep group of ``plan``; groups with identical
    precision in every layer share one forward (keyed by the lowest such group)."""
    groups = torch.tensor([plan.timestep_group(float(p)) for p in progress])
    settings = [tuple((lp.weight_bits[g], lp.act_bits[g]) for lp in plan.layers.values())
                for g in range(plan.num_timestep_groups)]
    by_group: dict[int | None, torch.Tensor] = {}
    for g in sorted(set(groups.tolist())):
        first = settings.index(settings[g])
        rows = groups == g
        previous = by_group.get(first)
        by_group[first] = rows if previous is None else previous | rows
    return by_group
