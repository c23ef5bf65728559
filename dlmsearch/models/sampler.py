"""LLaDA's denoising sampler, with a step context that compressed layers can read.

Generation starts from ``gen_length`` [MASK] tokens after the prompt. The answer is split into
``gen_length // block_length`` blocks filled left to right (semi-autoregressive); each block gets
``steps // num_blocks`` forward passes, and each pass commits the predictions with the highest
confidence (``low_confidence`` remasking: the least confident stay masked) or random ones
(``random``), so that every block is complete after its last step.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from dlmsearch.models.adapters import DLMAdapter
from dlmsearch.models.sampler_rules import SamplerSettingsError, check_sampler_settings


@dataclass(frozen=True)
class DenoisingStep:
    """Where the sampler is: step ``index`` of ``total`` (0-based), over all blocks."""

    index: int
    total: int

    @property
    def progress(self) -> float:
        """Fraction of the denoising steps already taken, in [0, 1)."""
        return self.index / self.total


_CURRENT_STEP: contextvars.ContextVar[DenoisingStep | None] = contextvars.ContextVar(
    "dlmsearch_denoising_step", default=None)


def current_step() -> DenoisingStep | None:
    """The step the sampler is on, or None outside generation (e.g. in a plain forward pass)."""
    return _CURRENT_STEP.get()


@contextlib.contextmanager
def denoising_step(step: DenoisingStep | None) -> Iterator[None]:
    """Make ``step`` the current step for the code inside the block (evaluators use it too)."""
    token = _CURRENT_STEP.set(step)
    try:
        yield
    finally:
        _CURRENT_STEP.reset(token)


def tokens_per_step(block_length: int, steps_per_block: int) -> torch.Tensor:
    """How many tokens each step of a block commits: an even split, the remainder first."""
    base, remainder = divmod(block_length, steps_per_block)
    counts = torch.full((steps_per_block,), base, dtype=torch.long)
    counts[:remainder] += 1
    return counts


def _gumbel_argmax(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """Sample from softmax(logits / temperature) with the Gumbel-max trick (argmax at 0)."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    uniform = torch.rand(logits.shape, generator=generator, dtype=torch.float64, device=logits.device)
    gumbel = -torch.log(-torch.log(uniform.clamp_min(1e-20)))
    return (logits.double() / temperature + gumbel).argmax(dim=-1)


@torch.no_grad()
def generate(adapter: DLMAdapter, prompt_ids: torch.Tensor, gen_length: int = 64, steps: int = 64,
             block_length: int = 64, remasking: str = "low_confidence", temperature: float = 0.0,
             seed: int = 0) -> torch.Tensor:
    """Generate ``gen_length`` tokens after ``prompt_ids`` (P,) or (B, P); returns (B, P + gen_length).

    Deterministic for a given ``seed``. While it runs, :func:`current_step` tells compressed
    layers which denoising step they serve. Raises :class:`SamplerSettingsError` when
    ``gen_length % block_length != 0`` or ``steps`` is not a multiple of the number of blocks.
    """
    problems = check_sampler_settings(gen_length, steps, block_length, remasking)
    if problems:
        raise SamplerSettingsError("; ".join(f"{key}={value!r}: must be {allowed}"
                                             for key, value, allowed in problems))
    prompt = prompt_ids.unsqueeze(0) if prompt_ids.dim() == 1 else prompt_ids
    batch, prompt_len = prompt.shape
    device = adapter.device
    mask_id = adapter.mask_token_id
    generator = torch.Generator(device=device).manual_seed(seed)
    x = torch.full((batch, prompt_len + gen_length), mask_id, dtype=torch.long, device=device)
    x[:, :prompt_len] = prompt.to(device)
    num_blocks = gen_length // block_length
    steps_per_block = steps // num_blocks
    commit_counts = tokens_per_step(block_length, steps_per_block)
    positions = torch.arange(x.shape[1], device=device)
    for block in range(num_blocks):
        block_end = prompt_len + (block + 1) * block_length
        for inner in range(steps_per_block):
            masked = x == mask_id
            with denoising_step(DenoisingStep(block * steps_per_block + inner, steps)):
                logits = adapter.forward_logits(x)
            logits[..., mask_id] = float("-inf")  # never predict the mask token itself
            predicted = _gumbel_argmax(logits, temperature, generator)
            if remasking == "low_confidence":
                probs = torch.softmax(logits.float(), dim=-1)
                confidence = probs.gather(-1, predicted.unsqueeze(-1)).squeeze(-1)
            else:
                confidence = torch.rand(x.shape, generator=generator, device=device)
            confidence = confidence.masked_fill(~masked | (positions >= block_end), float("-inf"))
            k = int(commit_counts[inner])
            chosen = confidence.topk(k, dim=-1).indices
            commit = torch.zeros_like(masked).scatter_(1, chosen, True) & confidence.isfinite()
            x = torch.where(commit, predicted, x)
    return x


