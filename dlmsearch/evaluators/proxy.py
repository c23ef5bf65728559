"""The fast proxy: divergence from the dense model at fixed masked states, plus a trajectory term.

Score of a Plan (nats per token, lower is better, 0 for the dense model)::

    score = KL + trajectory_weight * trajectory

- ``KL``: mean over the masked positions of every masked state of KL(dense || compressed). The
  states are held-out windows masked at stratified mask ratios t (seeded). A state with mask ratio
  t sits at denoising progress 1 - t, so it is scored with the precision the Plan gives that
  timestep group (:func:`~dlmsearch.compress.force_timestep_group`).
- ``trajectory``: the step count only shows in generation. A few prompts (held-out text) are
  completed with the Plan's sampler settings by the compressed model and, once and cached, by the
  dense model at one token per step. Then
  ``trajectory = max(0, NELBO_dense(plan output) - NELBO_dense(dense output)) + 0.5 * (1 - agreement)``
  where NELBO_dense is the dense model's masked-diffusion NELBO of the completed sequence (seeded
  masks; a generation the dense model finds unlikely costs) and ``agreement`` is the share of
  generated tokens equal to the dense generation's. The ``max(0, .)`` keeps degenerate, repetitive
  text (which can score a lower NELBO) from earning a bonus.

``fidelity="low"`` scores the first quarter of the windows and one prompt; ``"full"`` all of them.
Dense reference outputs are cached on disk (:mod:`dlmsearch.evaluators.reference`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import torch

from dlmsearch.compress import CalibrationSet, force_timestep_group
from dlmsearch.data import load_split
from dlmsearch.evaluators.base import BaseEvaluator, QualityResult, check_fidelity
from dlmsearch.evaluators.plan_compressor import PlanCompressor
from dlmsearch.evaluators.reference import cache_key, cached_tensors, model_digest
from dlmsearch.models.adapters import DLMAdapter
from dlmsearch.models.diffusion import eval_windows, evaluate_nelbo, mask_tokens, stratified_mask_probs
from dlmsearch.models.sampler import generate
from dlmsearch.plan import Plan

logger = logging.getLogger("dlmsearch.evaluators.proxy")

AGREEMENT_WEIGHT = 0.5


@dataclass(frozen=True)
class ProxySettings:
    """What the proxy measures on; every field enters the reference cache key."""

    windows: int = 32  # held-out windows at full fidelity
    window_length: int = 128
    repeats: int = 4  # masked states per window, at stratified mask ratios
    low_fidelity_windows: int = 8
    trajectory_prompts: int = 4
    prompt_length: int = 32
    trajectory_weight: float = 1.0
    calibration_sequences: int = 32
    seed: int = 0
    split: str = "evaluation"


@dataclass(frozen=True)
class MaskedStates:
    """The fixed masked states: ids (S, L), masked positions (S, L), mask ratio (S,), window index (S,)."""

    ids: torch.Tensor
    masked: torch.Tensor
    mask_ratio: torch.Tensor
    window: torch.Tensor


def build_masked_states(windows: torch.Tensor, mask_token_id: int, repeats: int, seed: int) -> MaskedStates:
    """Each window masked ``repeats`` times; ratios form one stratified grid over all states."""
    n = windows.shape[0]
    ratios = stratified_mask_probs(n * repeats)
    ratios = ratios[torch.randperm(n * repeats, generator=torch.Generator().manual_seed(seed))]
    tiled = windows.repeat(repeats, 1)
    ids, masked = mask_tokens(tiled, ratios, mask_token_id, torch.Generator().manual_seed(seed + 1))
    return MaskedStates(ids, masked, ratios, torch.arange(n).repeat(repeats))


class ProxyEvaluator(BaseEvaluator):
    """Proxy quality of Plans for one dense model (see the module docstring for the formula)."""

    def __init__(self, adapter: DLMAdapter, settings: ProxySettings | None = None,
                 text_ids: torch.Tensor | None = None, calibration: CalibrationSet | None = None) -> None:
        """``text_ids`` (1-D) replaces the held-out split and ``calibration`` the calibration plays,
        e.g. for a user's own data or a model without a tokenizer."""
        self.dense = adapter
        self.settings = settings or ProxySettings()
        s = self.settings
        ids = text_ids if text_ids is not None else adapter.encode(load_split(s.split))
        length = min(s.window_length, adapter.shape.max_length)
        self.windows = eval_windows(ids, length, s.windows)
        self.states = build_masked_states(self.windows, adapter.mask_token_id, s.repeats, s.seed)
        self.model_digest = model_digest(adapter)
        self._reference = self._reference_logprobs()
        self.compressor = PlanCompressor(adapter, calibration, self.settings.calibration_sequences,
                                         self.settings.seed)

    # ------------------------------------------------------------ reference (cached)

    def _key(self, **extra: object) -> str:
        return cache_key(self.model_digest, {**dataclasses.asdict(self.settings), **extra})

    def _reference_logprobs(self) -> list[torch.Tensor]:
        def compute() -> dict[str, torch.Tensor]:
            rows = [self._logprobs(self.dense, i)[self.states.masked[i]] for i in range(len(self.states.ids))]
            return {f"state{i}": row for i, row in enumerate(rows)}

        cached = cached_tensors("reference_logprobs", self._key(kind="masked_states"), compute)
        return [cached[f"state{i}"] for i in range(len(self.states.ids))]

    @torch.no_grad()
    def _logprobs(self, adapter: DLMAdapter, state: int) -> torch.Tensor:
        logits = adapter.forward_logits(self.states.ids[state:state + 1].to(adapter.device))[0]
        return torch.log_softmax(logits.float(), dim=-1).cpu()

    def _prompts(self, count: int, gen_length: int) -> torch.Tensor:
        length = max(1, min(self.settings.prompt_length, self.dense.shape.max_length - gen_length))
        return self.windows[:count, :length]

    def _reference_generation(self, plan: Plan, prompts: torch.Tensor) -> tuple[torch.Tensor, float]:
        sampler = plan.sampler
        key = self._key(kind="trajectory", gen_length=sampler.gen_length, block_length=sampler.block_length,
                        prompts=prompts.shape[0])

        def compute() -> dict[str, torch.Tensor]:
            out = generate(self.dense, prompts, gen_length=sampler.gen_length, steps=sampler.gen_length,
                           block_length=sampler.block_length, seed=self.settings.seed)
            return {"tokens": out, "nelbo": torch.tensor([self._nelbo(out)], dtype=torch.float64)}

        cached = cached_tensors("reference_generations", key, compute)
        return cached["tokens"], float(cached["nelbo"][0])

    def _nelbo(self, sequences: torch.Tensor) -> float:
        return evaluate_nelbo(self.dense.forward_logits, sequences.cpu(), self.dense.mask_token_id,
                              seed=self.settings.seed)

    # ------------------------------------------------------------ evaluation

    def compressed(self, plan: Plan) -> DLMAdapter:
        """A compressed copy of the dense model (the dense model itself is never changed)."""
        return self.compressor.compressed(plan)

    @torch.no_grad()
    def masked_kl(self, model: DLMAdapter, plan: Plan, windows: int) -> float:
        """Mean KL(dense || compressed) over the masked positions of the states of the first ``windows``."""
        total, count = 0.0, 0
        for state in range(len(self.states.ids)):
            if int(self.states.window[state]) >= windows:
                continue
            group = plan.timestep_group(1.0 - float(self.states.mask_ratio[state]))
            with force_timestep_group(model.model, group):
                logq = self._logprobs(model, state)[self.states.masked[state]]
            logp = self._reference[state]
            total += float((logp.exp() * (logp - logq)).sum())
            count += logp.shape[0]
        return total / max(count, 1)

    def masked_kl_of(self, plan: Plan, fidelity: str = "low") -> float:
        """KL term alone of ``plan`` (no generation): what sensitivity profiles measure."""
        check_fidelity(fidelity)
        windows = self.settings.low_fidelity_windows if fidelity == "low" else self.settings.windows
        return self.masked_kl(self.compressed(plan), plan, windows)

    @torch.no_grad()
    def trajectory(self, model: DLMAdapter, plan: Plan, prompts: int) -> dict[str, float]:
        """The generation-based term and its parts."""
        sampler = plan.sampler
        prompt_ids = self._prompts(prompts, sampler.gen_length)
        reference, reference_nelbo = self._reference_generation(plan, prompt_ids)
        out = generate(model, prompt_ids, gen_length=sampler.gen_length, steps=sampler.steps,
                       block_length=sampler.block_length, remasking=sampler.remasking,
                       temperature=sampler.temperature, seed=self.settings.seed)
        start = prompt_ids.shape[1]
        agreement = float((out[:, start:] == reference[:, start:]).float().mean())
        gap = self._nelbo(out) - reference_nelbo
        value = max(0.0, gap) + AGREEMENT_WEIGHT * (1.0 - agreement)
        return {"trajectory": value, "trajectory_nelbo_gap": gap, "trajectory_agreement": agreement}

    def evaluate(self, plan: Plan, fidelity: str = "full") -> QualityResult:
        """Proxy score of ``plan`` (see the module docstring)."""
        check_fidelity(fidelity)
        s = self.settings
        plan.validate_for(self.dense)
        model = self.compressed(plan)
        low = fidelity == "low"
        kl = self.masked_kl(model, plan, s.low_fidelity_windows if low else s.windows)
        parts = self.trajectory(model, plan, 1 if low else s.trajectory_prompts)
        score = kl + s.trajectory_weight * parts["trajectory"]
        return QualityResult(score, {"kl": kl, **parts}, fidelity)
