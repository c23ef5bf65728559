"""The fast proxy: divergence from the dense model at fixed masked states, plus generation terms.

Score of a Plan (nats per token and shares of characters, lower is better, 0 for the dense model)::

    score = KL + step_weight * max(0, free_gap)
            [+ infill_weight * (1 - infill_agreement), with infill_windows > 0]
            [+ trajectory_weight * trajectory, with trajectory_prompts > 0]

with ``step_weight = 2/3``, chosen on the tuning set of random Plans (``--seed 1``) against the full
evaluator that scores prompted and free rows apart; there the infill term's best weight was 0, so
it is off by default (``infill_weight = 1/2`` when ``infill_windows`` turns it on). What each term
sees, and why (figures: bench/RESULTS.md):

- ``KL``: mean over the masked positions of every masked state of KL(dense || compressed). The
  states are held-out windows masked at stratified mask ratios t (seeded). A state with mask ratio
  t sits at denoising progress 1 - t, so it is scored with the precision the Plan gives that
  timestep group (:func:`~dlmsearch.compress.force_timestep_group`). States run in fixed batches
  of ``batch_size`` sorted by mask ratio (one forward per batch and distinct group precision; the
  dense reference uses the same batches, so the dense Plan scores exactly 0). ``kl_state`` is the
  same KL averaged per state instead of per position (diagnostic). The KL sees compression but not
  the step count, and ranks Plans poorly alone (Spearman 0.35-0.55 with the full evaluator): 8
  windows rank as well as 32, and beside the generation terms 4 windows rank the whole proxy as
  well as 8, so the full fidelity measures 4 (``windows``) and the low fidelity, which has
  nothing else, 8 (``low_fidelity_windows``).
- ``free_gap``: what the step count and the compression do to free text together: the dense
  model's masked-diffusion NELBO of ``unconditional_rows`` free generations (temperature 1, the
  Plan's steps and precision) of the compressed model, minus that of the dense model's free
  generations at one token per step under the same seed (cached); both scored with
  ``nelbo_repeats`` masks per row under the same mask seed. Few steps and heavy compression
  show here first; the full evaluator's generative NELBO is the largest part of its score.
- ``infill_agreement`` (off by default): ``infill_spans`` spans of ``infill_span`` characters in each of
  ``infill_windows`` windows of ``infill_window_length`` characters are filled by the compressed
  model with the Plan's passes per token and block length
  (:class:`~dlmsearch.evaluators.infill_task.InfillTask`); the share of characters equal to the
  dense model's fill *with the same passes and blocks* (cached per sampler setting). Filling is
  greedy, so this term carries no sampling noise. It measures what compression does at the Plan's
  step count; the step count's own cost is the free gap's. (Against the dense fill at one pass
  per token, as the full evaluator's agreement is measured, it charged steps twice: one 6-character
  span filled in 3 passes commits neighbouring, strongly dependent characters together, so the
  dense model at 32 steps already disagreed with itself on 35% of them, where the full
  evaluator's four spans per window, 12 passes, disagree on 13%; bench/RESULTS.md.) One
  word-length span in each of 32 windows of 32 characters costs a quarter of four spans in each
  of 8 windows of 128 (a fill costs passes x window length) and ranked Plans as well.
- ``trajectory`` (off by default): ``trajectory_prompts`` prompts (held-out text) completed with
  the Plan's sampler settings by the compressed model and, once and cached, by the dense model at
  one token per step; ``max(0, NELBO_dense(plan output) - NELBO_dense(dense output)) + 0.5 * (1 -
  agreement)`` with ``agreement`` the share of generated tokens equal to the dense generation's.
  Greedy completions diverge after one differing token, so this term was mostly noise (it added
  nothing measurable once the infill term was in) and costs the most.

``fidelity="low"`` measures ``low_fidelity_windows`` KL windows on a stratified grid of mask ratios
of their own (a subset of the full fidelity's states when fewer than ``windows``, states of their
own when more: :func:`build_masked_states`), ``low_fidelity_free_rows`` free rows and
``low_fidelity_infill_windows`` infill windows; by default none of the latter two, so the low
fidelity generates nothing (bench/RESULTS.md has its time per Plan beside the full fidelity's).
Without free rows the free gap is replaced by
``dense_step_weight * steps_unconditional_gap``: what the Plan's step count alone costs the dense
model (the NELBO gap of ``step_rows`` of its own free generations at the Plan's steps vs one token
per step, with ``step_nelbo_repeats`` masks per row; Plan-independent and cached, so its masks
cost once). It treats the step damage as additive to the compression damage and ranks worse than
the generating proxy (Spearman with the full evaluator 0.78 / 0.82 vs 0.90 / 0.92 on two sets of
random Plans on the shipped weights; bench/RESULTS.md). On those weights the dense model's free
rows at 16 and 32 steps are *more* likely than at one token per step, so the term is 0 there and
charges 8 steps only, which is where the full evaluator's step cost mostly lies. Its weight
(1/12) is kept from the first weights, where at 1/3 it swamped the KL. The Plan's own free rows
rank better (``low_fidelity_free_rows=4``: 0.83 / 0.85 against the session-8 full evaluator) but
cost nearly as much as the full fidelity, generation being most of it; so by default the low
fidelity stays generation-free, and under ``fidelity: multi`` its score, well below the full
fidelity's, only skips Plans far behind a cheaper front member.
``steps_prompted_gap`` (the same for greedy prompted rows) is a diagnostic: few steps give
repetitive text the model finds *likely*, so prompted rows do not show the step damage.

Every random draw has its own seed offset from ``seed`` (free rows, NELBO masks, infill spans),
and the full evaluator draws with others and on other windows: the two share no noise. Dense
reference outputs are cached on disk (:mod:`dlmsearch.evaluators.reference`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import torch

from dlmsearch.compress import CalibrationSet, force_timestep_group
from dlmsearch.data import load_split
from dlmsearch.evaluators.base import BaseEvaluator, QualityResult, check_fidelity
from dlmsearch.evaluators.infill_task import InfillTask
from dlmsearch.evaluators.plan_compressor import PlanCompressor
from dlmsearch.evaluators.reference import cache_key, cached_tensors, model_digest
from dlmsearch.models.adapters import DLMAdapter
from dlmsearch.models.diffusion import eval_windows, evaluate_nelbo, mask_tokens, stratified_mask_probs
from dlmsearch.models.sampler import generate
from dlmsearch.plan import Plan, SamplerSettings

logger = logging.getLogger("dlmsearch.evaluators.proxy")

AGREEMENT_WEIGHT = 0.5
#: Seed offsets of the proxy's draws: free rows and the masks of generated rows' NELBO each have
#: their own (the full evaluator draws with offset 100), so no two measurements share noise.
FREE_SEED_OFFSET = 1
NELBO_SEED_OFFSET = 2
INFILL_SEED_OFFSET = 3
#: Enters every reference cache key: raise it when a change alters what a cached entry holds.
REFERENCE_VERSION = 5


@dataclass(frozen=True)
class ProxySettings:
    """What the proxy measures on; every field enters the reference cache key."""

    windows: int = 4  # held-out windows of the masked KL at full fidelity
    window_length: int = 128
    repeats: int = 4  # masked states per window, at stratified mask ratios
    low_fidelity_windows: int = 8  # KL windows at low fidelity (the KL is all it has)
    low_fidelity_prompts: int = 0  # prompted trajectory rows at low fidelity (0: no trajectory term)
    low_fidelity_free_rows: int = 0  # free rows at low fidelity (0: the cached dense step term instead)
    low_fidelity_infill_windows: int = 0  # infill windows at low fidelity (0: no infill term)
    trajectory_prompts: int = 0  # prompted trajectory rows (0: no trajectory term)
    prompt_length: int = 32
    trajectory_weight: float = 1.0
    step_weight: float = 2 / 3  # weight of the free-generation gap
    dense_step_weight: float = 1 / 12  # weight of the dense step term, used where no free rows are generated
    unconditional_rows: int = 4  # sampled free rows of the compressed model (0: the dense step term instead)
    infill_windows: int = 0  # windows whose spans the compressed model fills (0: no infill term)
    infill_span: int = 6
    infill_spans: int = 1  # spans per infill window
    infill_window_length: int = 32  # characters per infill window (0: window_length)
    infill_weight: float = 0.5  # weight of the infill term where infill_windows > 0
    calibration_sequences: int = 32
    seed: int = 0
    split: str = "evaluation"
    batch_size: int = 32  # masked states per forward pass
    step_rows: int = 8  # prompted and unconditional rows of the cached dense step term (Plan-independent)
    nelbo_repeats: int = 8  # masked states per row the compressed model generates, for its NELBO
    step_nelbo_repeats: int = 16  # the same for the rows of the dense step term (Plan-independent, cached)


@dataclass(frozen=True)
class MaskedStates:
    """The fixed masked states: ids (S, L), masked positions (S, L), mask ratio (S,), window index (S,).

    States are ordered by part (the low-fidelity part first), then by mask ratio; ``chunks`` are
    the fixed ``[start, end)`` batches the model runs on; ``low_chunks`` and ``full_chunks`` are
    the indices of the chunks each fidelity scores.
    """

    ids: torch.Tensor
    masked: torch.Tensor
    mask_ratio: torch.Tensor
    window: torch.Tensor
    chunks: tuple[tuple[int, int], ...] = ()
    low_chunks: tuple[int, ...] = ()
    full_chunks: tuple[int, ...] = ()


def build_masked_states(windows: torch.Tensor, mask_token_id: int, repeats: int, seed: int,
                        low_windows: int, full_windows: int, batch_size: int = 32) -> MaskedStates:
    """The masked states of both fidelities: each window masked ``repeats`` times at stratified ratios.

    The low fidelity scores the first ``low_windows`` windows on a stratified grid of
    ``low_windows * repeats`` mask ratios of their own. Where ``full_windows`` is larger, the full
    fidelity adds the remaining windows on another grid (the low-fidelity states are a subset of
    its states); where it is smaller, the full fidelity scores the first ``full_windows`` windows on
    states of their own. Either way each fidelity covers the whole denoising range evenly. Ratios
    are assigned to windows in a seeded random order; the states of each part are then sorted by
    ratio and cut into batches of ``batch_size`` (sorting keeps most batches inside one timestep
    group). ``windows`` holds at least ``max(low_windows, full_windows)`` rows.
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
        ratios = stratified_mask_probs(count)[torch.randperm(count, generator=generator)]
        window = torch.arange(first, last).repeat(repeats)
        order = torch.sort(ratios, stable=True).indices
        parts.append((ratios[order], window[order]))
    ratios = torch.cat([r for r, _ in parts])
    window = torch.cat([w for _, w in parts])
    ids, masked = mask_tokens(windows[window], ratios, mask_token_id, torch.Generator().manual_seed(seed + 1))
    chunks: list[tuple[int, int]] = []
    part_chunks: list[tuple[int, ...]] = []
    start = 0
    for part_ratios, _ in parts:
        end = start + len(part_ratios)
        part = [(b, min(b + batch_size, end)) for b in range(start, end, batch_size)]
        part_chunks.append(tuple(range(len(chunks), len(chunks) + len(part))))
        chunks += part
        start = end
    full_chunks = part_chunks[0] + part_chunks[1] if extends else part_chunks[1]
    return MaskedStates(ids, masked, ratios, window, tuple(chunks), part_chunks[0], full_chunks)


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
        infill_windows = max(s.infill_windows, s.low_fidelity_infill_windows)
        infill_length = min(s.infill_window_length or length, length)
        shared = infill_length == length or infill_windows == 0  # infill spans in the main windows
        count = max(s.windows, s.low_fidelity_windows, infill_windows if shared else 0, s.trajectory_prompts,
                    s.low_fidelity_prompts, s.step_rows)
        self.windows = eval_windows(ids, length, count)  # KL states, prompts (and full-length infill spans)
        self.states = build_masked_states(self.windows, adapter.mask_token_id, s.repeats, s.seed,
                                          s.low_fidelity_windows, s.windows, s.batch_size)
        infill_text = self.windows if shared else eval_windows(ids, infill_length, infill_windows)
        self.infill_task = InfillTask.with_spans(infill_text[:infill_windows], s.infill_spans, s.infill_span,
                                                 s.seed + INFILL_SEED_OFFSET)
        self.model_digest = model_digest(adapter)
        self._reference = self._reference_logprobs()
        self.compressor = PlanCompressor(adapter, calibration, self.settings.calibration_sequences,
                                         self.settings.seed)

    # ------------------------------------------------------------ reference (cached)

    def _key(self, **extra: object) -> str:
        return cache_key(self.model_digest, {**dataclasses.asdict(self.settings), "version": REFERENCE_VERSION,
                                             **extra})

    def _reference_logprobs(self) -> list[torch.Tensor]:
        """Dense log-probabilities at the masked positions of each chunk of states, (positions, V)."""
        def compute() -> dict[str, torch.Tensor]:
            everything: dict[int | None, torch.Tensor] = {None: torch.ones(self.settings.batch_size, dtype=torch.bool)}
            return {f"chunk{c}": self._chunk_logprobs(self.dense, c, everything)
                    for c in range(len(self.states.chunks))}

        cached = cached_tensors("reference_logprobs", self._key(kind="masked_states"), compute)
        return [cached[f"chunk{c}"] for c in range(len(self.states.chunks))]

    @torch.no_grad()
    def _chunk_logprobs(self, adapter: DLMAdapter, chunk: int,
                        rows_by_group: dict[int | None, torch.Tensor]) -> torch.Tensor:
        """Log-probabilities at the masked positions of ``chunk``: one batched forward per timestep group
        (``rows_by_group`` maps a group, or None for the step-free default, to the rows it serves)."""
        start, end = self.states.chunks[chunk]
        ids = self.states.ids[start:end]
        out: torch.Tensor | None = None
        for group, rows in rows_by_group.items():
            rows = rows[:len(ids)]
            with force_timestep_group(adapter.model, group):  # only this group's rows run at its precision
                logits = adapter.forward_logits(ids[rows].to(adapter.device))
            if out is None:
                out = torch.empty(*ids.shape, logits.shape[-1])
            out[rows] = torch.log_softmax(logits.float(), dim=-1).cpu()
        assert out is not None
        return out[self.states.masked[start:end]]

    def _prompts(self, count: int, gen_length: int) -> torch.Tensor:
        length = max(1, min(self.settings.prompt_length, self.dense.shape.max_length - gen_length))
        return self.windows[:count, :length]

    def _reference_generation(self, plan: Plan, prompts: torch.Tensor) -> tuple[torch.Tensor, float]:
        """The dense model's generation at one token per step, and its NELBO (cached on disk)."""
        best = dataclasses.replace(plan.sampler, steps=plan.sampler.gen_length, remasking="low_confidence",
                                   temperature=0.0)
        return self._dense_generation(best, prompts)

    def _dense_generation(self, sampler: SamplerSettings, prompts: torch.Tensor, seed: int | None = None,
                          nelbo_repeats: int | None = None) -> tuple[torch.Tensor, float]:
        """The dense model's generation with ``sampler``, and its NELBO with ``nelbo_repeats`` masks per row
        (default ``settings.nelbo_repeats``: the masks the Plan's own rows get); cached on disk."""
        seed = self.settings.seed if seed is None else seed
        repeats = nelbo_repeats or self.settings.nelbo_repeats
        extra = {} if seed == self.settings.seed else {"generation_seed": seed}
        key = self._key(kind="trajectory", prompts=prompts.shape[0], nelbo_masks=repeats,
                        **dataclasses.asdict(sampler), **extra)

        def compute() -> dict[str, torch.Tensor]:
            out = generate(self.dense, prompts, seed=seed, **dataclasses.asdict(sampler))
            nelbo = self._nelbo(out, repeats)
            return {"tokens": out, "nelbo": torch.tensor([nelbo], dtype=torch.float64)}

        cached = cached_tensors("reference_generations", key, compute)
        return cached["tokens"], float(cached["nelbo"][0])

    def _nelbo(self, sequences: torch.Tensor, repeats: int | None = None) -> float:
        """The dense model's NELBO of ``sequences`` with ``repeats`` masks per row (default ``nelbo_repeats``)."""
        return evaluate_nelbo(self.dense.forward_logits, sequences.cpu(), self.dense.mask_token_id,
                              seed=self.settings.seed + NELBO_SEED_OFFSET,
                              repeats=repeats or self.settings.nelbo_repeats, batch_size=64)

    # ------------------------------------------------------------ evaluation

    def compressed(self, plan: Plan) -> DLMAdapter:
        """A compressed copy of the dense model (the dense model itself is never changed)."""
        return self.compressor.compressed(plan)

    def _rows_by_group(self, plan: Plan, chunk: int) -> dict[int | None, torch.Tensor]:
        """Rows of ``chunk`` per timestep group; groups with identical precision share one forward."""
        start, end = self.states.chunks[chunk]
        groups = torch.tensor([plan.timestep_group(1.0 - float(r)) for r in self.states.mask_ratio[start:end]])
        settings = [tuple((lp.weight_bits[g], lp.act_bits[g]) for lp in plan.layers.values())
                    for g in range(len(plan.timestep_groups) + 1)]
        by_group: dict[int | None, torch.Tensor] = {}
        for g in sorted(set(groups.tolist())):
            first = settings.index(settings[g])  # the lowest group with the same precision everywhere
            rows = groups == g
            previous = by_group.get(first)
            by_group[first] = rows if previous is None else previous | rows
        return by_group

    @torch.no_grad()
    def masked_kl(self, model: DLMAdapter, plan: Plan, fidelity: str = "full") -> float:
        """Mean KL(dense || compressed) over the masked positions of ``fidelity``'s states."""
        return self.masked_kl_parts(model, plan, fidelity)["kl"]

    @torch.no_grad()
    def masked_kl_parts(self, model: DLMAdapter, plan: Plan, fidelity: str = "full") -> dict[str, float]:
        """KL(dense || compressed) at the masked states of ``fidelity`` ("low" or "full").

        ``kl``: mean over masked positions; ``kl_state``: mean over states of each state's mean
        (every denoising stage counts equally, as every sampler step does); ``kl_early`` /
        ``kl_late``: mean over the masked positions of the states before / from half-way through
        denoising (mask ratio above / at most 0.5).
        """
        check_fidelity(fidelity)
        chunks = self.states.low_chunks if fidelity == "low" else self.states.full_chunks
        totals, counts_by_half, state_means = [0.0, 0.0], [0, 0], []
        for c in chunks:
            start, end = self.states.chunks[c]
            logq = self._chunk_logprobs(model, c, self._rows_by_group(plan, c))
            logp = self._reference[c]
            per_position = (logp.exp() * (logp - logq)).sum(dim=-1).double()
            row = self.states.masked[start:end].nonzero()[:, 0]
            sums = torch.zeros(end - start, dtype=torch.float64).index_add_(0, row, per_position)
            counts = self.states.masked[start:end].sum(dim=1)
            late = self.states.mask_ratio[start:end] <= 0.5
            for half, rows in enumerate((~late, late)):
                totals[half] += float(sums[rows].sum())
                counts_by_half[half] += int(counts[rows].sum())
            state_means += (sums[counts > 0] / counts[counts > 0]).tolist()
        return {"kl": sum(totals) / max(sum(counts_by_half), 1),
                "kl_state": sum(state_means) / max(len(state_means), 1),
                "kl_early": totals[0] / max(counts_by_half[0], 1), "kl_late": totals[1] / max(counts_by_half[1], 1)}

    def masked_kl_of(self, plan: Plan, fidelity: str = "low") -> float:
        """KL term alone of ``plan`` (no generation): what sensitivity profiles measure."""
        return self.masked_kl(self.compressed(plan), plan, fidelity)

    @torch.no_grad()
    def trajectory(self, model: DLMAdapter, plan: Plan, prompts: int, unconditional: int = 0) -> dict[str, float]:
        """The generation-based terms and their parts (``trajectory`` is 0 without ``prompts``)."""
        sampler = plan.sampler
        if prompts <= 0:
            return {"trajectory": 0.0, **self.step_term(sampler), **self.free_term(model, sampler, unconditional)}
        prompt_ids = self._prompts(prompts, sampler.gen_length)
        reference, reference_nelbo = self._reference_generation(plan, prompt_ids)
        out = generate(model, prompt_ids, gen_length=sampler.gen_length, steps=sampler.steps,
                       block_length=sampler.block_length, remasking=sampler.remasking,
                       temperature=sampler.temperature, seed=self.settings.seed)
        start = prompt_ids.shape[1]
        agreement = float((out[:, start:] == reference[:, start:]).float().mean())
        gap = self._nelbo(out) - reference_nelbo
        value = max(0.0, gap) + AGREEMENT_WEIGHT * (1.0 - agreement)
        return {"trajectory": value, "trajectory_nelbo_gap": gap, "trajectory_agreement": agreement,
                **self.step_term(sampler), **self.free_term(model, sampler, unconditional)}

    @torch.no_grad()
    def free_term(self, model: DLMAdapter, sampler: SamplerSettings, rows: int) -> dict[str, float]:
        """NELBO gap of ``rows`` free generations (temperature 1, the Plan's steps) of ``model`` vs the
        dense model's at one token per step (cached); empty when ``rows`` is 0."""
        if rows <= 0:
            return {}
        empty = torch.empty(rows, 0, dtype=torch.long)
        sampled = dataclasses.replace(sampler, temperature=1.0)
        seed = self.settings.seed + FREE_SEED_OFFSET
        out = generate(model, empty, seed=seed, **dataclasses.asdict(sampled))
        best = dataclasses.replace(sampled, steps=sampled.gen_length)
        return {"free_gap": self._nelbo(out) - self._dense_generation(best, empty, seed)[1]}

    @torch.no_grad()
    def infill_term(self, model: DLMAdapter, sampler: SamplerSettings, windows: int) -> dict[str, float]:
        """Share of the characters ``model`` fills in the spans of the first ``windows`` infill windows equal
        to the dense model's fill, both with the Plan's passes per token and block length (the dense fill
        is cached on disk); empty when ``windows`` is 0."""
        if windows <= 0:
            return {}
        passes = sampler.steps / sampler.gen_length
        key = self._key(kind="infill", infill_count=windows, block_length=sampler.block_length, passes=passes)

        def compute() -> dict[str, torch.Tensor]:
            return {"filled": self.infill_task.fill(self.dense, passes, sampler.block_length, windows)}

        reference = cached_tensors("reference_infills", key, compute)["filled"]
        filled = self.infill_task.fill(model, passes, sampler.block_length, windows)
        return {"infill_agreement": float((filled == reference).float().mean())}

    def step_term(self, sampler: SamplerSettings) -> dict[str, float]:
        """What the Plan's step count costs the dense model itself (Plan-independent, cached on disk).

        ``step_rows`` prompted rows (the Plan's sampler) and as many unconditional rows (temperature
        1) are generated by the dense model with the Plan's steps and at one token per step; the
        NELBO gaps (dense model's NELBO, plan steps minus one token per step) of both sets.
        """
        rows = self.settings.step_rows
        prompts = self._prompts(rows, sampler.gen_length)
        empty = torch.empty(rows, 0, dtype=torch.long)
        sampled = dataclasses.replace(sampler, temperature=1.0)
        best = dataclasses.replace(sampler, steps=sampler.gen_length)
        best_sampled = dataclasses.replace(sampled, steps=sampler.gen_length)
        repeats = self.settings.step_nelbo_repeats

        def nelbo(rows_sampler: SamplerSettings, rows_prompts: torch.Tensor) -> float:
            return self._dense_generation(rows_sampler, rows_prompts, nelbo_repeats=repeats)[1]

        prompted_gap = nelbo(sampler, prompts) - nelbo(best, prompts)
        free_gap = nelbo(sampled, empty) - nelbo(best_sampled, empty)
        return {"steps_prompted_gap": prompted_gap, "steps_unconditional_gap": free_gap}

    def evaluate(self, plan: Plan, fidelity: str = "full") -> QualityResult:
        """Proxy score of ``plan`` (see the module docstring)."""
        check_fidelity(fidelity)
        s = self.settings
        plan.validate_for(self.dense)
        model = self.compressed(plan)
        low = fidelity == "low"
        kl_parts = self.masked_kl_parts(model, plan, fidelity)
        rows = s.low_fidelity_free_rows if low else s.unconditional_rows
        parts = self.trajectory(model, plan, s.low_fidelity_prompts if low else s.trajectory_prompts, rows)
        parts |= self.infill_term(model, plan.sampler, s.low_fidelity_infill_windows if low else s.infill_windows)
        if "free_gap" in parts:
            steps_term = s.step_weight * max(0.0, parts["free_gap"])
        else:
            steps_term = s.dense_step_weight * max(0.0, parts["steps_unconditional_gap"])
        score = (kl_parts["kl"] + s.trajectory_weight * parts["trajectory"] + steps_term
                 + s.infill_weight * (1.0 - parts.get("infill_agreement", 1.0)))
        return QualityResult(score, {**kl_parts, **parts}, fidelity)
