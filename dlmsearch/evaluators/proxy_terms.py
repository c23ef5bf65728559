"""The summands of the proxy score: each a small object that measures its parts and says its weight.

The protocol (after optuna's ``BaseSampler``: the docstrings are the contract):

- :meth:`ProxyTerm.measure` takes the proxy (its dense references, cached on disk, and settings),
  the compressed model and the Plan, and returns the term's measured parts: floats named as they
  appear in :attr:`QualityResult.metrics <dlmsearch.evaluators.base.QualityResult.metrics>`. It never
  changes the dense model, and draws only with the seeds of the proxy's settings, so a term is
  deterministic.
- :meth:`ProxyTerm.value` turns those parts into the summand before its weight: >= 0, and 0 for the
  dense Plan.
- :attr:`ProxyTerm.weight` names the :class:`~dlmsearch.evaluators.proxy.ProxySettings` field that
  holds the term's weight.

:func:`proxy_terms` lists the terms of a fidelity; the proxy's score is
``sum(settings.<term.weight> * term.value(term.measure(...)))`` (the formula, with its sources, is in
:mod:`dlmsearch.evaluators.proxy`).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch

from dlmsearch.evaluators.base import check_fidelity
from dlmsearch.evaluators.full import AGREEMENT_WEIGHT
from dlmsearch.evaluators.masked_states import chunk_logprobs, rows_by_group
from dlmsearch.evaluators.reference import cached_tensors
from dlmsearch.models.adapters import DLMAdapter
from dlmsearch.models.sampler import generate
from dlmsearch.plan import Plan, SamplerSettings

if TYPE_CHECKING:
    from dlmsearch.evaluators.proxy import ProxyEvaluator, ProxySettings

#: Seed offset of the free rows (the masks of their NELBO and the infill spans have their own).
FREE_SEED_OFFSET = 1


class ProxyTerm(ABC):
    """One summand of the proxy score (see the module docstring for the protocol)."""

    #: The :class:`~dlmsearch.evaluators.proxy.ProxySettings` field holding this term's weight.
    weight: str

    @abstractmethod
    def measure(self, proxy: ProxyEvaluator, model: DLMAdapter, plan: Plan) -> dict[str, float]:
        """The term's parts for ``plan`` compressed into ``model`` (diagnostics included)."""

    @abstractmethod
    def value(self, parts: Mapping[str, float]) -> float:
        """The summand, before its weight, from the parts :meth:`measure` returned."""


class MaskedKL(ProxyTerm):
    """KL(dense || compressed) at the masked positions of the fidelity's sampler-shaped states."""

    weight = "kl_weight"

    def __init__(self, fidelity: str) -> None:
        self.fidelity = check_fidelity(fidelity)

    @torch.no_grad()
    def measure(self, proxy: ProxyEvaluator, model: DLMAdapter, plan: Plan) -> dict[str, float]:
        """``kl``: mean over masked positions; ``kl_state``: mean over states of each state's mean
        (every denoising stage counts equally, as every sampler step does); ``kl_early`` /
        ``kl_late``: mean over the masked positions of the states before / from half-way through
        denoising; ``rkl``: KL(compressed || dense) and ``ce_gap``: the dense model's cross-entropy of
        the compressed model's predictions minus its own entropy, per masked position;
        ``nelbo_gap``: the compressed model's negative log-likelihood of the held-out characters at
        the masked positions minus the dense model's, per position. All but ``kl`` are diagnostics."""
        states, reference = proxy.masked_states(plan.sampler)
        chunks = states.low_chunks if self.fidelity == "low" else states.full_chunks
        totals, counts_by_half, state_means = [0.0, 0.0], [0, 0], []
        other = {"rkl": 0.0, "ce_gap": 0.0, "nelbo_gap": 0.0}
        for c in chunks:
            start, end = states.chunks[c]
            logq = chunk_logprobs(model, states, c, rows_by_group(plan, states.progress[start:end]))
            logp = reference[c]
            p, q = logp.exp(), logq.exp()
            per_position = (p * (logp - logq)).sum(dim=-1).double()
            other["rkl"] += float((q * (logq - logp)).sum(dim=-1).double().sum())
            other["ce_gap"] += float(((p - q) * logp).sum(dim=-1).double().sum())
            masked = states.masked[start:end]
            truth = states.text[start:end][masked][:, None]
            other["nelbo_gap"] += float((logp.gather(1, truth) - logq.gather(1, truth)).double().sum())
            sums = torch.zeros(end - start, dtype=torch.float64).index_add_(0, masked.nonzero()[:, 0], per_position)
            counts = masked.sum(dim=1)
            late = states.progress[start:end] >= 0.5
            for half, rows in enumerate((~late, late)):
                totals[half] += float(sums[rows].sum())
                counts_by_half[half] += int(counts[rows].sum())
            state_means += (sums[counts > 0] / counts[counts > 0]).tolist()
        positions = max(sum(counts_by_half), 1)
        return {"kl": sum(totals) / positions, **{name: value / positions for name, value in other.items()},
                "kl_state": sum(state_means) / max(len(state_means), 1),
                "kl_early": totals[0] / max(counts_by_half[0], 1), "kl_late": totals[1] / max(counts_by_half[1], 1)}

    def value(self, parts: Mapping[str, float]) -> float:
        """The KL itself."""
        return parts["kl"]


