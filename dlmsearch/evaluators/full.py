"""The full evaluator: runs the real sampler with the whole Plan on held-out text.

Three measurements, all against the dense model under the same seeds:

- ``infill_accuracy``: a centred span of each held-out window is masked and filled by the
  compressed model with :func:`~dlmsearch.models.sampler.infill`, using the Plan's step budget
  (``steps / gen_length`` passes per token) and its per-timestep precision; the share of
  characters restored exactly.
- ``gen_nelbo`` (generative quality, MDLM's "generative perplexity"): prompted generations with the
  Plan's sampler settings and unconditional ones (sampled at temperature 1), scored by the dense
  model's masked-diffusion NELBO (seeded masks). ``gen_diversity`` is the share of distinct 4-grams among the generated
  tokens; a generation less diverse than the dense model's is charged the shortfall, so that
  degenerate repetition (which the NELBO likes) cannot score well.
- ``agreement``: share of generated tokens equal to the dense model's generation at one token
  per step.

Score (lower is better, about 0 for the dense model)::

    score = (infill_dense - infill) + max(0, gen_nelbo - gen_nelbo_dense)
            + max(0, diversity_dense - diversity) + 0.5 * (1 - agreement)
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dlmsearch.compress import CalibrationSet
from dlmsearch.data import load_split
from dlmsearch.evaluators.base import BaseEvaluator, QualityResult, check_fidelity
from dlmsearch.evaluators.plan_compressor import PlanCompressor
from dlmsearch.models.adapters import DLMAdapter
from dlmsearch.models.diffusion import eval_windows, evaluate_nelbo
from dlmsearch.models.sampler import generate, infill
from dlmsearch.plan import Plan, SamplerSettings

logger = logging.getLogger("dlmsearch.evaluators.full")

NGRAM = 4
AGREEMENT_WEIGHT = 0.5


@dataclass(frozen=True)
class FullSettings:
    """What the full evaluator generates; ``low`` fidelity uses a quarter of each count."""

    infill_windows: int = 32
    window_length: int = 128
    infill_span: int = 32
    prompts: int = 8
    prompt_length: int = 32
    unconditional: int = 4
    calibration_sequences: int = 32
    seed: int = 0
    split: str = "evaluation"
    nelbo_repeats: int = 16  # masked states per generated row for its NELBO (4 left the NELBO gap noisy)


@dataclass(frozen=True)
class _Measured:
    tokens: torch.Tensor
    infill_accuracy: float
    nelbo: float
    diversity: float


def distinct_ngrams(tokens: torch.Tensor, n: int = NGRAM) -> float:
    """Share of distinct ``n``-grams among all ``n``-grams of the rows of ``tokens`` (B, L)."""
    grams = [tuple(row[i:i + n]) for row in tokens.tolist() for i in range(len(row) - n + 1)]
    return len(set(grams)) / max(len(grams), 1)


class FullEvaluator(BaseEvaluator):
    """Generation-based quality of Plans (see the module docstring)."""

    def __init__(self, adapter: DLMAdapter, settings: FullSettings | None = None,
                 text_ids: torch.Tensor | None = None, calibration: CalibrationSet | None = None,
                 prompts: Sequence[str] = ()) -> None:
        """``text_ids`` (1-D, e.g. a user's text files encoded) replaces the held-out plays for
        infill and prompts; ``prompts`` (texts) replace the prompts taken from it."""
        self.dense = adapter
        self.user_prompts = [adapter.encode(p) for p in prompts]
        self.settings = settings or FullSettings()
        s = self.settings
        ids = text_ids if text_ids is not None else adapter.encode(load_split(s.split))
        length = min(s.window_length, adapter.shape.max_length)
        self.windows = eval_windows(ids, length, max(s.infill_windows, s.prompts))
        self.compressor = PlanCompressor(adapter, calibration, self.settings.calibration_sequences,
                                         self.settings.seed)
        self._dense_cache: dict[tuple[int, int, str], _Measured] = {}

    def _counts(self, fidelity: str) -> tuple[int, int, int]:
        s = self.settings
        if fidelity == "low":
            return max(1, s.infill_windows // 4), max(1, s.prompts // 4), max(1, s.unconditional // 4)
        return s.infill_windows, s.prompts, s.unconditional

    def compressed(self, plan: Plan) -> DLMAdapter:
        """A compressed copy of the dense model (the dense model itself is never changed)."""
        return self.compressor.compressed(plan)

    @torch.no_grad()
    def infill_accuracy(self, model: DLMAdapter, passes_per_token: float, block_length: int, windows: int) -> float:
        """Share of the centred span's tokens restored exactly, filled in semi-autoregressive blocks of
        ``block_length`` with ``passes_per_token`` passes per token."""
        batch = self.windows[:windows]
        span = min(self.settings.infill_span, batch.shape[1] - 2)
        start = (batch.shape[1] - span) // 2
        masked = torch.zeros_like(batch, dtype=torch.bool)
        masked[:, start:start + span] = True
        blocks = -(-span // block_length)
        steps = blocks * max(1, round(span * passes_per_token / blocks))
        filled = infill(model, batch, masked, steps, block_length=block_length).cpu()
        return float((filled == batch)[masked].float().mean())

    @torch.no_grad()
    def generations(self, model: DLMAdapter, sampler: SamplerSettings, prompts: int,
                    unconditional: int) -> torch.Tensor:
        """Generated tokens (prompted rows, then unconditional rows), (rows, gen_length).

        Prompted rows use the sampler as the Plan sets it; unconditional rows sample at
        temperature 1 (greedy decoding from an empty prompt would give identical rows).
        """
        seed, settings = self.settings.seed, dataclasses.asdict(sampler)
        if self.user_prompts:  # prompts of different lengths: one generation each
            prompted = torch.cat([generate(model, p, seed=seed, **settings)[:, p.numel():]
                                  for p in self.user_prompts[:prompts]])
        else:
            length = max(1, min(self.settings.prompt_length, model.shape.max_length - sampler.gen_length))
            prompted = generate(model, self.windows[:prompts, :length], seed=seed, **settings)[:, length:]
        sampled = dataclasses.asdict(dataclasses.replace(sampler, temperature=1.0))
        free = generate(model, torch.empty(unconditional, 0, dtype=torch.long), seed=seed, **sampled)
        return torch.cat([prompted.cpu(), free.cpu()])

    def _measure(self, model: DLMAdapter, sampler: SamplerSettings, fidelity: str) -> _Measured:
        windows, prompts, free = self._counts(fidelity)
        tokens = self.generations(model, sampler, prompts, free)
        nelbo = evaluate_nelbo(self.dense.forward_logits, tokens, self.dense.mask_token_id, seed=self.settings.seed,
                               repeats=self.settings.nelbo_repeats, batch_size=64)
        infill_acc = self.infill_accuracy(model, sampler.steps / sampler.gen_length, sampler.block_length, windows)
        return _Measured(tokens, infill_acc, nelbo, distinct_ngrams(tokens))

    def _dense_reference(self, sampler: SamplerSettings, fidelity: str) -> _Measured:
        """The dense model at one token per step, for this generation shape (computed once)."""
        key = (sampler.gen_length, sampler.block_length, fidelity)
        if key not in self._dense_cache:
            best = SamplerSettings(steps=sampler.gen_length, gen_length=sampler.gen_length,
                                   block_length=sampler.block_length)
            self._dense_cache[key] = self._measure(self.dense, best, fidelity)
        return self._dense_cache[key]

    def evaluate(self, plan: Plan, fidelity: str = "full") -> QualityResult:
        """Full quality of ``plan``: infill, generative NELBO with a diversity guard, agreement."""
        check_fidelity(fidelity)
        plan.validate_for(self.dense)
        dense = self._dense_reference(plan.sampler, fidelity)
        got = self._measure(self.compressed(plan), plan.sampler, fidelity)
        agreement = float((got.tokens == dense.tokens).float().mean())
        score = ((dense.infill_accuracy - got.infill_accuracy) + max(0.0, got.nelbo - dense.nelbo)
                 + max(0.0, dense.diversity - got.diversity) + AGREEMENT_WEIGHT * (1.0 - agreement))
        metrics = {"infill_accuracy": got.infill_accuracy, "gen_nelbo": got.nelbo, "gen_diversity": got.diversity,
                   "agreement": agreement, "dense_infill_accuracy": dense.infill_accuracy,
                   "dense_gen_nelbo": dense.nelbo, "dense_gen_diversity": dense.diversity}
        return QualityResult(score, metrics, fidelity)
