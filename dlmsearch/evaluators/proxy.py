"""The fast proxy: divergence from the dense model at fixed masked states, plus generation terms.

The score of a Plan is a weighted sum of small terms (:mod:`dlmsearch.evaluators.proxy_terms`), in nats
per token and shares of characters, lower is better, exactly 0 for the dense Plan::

    score = kl_weight * KL                                      # MaskedKL
            + free_gap_weight * max(0, free_gap)                # FreeGap
            + dense_step_weight * max(0, steps_unconditional_gap)   # DenseStepGap
            + step_diversity_weight * steps_prompted_diversity_gap  # StepDiversity
            + step_cost_weight * step_cost                      # StepCost
            + infill_weight * (1 - infill_agreement)            # InfillAgreement (infill_windows > 0)
            + trajectory_weight * trajectory                    # Trajectory (trajectory_prompts > 0)

- ``KL``: KL(dense || compressed) over the masked positions of held-out windows masked the way the
  semi-autoregressive sampler of LLaDA (Nie et al. 2025, arXiv 2502.09992) leaves them at stratified
  denoising progress (:func:`~dlmsearch.evaluators.masked_states.mask_like_sampler`), each state at the
  precision the Plan gives its timestep group. The KL to the full-precision model tracks answer flips
  where accuracy does not (Dutta et al. 2024, arXiv 2407.09141); masked states drawn across timesteps
  with fixed seeds keep LLaDA's Monte-Carlo estimate steady.
- ``free_gap``: the dense model's masked-diffusion NELBO (MDLM, Sahoo et al. 2024, arXiv 2406.07524)
  of ``unconditional_rows`` free generations of the compressed model with the Plan's sampler (at most
  ``free_max_steps`` steps), minus that of the dense model's own free generations with the same steps
  and seed: what compression does to generated text, which perplexity-like terms miss for pruning
  (LLM-KICK, arXiv 2310.01382). The cap bounds the proxy's cost (these rows are most of it); what more
  steps cost is the step terms' business, and the cap ranked as well as none (bench/RESULTS.md).
- ``steps_unconditional_gap``, ``steps_prompted_diversity_gap``, ``step_cost``: what the Plan's step
  count costs the dense model itself (its free rows' NELBO, its greedy prompted rows' share of
  distinct 4-grams, and the full evaluator's step part,
  :meth:`~dlmsearch.evaluators.full.FullEvaluator.step_cost`), each at the Plan's steps against one
  token per step; Plan-independent, so measured once per sampler setting and cached. Step damage and
  compression damage are taken as additive, as quantization error adds over steps in image diffusion
  (TMPDiff, arXiv 2603.14062).
- ``infill_agreement`` and ``trajectory`` (off by default): fills of short held-out spans and
  prompted completions compared with the dense model's.

``fidelity="low"`` sums the same terms on ``low_fidelity_windows`` windows, with ``low_fidelity_free_rows``
free rows at ``low_fidelity_free_steps`` steps whatever the Plan's, weighted by
``low_fidelity_free_weight`` instead of ``free_gap_weight``. Every random draw has a seed offset of its
own, and the full evaluator uses other seeds and other windows, so the two share no noise; dense
references are cached on disk (:mod:`dlmsearch.evaluators.reference`). How the weights were chosen
(on which Plans, reported on which others) and what each term adds to the ranking: bench/RESULTS.md,
"Evaluators".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from dlmsearch.compress import CalibrationSet
from dlmsearch.data import load_split
from dlmsearch.evaluators.base import BaseEvaluator, QualityResult, check_fidelity
from dlmsearch.evaluators.full import FullEvaluator, FullSettings, collapsed_rows, distinct_ngrams
from dlmsearch.evaluators.infill_task import InfillTask
from dlmsearch.evaluators.masked_states import MaskedStates, build_masked_states, chunk_logprobs
from dlmsearch.evaluators.plan_compressor import PlanCompressor
from dlmsearch.evaluators.proxy_terms import MaskedKL, ProxyTerm, proxy_terms
from dlmsearch.evaluators.reference import cache_key, cached_tensors, model_digest
from dlmsearch.models.adapters import DLMAdapter
from dlmsearch.models.diffusion import eval_windows, evaluate_nelbo
from dlmsearch.models.sampler import generate
from dlmsearch.plan import Plan, SamplerSettings

#: Seed offsets of the proxy's draws (the free rows': :data:`~dlmsearch.evaluators.proxy_terms.FREE_SEED_OFFSET`);
#: the full evaluator draws with offset 100, so no two measurements share noise.
NELBO_SEED_OFFSET = 2
INFILL_SEED_OFFSET = 3
#: Enters every reference cache key: raise it when a change alters what a cached entry holds.
REFERENCE_VERSION = 7
#: The dense step cost is measured like the full evaluator's step part, with seeds ``seed + 150`` on
#: (the full evaluator's own start at ``seed + 100``) and on windows a quarter of the way between the
#: proxy's: it shares no text and no draws with either.
STEP_COST_SEED_OFFSET = 50
STEP_COST_WINDOW_PHASE = 0.25


@dataclass(frozen=True)
class ProxySettings:
    """What the proxy measures on, and the weights of its terms.

    Every field but the weights (``*_weight``, which change no measurement) and ``free_max_steps`` (the
    capped rows' dense generations are keyed by their own sampler) enters the reference cache key.
    """

    windows: int = 8  # held-out windows (of the Plan's generation length) of the masked KL at full fidelity
    window_length: int = 128  # held-out windows of the prompts (and of full-length infill spans)
    repeats: int = 4  # masked states per window, at stratified denoising progress
    low_fidelity_windows: int = 8  # KL windows at low fidelity (the first ones of the full fidelity)
    low_fidelity_prompts: int = 0  # prompted trajectory rows at low fidelity (0: no trajectory term)
    low_fidelity_free_rows: int = 4  # free rows at low fidelity (0: none)
    low_fidelity_free_steps: int = 8  # steps of those rows, whatever the Plan's (0: the Plan's)
    low_fidelity_infill_windows: int = 0  # infill windows at low fidelity (0: no infill term)
    trajectory_prompts: int = 0  # prompted trajectory rows (0: no trajectory term)
    prompt_length: int = 32
    kl_weight: float = 1.0  # weight of the masked KL (both fidelities)
    trajectory_weight: float = 1.0
    free_gap_weight: float = 1 / 3  # weight of the free-generation gap at full fidelity
    dense_step_weight: float = 1 / 8  # weight of the cached dense step term (both fidelities)
    low_fidelity_free_weight: float = 1 / 12  # weight of the low fidelity's free gap
    step_diversity_weight: float = 1 / 4  # weight of the dense prompted rows' diversity shortfall (both fidelities)
    unconditional_rows: int = 4  # sampled free rows of the compressed model (0: no free gap at full fidelity)
    free_max_steps: int = 16  # most steps of those rows at full fidelity (0: the Plan's, however many)
    infill_windows: int = 0  # windows whose spans the compressed model fills (0: no infill term)
    infill_span: int = 6
    infill_spans: int = 1  # spans per infill window
    infill_window_length: int = 32  # characters per infill window (0: window_length)
    infill_weight: float = 0.5  # weight of the infill term where infill_windows > 0
    calibration_sequences: int = 32
    seed: int = 0
    split: str = "evaluation"
    batch_size: int = 64  # masked states per forward pass
    step_rows: int = 8  # prompted and unconditional rows of the cached dense step term (Plan-independent)
    nelbo_repeats: int = 8  # masked states per row the compressed model generates, for its NELBO
    step_nelbo_repeats: int = 16  # the same for the rows of the dense step term (Plan-independent, cached)
    step_cost_weight: float = 1.0  # weight of the dense step cost, the full evaluator's step part (both fidelities)
    step_cost_rows: int = 16  # prompted and unconditional rows of the dense step cost (Plan-independent, cached)
    step_cost_windows: int = 16  # infill windows of the dense step cost
    step_cost_draws: int = 1  # independent draws of the dense step cost

    def measurement(self) -> dict[str, object]:
        """The fields that change what is measured (all but the weights): the reference cache key's."""
        return {name: value for name, value in dataclasses.asdict(self).items()
                if not name.endswith("_weight") and name != "free_max_steps"}


class ProxyEvaluator(BaseEvaluator):
    """Proxy quality of Plans for one dense model (see the module docstring for the formula).

    It holds what the terms share: the held-out text and windows, the dense references (cached on disk)
    and one :class:`~dlmsearch.evaluators.plan_compressor.PlanCompressor`.
    """

    def __init__(self, adapter: DLMAdapter, settings: ProxySettings | None = None,
                 text_ids: torch.Tensor | None = None, calibration: CalibrationSet | None = None) -> None:
        """``text_ids`` (1-D) replaces the held-out split and ``calibration`` the calibration plays,
        e.g. for a user's own data or a model without a tokenizer."""
        self.dense = adapter
        self.settings = settings or ProxySettings()
        s = self.settings
        self._text = text_ids if text_ids is not None else adapter.encode(load_split(s.split))
        length = min(s.window_length, adapter.shape.max_length)
        infill_windows = max(s.infill_windows, s.low_fidelity_infill_windows)
        infill_length = min(s.infill_window_length or length, length)
        shared = infill_length == length or infill_windows == 0  # infill spans in the main windows
        count = max(infill_windows if shared else 0, s.trajectory_prompts, s.low_fidelity_prompts, s.step_rows, 1)
        self.windows = eval_windows(self._text, length, count)  # prompts (and full-length infill spans)
        infill_text = self.windows if shared else eval_windows(self._text, infill_length, infill_windows)
        self.infill_task = InfillTask.with_spans(infill_text[:infill_windows], s.infill_spans, s.infill_span,
                                                 s.seed + INFILL_SEED_OFFSET)
        self.model_digest = model_digest(adapter)
        self._layouts: dict[tuple[int, int], tuple[MaskedStates, list[torch.Tensor]]] = {}
        self._step_terms: dict[SamplerSettings, dict[str, float]] = {}
        self.compressor = PlanCompressor(adapter, calibration, self.settings.calibration_sequences,
                                         self.settings.seed)

    # ------------------------------------------------------------ what the terms share

    def reference_key(self, **extra: object) -> str:
        """Cache key of a dense reference: the model, the measurement settings and ``extra``."""
        return cache_key(self.model_digest, {**self.settings.measurement(), "version": REFERENCE_VERSION, **extra})

    def masked_states(self, sampler: SamplerSettings) -> tuple[MaskedStates, list[torch.Tensor]]:
        """The masked states for ``sampler``'s generation length and block length, and the dense
        log-probabilities at the masked positions of each chunk of them, (positions, V) (cached on
        disk; built once per layout and kept)."""
        layout = (sampler.gen_length, sampler.block_length)
        if layout not in self._layouts:
            s = self.settings
            windows = eval_windows(self._text, sampler.gen_length, max(s.windows, s.low_fidelity_windows))
            states = build_masked_states(windows, self.dense.mask_token_id, s.repeats, s.seed,
                                         s.low_fidelity_windows, s.windows, sampler.block_length, s.batch_size)

            def compute() -> dict[str, torch.Tensor]:
                everything: dict[int | None, torch.Tensor] = {None: torch.ones(s.batch_size, dtype=torch.bool)}
                return {f"chunk{c}": chunk_logprobs(self.dense, states, c, everything)
                        for c in range(len(states.chunks))}

            key = self.reference_key(kind="masked_states", gen_length=layout[0], block_length=layout[1])
            cached = cached_tensors("reference_logprobs", key, compute)
            self._layouts[layout] = (states, [cached[f"chunk{c}"] for c in range(len(states.chunks))])
        return self._layouts[layout]

    def prompts(self, count: int, gen_length: int) -> torch.Tensor:
        """The first ``count`` held-out prompts, short enough to leave room for ``gen_length`` tokens."""
        length = max(1, min(self.settings.prompt_length, self.dense.shape.max_length - gen_length))
        return self.windows[:count, :length]

    def dense_generation(self, sampler: SamplerSettings, prompts: torch.Tensor, seed: int | None = None,
                         nelbo_repeats: int | None = None) -> tuple[torch.Tensor, float]:
        """The dense model's generation with ``sampler``, and its NELBO with ``nelbo_repeats`` masks per row
        (default ``settings.nelbo_repeats``: the masks the Plan's own rows get); cached on disk."""
        seed = self.settings.seed if seed is None else seed
        repeats = nelbo_repeats or self.settings.nelbo_repeats
        extra = {} if seed == self.settings.seed else {"generation_seed": seed}
        key = self.reference_key(kind="trajectory", prompts=prompts.shape[0], nelbo_masks=repeats,
                                 **dataclasses.asdict(sampler), **extra)

        def compute() -> dict[str, torch.Tensor]:
            out = generate(self.dense, prompts, seed=seed, **dataclasses.asdict(sampler))
            nelbo = self.nelbo(out, repeats)
            return {"tokens": out, "nelbo": torch.tensor([nelbo], dtype=torch.float64)}

        cached = cached_tensors("reference_generations", key, compute)
        return cached["tokens"], float(cached["nelbo"][0])

    def nelbo(self, sequences: torch.Tensor, repeats: int | None = None) -> float:
        """The dense model's NELBO of ``sequences`` with ``repeats`` masks per row (default ``nelbo_repeats``)."""
        return evaluate_nelbo(self.dense.forward_logits, sequences.cpu(), self.dense.mask_token_id,
                              seed=self.settings.seed + NELBO_SEED_OFFSET,
                              repeats=repeats or self.settings.nelbo_repeats, batch_size=64)

    def step_term(self, sampler: SamplerSettings) -> dict[str, float]:
        """What ``sampler``'s step count costs the dense model itself (Plan-independent: the dense rows are
        cached on disk, the parts measured once per sampler setting and kept).

        ``step_rows`` prompted rows (the Plan's sampler) and as many unconditional rows (temperature
        1) are generated by the dense model with the Plan's steps and at one token per step:
        ``steps_prompted_gap`` / ``steps_unconditional_gap`` are the NELBO gaps of both sets,
        ``steps_prompted_diversity_gap`` / ``steps_free_diversity_gap`` their loss of distinct 4-grams
        (distinct-n, Li et al. 2016, arXiv 1510.03055), with ``distinct4_ratio`` the prompted rows'
        share and ``collapsed_rows`` / ``dense_collapsed_rows`` the share of them that collapsed one by one
        at the Plan's steps and at one token per step; ``step_cost`` and its parts come from :meth:`step_cost`.
        """
        if sampler not in self._step_terms:
            self._step_terms[sampler] = self._measure_step_term(sampler) | self.step_cost(sampler)
        return self._step_terms[sampler]

    def step_cost(self, sampler: SamplerSettings) -> dict[str, float]:
        """The full evaluator's step part for ``sampler`` (:meth:`FullEvaluator.step_cost`), measured on the
        proxy's own rows, windows and seeds (cached on disk)."""
        s = self.settings
        key = self.reference_key(kind="step_cost", **dataclasses.asdict(sampler))

        def compute() -> dict[str, torch.Tensor]:
            settings = FullSettings(infill_windows=s.step_cost_windows, prompts=s.step_cost_rows,
                                    unconditional=s.step_cost_rows, prompt_length=s.prompt_length,
                                    seed=s.seed + STEP_COST_SEED_OFFSET, split=s.split, draws=s.step_cost_draws,
                                    window_phase=STEP_COST_WINDOW_PHASE)
            measured = FullEvaluator(self.dense, settings, text_ids=self._text).step_cost(sampler)
            return {name: torch.tensor([value], dtype=torch.float64) for name, value in measured.items()}

        return {name: float(value[0]) for name, value in cached_tensors("reference_step_costs", key, compute).items()}

    def _measure_step_term(self, sampler: SamplerSettings) -> dict[str, float]:
        rows = self.settings.step_rows
        prompts = self.prompts(rows, sampler.gen_length)
        empty = torch.empty(rows, 0, dtype=torch.long)
        sampled = dataclasses.replace(sampler, temperature=1.0)
        best = dataclasses.replace(sampler, steps=sampler.gen_length)
        best_sampled = dataclasses.replace(sampled, steps=sampler.gen_length)
        repeats = self.settings.step_nelbo_repeats

        def measured(rows_sampler: SamplerSettings, rows_prompts: torch.Tensor) -> tuple[float, float, float]:
            tokens, nelbo = self.dense_generation(rows_sampler, rows_prompts, nelbo_repeats=repeats)
            generated = tokens[:, rows_prompts.shape[1]:]
            return nelbo, distinct_ngrams(generated), collapsed_rows(generated)

        prompted, prompted_best = measured(sampler, prompts), measured(best, prompts)
        free, free_best = measured(sampled, empty), measured(best_sampled, empty)
        return {"collapsed_rows": prompted[2], "dense_collapsed_rows": prompted_best[2],
                "steps_prompted_gap": prompted[0] - prompted_best[0], "steps_unconditional_gap": free[0] - free_best[0],
                "steps_prompted_diversity_gap": max(0.0, prompted_best[1] - prompted[1]),
                "distinct4_ratio": prompted[1] / prompted_best[1] if prompted_best[1] > 0 else 1.0,
                "steps_free_diversity_gap": max(0.0, free_best[1] - free[1])}

    # ------------------------------------------------------------ evaluation

    def compressed(self, plan: Plan) -> DLMAdapter:
        """A compressed copy of the dense model (the dense model itself is never changed)."""
        return self.compressor.compressed(plan)

    def terms(self, fidelity: str = "full") -> tuple[ProxyTerm, ...]:
        """The terms summed at ``fidelity`` (:func:`~dlmsearch.evaluators.proxy_terms.proxy_terms`)."""
        return proxy_terms(self.settings, fidelity)

    def masked_kl_of(self, plan: Plan, fidelity: str = "low") -> float:
        """The KL term alone of ``plan`` (no generation): what sensitivity profiles measure."""
        return MaskedKL(fidelity).measure(self, self.compressed(plan), plan)["kl"]

    def evaluate(self, plan: Plan, fidelity: str = "full") -> QualityResult:
        """Proxy score of ``plan``: each term's weight times its value, summed (see the module docstring)."""
        check_fidelity(fidelity)
        model = self.compressed(plan)
        parts: dict[str, float] = {}
        score = 0.0
        for term in self.terms(fidelity):
            measured = term.measure(self, model, plan)
            parts |= measured
            score += getattr(self.settings, term.weight) * term.value(measured)
        return QualityResult(score, parts, fidelity)