@torch.no_grad()
def infill(adapter: DLMAdapter, ids: torch.Tensor, masked: torch.Tensor, steps: int,
           block_length: int | None = None, on_step: Callable[[], object] | None = None) -> torch.Tensor:
    """Fill the ``masked`` positions of ``ids`` (both (B, L)) in ``steps`` denoising passes.

    Every masked position starts as [MASK]; every pass predicts them (greedy, the mask token
    excluded) and commits the most confident predictions (LLaDA's ``low_confidence`` remasking).
    With ``block_length`` the masked positions of each row are filled left to right in blocks of
    that many (semi-autoregressive, as :func:`generate` does; ``steps`` must then be a multiple of
    the number of blocks); without it the whole span is one block. A row with ``n`` masked
    positions in a block commits ``tokens_per_step(n, steps_per_block)`` of them per pass, so it is
    complete after the block's last pass. Pass ``k`` runs inside
    ``denoising_step(DenoisingStep(k, steps))``. Returns the filled ids (B, L) on the model's
    device; unmasked positions are unchanged.
    """
    if ids.dim() != 2 or ids.shape != masked.shape:
        raise ValueError(f"ids {tuple(ids.shape)} and masked {tuple(masked.shape)} must be one (B, L) shape")
    device = adapter.device
    pending = masked.to(device=device, dtype=torch.bool).clone()
    rank = pending.long().cumsum(dim=1) - 1  # order of each masked position within its row
    width = block_length or max(1, int(pending.sum(dim=1).max()))
    num_blocks = max(1, -(-int(pending.sum(dim=1).max()) // width))
    if steps < 1 or steps % num_blocks:
        raise ValueError(f"steps={steps}: must be a positive multiple of the number of blocks ({num_blocks})")
    steps_per_block = steps // num_blocks
    x = ids.to(device).masked_fill(pending, adapter.mask_token_id)
    for block in range(num_blocks):
        in_block = pending & (rank >= block * width) & (rank < (block + 1) * width)
        counts = torch.stack([tokens_per_step(int(n), steps_per_block) for n in in_block.sum(dim=1).tolist()])
        for inner in range(steps_per_block):
            step = DenoisingStep(block * steps_per_block + inner, steps)
            x, committed = _commit_most_confident(adapter, x, in_block, counts[:, inner].to(device), step)
            in_block &= ~committed
            if on_step is not None:
                on_step()
    return x


def _commit_most_confident(adapter: DLMAdapter, x: torch.Tensor, eligible: torch.Tensor, k: torch.Tensor,
                           step: DenoisingStep) -> tuple[torch.Tensor, torch.Tensor]:
    """One greedy pass committing, in row b, the ``k[b]`` most confident ``eligible`` positions."""
    k_max = int(k.max())
    if k_max == 0:
        return x, torch.zeros_like(eligible)
    with denoising_step(step):
        logits = adapter.forward_logits(x)
    logits[..., adapter.mask_token_id] = float("-inf")  # never predict the mask token itself
    confidence, predicted = torch.softmax(logits.float(), dim=-1).max(dim=-1)
    confidence = confidence.masked_fill(~eligible, float("-inf"))
    chosen = confidence.topk(k_max, dim=-1).indices
    wanted = torch.arange(k_max, device=x.device)[None, :] < k[:, None]  # row b keeps its k[b]
    commit = torch.zeros_like(eligible).scatter_(1, chosen, wanted) & eligible
    return torch.where(commit, predicted, x), commit