class FreeGap(ProxyTerm):
    """What compression does to free text: the dense model's NELBO of the compressed model's free rows
    (temperature 1) minus that of the dense model's own free rows under the same seed and steps.

    At full fidelity the rows run the Plan's sampler, at most ``free_max_steps`` steps, and are
    compared with the dense model at those steps (the step count's cost is the step terms'); at low
    fidelity they run ``low_fidelity_free_steps`` steps whatever the Plan's (:meth:`sampler`)."""

    def __init__(self, settings: ProxySettings, fidelity: str) -> None:
        self.low = check_fidelity(fidelity) == "low"
        self.rows = settings.low_fidelity_free_rows if self.low else settings.unconditional_rows
        self.fixed_steps = settings.low_fidelity_free_steps if self.low else 0
        self.max_steps = 0 if self.low else settings.free_max_steps
        self.weight = "low_fidelity_free_weight" if self.low else "free_gap_weight"

    def sampler(self, sampler: SamplerSettings) -> SamplerSettings:
        """``sampler`` with the free rows' steps: the fixed step count where there is one, else the Plan's
        own capped at ``max_steps`` where there is a cap; always at most one token per step and a
        multiple of the number of blocks."""
        steps = self.fixed_steps if self.fixed_steps > 0 else sampler.steps
        if self.max_steps > 0:
            steps = min(steps, self.max_steps)
        if steps == sampler.steps:
            return sampler
        blocks = sampler.gen_length // sampler.block_length
        steps = max(blocks, min(steps, sampler.gen_length) // blocks * blocks)
        return dataclasses.replace(sampler, steps=steps)

    @torch.no_grad()
    def measure(self, proxy: ProxyEvaluator, model: DLMAdapter, plan: Plan) -> dict[str, float]:
        """``free_gap`` and ``free_steps``; nothing without rows."""
        if self.rows <= 0:
            return {}
        sampled = dataclasses.replace(self.sampler(plan.sampler), temperature=1.0)
        seed = proxy.settings.seed + FREE_SEED_OFFSET
        out = generate(model, torch.empty(self.rows, 0, dtype=torch.long), seed=seed, **dataclasses.asdict(sampled))
        dense = proxy.dense_generation(sampled, torch.empty(self.rows, 0, dtype=torch.long), seed)[1]
        return {"free_gap": proxy.nelbo(out) - dense, "free_steps": float(sampled.steps)}

    def value(self, parts: Mapping[str, float]) -> float:
        """The gap where it is a loss (a likelier-than-dense draw is noise, not a gain)."""
        return max(0.0, parts.get("free_gap", 0.0))


class _DenseStepPart(ProxyTerm):
    """A Plan-independent part of what the Plan's step count costs the dense model itself
    (:meth:`ProxyEvaluator.step_term`, measured once per sampler setting and cached)."""

    def measure(self, proxy: ProxyEvaluator, model: DLMAdapter, plan: Plan) -> dict[str, float]:
        """Every part of the dense step measurement (shared by the step terms)."""
        return proxy.step_term(plan.sampler)


class DenseStepGap(_DenseStepPart):
    """The NELBO gap of the dense model's free rows at the Plan's steps vs one token per step."""

    weight = "dense_step_weight"

    def value(self, parts: Mapping[str, float]) -> float:
        """The gap where it is a loss."""
        return max(0.0, parts["steps_unconditional_gap"])


class StepDiversity(_DenseStepPart):
    """The share of distinct 4-grams the dense model's greedy prompted rows lose at the Plan's steps
    (few steps for many tokens collapse into runs of spaces, which no NELBO term sees)."""

    weight = "step_diversity_weight"

    def value(self, parts: Mapping[str, float]) -> float:
        """The diversity shortfall (already >= 0)."""
        return parts["steps_prompted_diversity_gap"]


class StepCost(_DenseStepPart):
    """The full evaluator's step part (:meth:`FullEvaluator.step_cost`) on the proxy's own rows and
    seeds: in the full evaluator's units."""

    weight = "step_cost_weight"

    def value(self, parts: Mapping[str, float]) -> float:
        """The step cost."""
        return parts["step_cost"]


class InfillAgreement(ProxyTerm):
    """Share of the characters the compressed model fills in the spans of ``windows`` infill windows
    that equal the dense model's fill with the same passes per token and block length (greedy, so
    without sampling noise; the dense fill is cached on disk)."""

    weight = "infill_weight"

    def __init__(self, windows: int) -> None:
        self.windows = windows

    @torch.no_grad()
    def measure(self, proxy: ProxyEvaluator, model: DLMAdapter, plan: Plan) -> dict[str, float]:
        """``infill_agreement``; nothing without windows."""
        if self.windows <= 0:
            return {}
        sampler = plan.sampler
        passes = sampler.steps / sampler.gen_length
        key = proxy.reference_key(kind="infill", infill_count=self.windows, block_length=sampler.block_length,
                                  passes=passes)

        def compute() -> dict[str, torch.Tensor]:
            return {"filled": proxy.infill_task.fill(proxy.dense, passes, sampler.block_length, self.windows)}

        reference = cached_tensors("reference_infills", key, compute)["filled"]
        filled = proxy.infill_task.fill(model, passes, sampler.block_length, self.windows)
        return {"infill_agreement": float((filled == reference).float().mean())}

    def value(self, parts: Mapping[str, float]) -> float:
        """The disagreement."""
        return 1.0 - parts.get("infill_agreement", 1.0)


class Trajectory(ProxyTerm):
    """``prompts`` held-out prompts completed by the compressed model with the Plan's sampler against
    the dense model's completion at one token per step (cached): the NELBO gap where it is a loss
    plus ``AGREEMENT_WEIGHT`` times the share of generated tokens that differ."""

    weight = "trajectory_weight"

    def __init__(self, prompts: int) -> None:
        self.prompts = prompts

    @torch.no_grad()
    def measure(self, proxy: ProxyEvaluator, model: DLMAdapter, plan: Plan) -> dict[str, float]:
        """``trajectory`` (0 without prompts), ``trajectory_nelbo_gap`` and ``trajectory_agreement``."""
        if self.prompts <= 0:
            return {"trajectory": 0.0}
        sampler = plan.sampler
        prompt_ids = proxy.prompts(self.prompts, sampler.gen_length)
        best = dataclasses.replace(sampler, steps=sampler.gen_length, remasking="low_confidence", temperature=0.0)
        reference, reference_nelbo = proxy.dense_generation(best, prompt_ids)
        out = generate(model, prompt_ids, seed=proxy.settings.seed, **dataclasses.asdict(sampler))
        start = prompt_ids.shape[1]
        agreement = float((out[:, start:] == reference[:, start:]).float().mean())
        gap = proxy.nelbo(out) - reference_nelbo
        return {"trajectory": max(0.0, gap) + AGREEMENT_WEIGHT * (1.0 - agreement),
                "trajectory_nelbo_gap": gap, "trajectory_agreement": agreement}

    def value(self, parts: Mapping[str, float]) -> float:
        """The trajectory term."""
        return parts["trajectory"]


def proxy_terms(settings: ProxySettings, fidelity: str) -> tuple[ProxyTerm, ...]:
    """The terms the proxy sums at ``fidelity`` ("low" or "full")."""
    low = check_fidelity(fidelity) == "low"
    return (MaskedKL(fidelity),
            Trajectory(settings.low_fidelity_prompts if low else settings.trajectory_prompts),
            FreeGap(settings, fidelity), DenseStepGap(), StepDiversity(), StepCost(),
            InfillAgreement(settings.low_fidelity_infill_windows if low else settings.infill_windows))
