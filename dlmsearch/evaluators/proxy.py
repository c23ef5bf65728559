"""The fast proxy: divergence from the dense model at fixed masked states, plus generation terms.

Score of a Plan (nats per token and shares of characters, lower is better, 0 for the dense model)::

    score = KL + step_weight * max(0, free_gap) + dense_step_weight * max(0, steps_unconditional_gap)
            + step_diversity_weight * steps_prompted_diversity_gap + step_cost_weight * step_cost
            [+ infill_weight * (1 - infill_agreement), with infill_windows > 0]
            [+ trajectory_weight * trajectory, with trajectory_prompts > 0]

with ``step_weight = 1/3`` and ``dense_step_weight = 1/8``, chosen on 64 random Plans (``--seed 0``
and ``--seed 1`` of bench/proxy_fidelity.py) against the full evaluator and reported on 40 others
(``--seed 2``), and ``step_diversity_weight = 1/4``, chosen with 24 lightly compressed Plans
(``--space light --seed 3``) as well and reported on 24 others (``--seed 4``). The infill term's
best weight was 0, so it is off by default
(``infill_weight = 1/2`` when ``infill_windows`` turns it on). What each term
sees, and why (figures: bench/RESULTS.md):

- ``KL``: mean over the masked positions of every masked state of KL(dense || compressed). The
  states are shaped like the sampler's (:func:`mask_like_sampler`): held-out windows of the Plan's
  generation length at stratified denoising progress p (seeded), the blocks before p's block
  clean, the blocks after it all [MASK], and p's block masked with the share not yet denoised;
  the KL is taken on that block's masked positions, the ones the sampler commits from. Each state
  is scored with the precision the Plan gives p's timestep group
  (:func:`~dlmsearch.compress.force_timestep_group`). States run in fixed batches of
  ``batch_size`` sorted by progress (one forward per batch and distinct group precision; the dense
  reference uses the same batches, so the dense Plan scores exactly 0). ``kl_state`` is the same
  KL averaged per state instead of per position (diagnostic). The KL sees compression but not the
  step count, and ranks Plans poorly alone (Spearman about 0.5 with the full evaluator). On the
  tuning Plans, a generation-free low fidelity ranked alike on sampler-shaped states and on
  uniformly masked 128-character windows (0.80 either way, and with 48 windows), and beside the
  free gap the two kinds of state rank alike too; the sampler-shaped ones are kept because they
  are the states the model meets while generating. 8 windows (4 states each) rank as well as 16,
  so both fidelities measure 8.
- ``free_gap``: what the compression does to free text: the dense model's masked-diffusion NELBO
  of ``unconditional_rows`` free generations (temperature 1, the Plan's steps and precision) of
  the compressed model, minus that of the dense model's free generations *with the Plan's own
  steps* under the same seed (cached); both scored with ``nelbo_repeats`` masks per row under the
  same mask seed. (Against the dense model at one token per step, as until 2026-12-03, a 16- or
  32-step Plan was credited with the dense model's own few-step rows being likelier, and lightly
  compressed 64-step Plans ranked behind 32-step ones: Spearman 0.66 on light Plans.)
- ``step_cost``: the full evaluator's step part (:meth:`FullEvaluator.step_cost`: the dense model
  with the Plan's sampler against one token per step, in infill, NELBO, diversity and agreement),
  measured on ``step_cost_rows`` rows and ``step_cost_windows`` windows of the proxy's own, with
  seeds and text the full evaluator does not use; Plan-independent and cached on disk, so free
  per Plan. Weight 1: it is in the full evaluator's units.
- ``steps_unconditional_gap`` (the dense step term): what the Plan's step count alone costs the
  dense model: the NELBO gap of ``step_rows`` of its own free generations at the Plan's steps vs
  one token per step, with ``step_nelbo_repeats`` masks per row. It is Plan-independent and cached,
  so it costs nothing per Plan and carries little noise, where four free rows of the Plan's own are
  a noisy estimate (under other seeds they rank Plans alike at Spearman 0.70 only): beside the free
  gap it lifted the proxy from 0.90 to 0.95 on the tuning Plans (bench/RESULTS.md). On the shipped
  weights the dense model's free rows at 16 and 32 steps are *more* likely than at one token per
  step, so the term is 0 there and charges 8 steps only, which is where the full evaluator's step
  cost mostly lies.
- ``steps_prompted_diversity_gap`` (the step diversity term): how much of the variety of the dense
  model's greedy prompted rows (share of distinct 4-grams, as in the full evaluator's guard) the
  Plan's step count loses against one token per step, from the same cached rows. With few steps
  for many tokens greedy rows collapse into runs of spaces (the embedded model at 16 steps for 64
  characters), which the NELBO finds *likely*, so no NELBO term sees it; the full evaluator's
  diversity guard does. Among heavily compressed random Plans compression dominates and this term
  matters little (at weight 1/4 the tuning Plans rank at 0.932 instead of 0.945), but among
  lightly compressed ones, where a search's front lies, the step count is most of what differs:
  there it lifted the ranking from 0.53 to 0.64 (proxy) and 0.55 to 0.85 (low fidelity) on the
  tuning set (bench/RESULTS.md). ``steps_free_diversity_gap`` is the same for the free rows
  (diagnostic: 0.19 / 0.11 at 16 / 32 steps, 0 at 8, where sampled rows turn to gibberish, which
  is diverse).
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

``fidelity="low"`` scores::

    low = KL + low_fidelity_free_weight * max(0, free_gap at low_fidelity_free_steps)
             + dense_step_weight * max(0, steps_unconditional_gap)
             + step_diversity_weight * steps_prompted_diversity_gap + step_cost_weight * step_cost

with ``low_fidelity_free_weight = 1/12`` (chosen on the tuning Plans as above, where the dense
step term's best weight was 1/8 again). Its KL measures ``low_fidelity_windows`` windows on a
stratified grid of progress values of their own (a subset of the full fidelity's states when no
more than ``windows``, by default the same 8; states of their own when more:
:func:`build_masked_states`). Its ``low_fidelity_free_rows`` free rows run
``low_fidelity_free_steps`` steps whatever the Plan's (:meth:`ProxyEvaluator.low_fidelity_sampler`;
0: the Plan's own), and their gap is taken to the dense model's free rows at the same steps under
the same seed: what compression does to generated text at a fixed cheap step count, while the
dense step term charges the Plan's step count (step and compression damage taken as additive, as
quantization error is found to add over steps in image diffusion). Without that generation the KL
and the dense step term ranked the tuning Plans at Spearman 0.80 only (the KL misses how
compression degrades generated text, pruning above all: it ranks Plans of one step count at
0.3-0.8 where the free gap reaches 0.75-0.9); 4 free rows at 8 steps lifted that to 0.88 (at 16
steps 0.89, at twice the generation cost). On the embedded model a forward of a few rows costs
its overhead, so the low fidelity costs about two thirds of the full one (bench/RESULTS.md); on
a large model its 8 steps against the Plan's 16-64 are the saving. Under ``fidelity: multi`` its
score, below the full fidelity's, only skips Plans far behind a cheaper front member;
``low_fidelity_free_rows=0`` makes it generation-free again (about half the cost, Spearman 0.80).
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
from dlmsearch.evaluators.full import FullEvaluator, FullSettings, distinct_ngrams
from dlmsearch.evaluators.infill_task import InfillTask
from dlmsearch.evaluators.plan_compressor import PlanCompressor
from dlmsearch.evaluators.reference import cache_key, cached_tensors, model_digest
from dlmsearch.models.adapters import DLMAdapter
from dlmsearch.models.diffusion import eval_windows, evaluate_nelbo, stratified_mask_probs
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
REFERENCE_VERSION = 6
#: The dense step cost is measured like the full evaluator's step part, with seeds ``seed + 150`` on
#: (the full evaluator's own start at ``seed + 100``) and on windows a quarter of the way between the
#: proxy's: it shares no text and no draws with either.
STEP_COST_SEED_OFFSET = 50
STEP_COST_WINDOW_PHASE = 0.25


@dataclass(frozen=True)
class ProxySettings:
    """What the proxy measures on; every field enters the reference cache key."""

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
    trajectory_weight: float = 1.0
    step_weight: float = 1 / 3  # weight of the free-generation gap
    dense_step_weight: float = 1 / 8  # weight of the cached dense step term (both fidelities)
    low_fidelity_free_weight: float = 1 / 12  # weight of the low fidelity's free gap
    step_diversity_weight: float = 1 / 4  # weight of the dense prompted rows' diversity shortfall (both fidelities)
    unconditional_rows: int = 4  # sampled free rows of the compressed model (0: the dense step term instead)
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


class ProxyEvaluator(BaseEvaluator):
    """Proxy quality of Plans for one dense model (see the module docstring for the formula)."""

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

    # ------------------------------------------------------------ reference (cached)

    def _key(self, **extra: object) -> str:
        return cache_key(self.model_digest, {**dataclasses.asdict(self.settings), "version": REFERENCE_VERSION,
                                             **extra})

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
                return {f"chunk{c}": self._chunk_logprobs(self.dense, states, c, everything)
                        for c in range(len(states.chunks))}

            key = self._key(kind="masked_states", gen_length=layout[0], block_length=layout[1])
            cached = cached_tensors("reference_logprobs", key, compute)
            self._layouts[layout] = (states, [cached[f"chunk{c}"] for c in range(len(states.chunks))])
        return self._layouts[layout]

    @torch.no_grad()
    def _chunk_logprobs(self, adapter: DLMAdapter, states: MaskedStates, chunk: int,
                        rows_by_group: dict[int | None, torch.Tensor]) -> torch.Tensor:
        """Log-probabilities at the masked positions of ``chunk``: one batched forward per timestep group
        (``rows_by_group`` maps a group, or None for the step-free default, to the rows it serves)."""
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

    @staticmethod
    def _rows_by_group(plan: Plan, progress: torch.Tensor) -> dict[int | None, torch.Tensor]:
        """Rows of a chunk at denoising ``progress`` per timestep group; groups with identical precision
        share one forward."""
        groups = torch.tensor([plan.timestep_group(float(p)) for p in progress])
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
        denoising (progress below / from 0.5); ``rkl``: KL(compressed || dense) and ``ce_gap``:
        the dense model's cross-entropy of the compressed model's predictions minus its own entropy
        (what sampling from the compressed model costs per position), per masked position;
        ``nelbo_gap``: the masked-token NELBO term, the compressed model's negative log-likelihood of
        the held-out characters at the masked positions minus the dense model's, per position. All
        but ``kl`` are diagnostics: none ranked Plans better (bench/RESULTS.md).
        """
        check_fidelity(fidelity)
        states, reference = self.masked_states(plan.sampler)
        chunks = states.low_chunks if fidelity == "low" else states.full_chunks
        totals, counts_by_half, state_means = [0.0, 0.0], [0, 0], []
        other = {"rkl": 0.0, "ce_gap": 0.0, "nelbo_gap": 0.0}
        for c in chunks:
            start, end = states.chunks[c]
            logq = self._chunk_logprobs(model, states, c, self._rows_by_group(plan, states.progress[start:end]))
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

    def masked_kl_of(self, plan: Plan, fidelity: str = "low") -> float:
        """KL term alone of ``plan`` (no generation): what sensitivity profiles measure."""
        return self.masked_kl(self.compressed(plan), plan, fidelity)

    @torch.no_grad()
    def trajectory(self, model: DLMAdapter, plan: Plan, prompts: int) -> dict[str, float]:
        """The prompted trajectory term and its parts (``trajectory`` is 0 without ``prompts``)."""
        sampler = plan.sampler
        if prompts <= 0:
            return {"trajectory": 0.0}
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

    @torch.no_grad()
    def free_term(self, model: DLMAdapter, sampler: SamplerSettings, rows: int,
                  reference_steps: int | None = None) -> dict[str, float]:
        """NELBO gap of ``rows`` free generations of ``model`` (temperature 1, ``sampler``'s steps) vs the
        dense model's with ``reference_steps`` (default one token per step) under the same seed
        (cached); empty when ``rows`` is 0."""
        if rows <= 0:
            return {}
        empty = torch.empty(rows, 0, dtype=torch.long)
        sampled = dataclasses.replace(sampler, temperature=1.0)
        seed = self.settings.seed + FREE_SEED_OFFSET
        out = generate(model, empty, seed=seed, **dataclasses.asdict(sampled))
        reference = dataclasses.replace(sampled, steps=reference_steps or sampled.gen_length)
        return {"free_gap": self._nelbo(out) - self._dense_generation(reference, empty, seed)[1],
                "free_steps": float(sampler.steps)}

    def low_fidelity_sampler(self, sampler: SamplerSettings) -> SamplerSettings:
        """``sampler`` with the low fidelity's free-row steps: ``low_fidelity_free_steps`` (0: the Plan's),
        at most one token per step and a multiple of the number of blocks."""
        cap = self.settings.low_fidelity_free_steps
        if cap <= 0:
            return sampler
        blocks = sampler.gen_length // sampler.block_length
        return dataclasses.replace(sampler, steps=max(blocks, min(cap, sampler.gen_length) // blocks * blocks))

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
        """What the Plan's step count costs the dense model itself (Plan-independent: the dense rows are
        cached on disk, the terms measured once per sampler setting and kept).

        ``step_rows`` prompted rows (the Plan's sampler) and as many unconditional rows (temperature
        1) are generated by the dense model with the Plan's steps and at one token per step; the
        NELBO gaps (dense model's NELBO, plan steps minus one token per step) of both sets.
        """
        if sampler not in self._step_terms:
            self._step_terms[sampler] = self._measure_step_term(sampler) | self.step_cost(sampler)
        return self._step_terms[sampler]

    def step_cost(self, sampler: SamplerSettings) -> dict[str, float]:
        """The full evaluator's step part for ``sampler`` (:meth:`FullEvaluator.step_cost`), measured on the
        proxy's own rows, windows and seeds (cached on disk)."""
        s = self.settings
        key = self._key(kind="step_cost", **dataclasses.asdict(sampler))

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
        prompts = self._prompts(rows, sampler.gen_length)
        empty = torch.empty(rows, 0, dtype=torch.long)
        sampled = dataclasses.replace(sampler, temperature=1.0)
        best = dataclasses.replace(sampler, steps=sampler.gen_length)
        best_sampled = dataclasses.replace(sampled, steps=sampler.gen_length)
        repeats = self.settings.step_nelbo_repeats

        def measured(rows_sampler: SamplerSettings, rows_prompts: torch.Tensor) -> tuple[float, float]:
            tokens, nelbo = self._dense_generation(rows_sampler, rows_prompts, nelbo_repeats=repeats)
            return nelbo, distinct_ngrams(tokens[:, rows_prompts.shape[1]:])

        prompted, prompted_best = measured(sampler, prompts), measured(best, prompts)
        free, free_best = measured(sampled, empty), measured(best_sampled, empty)
        return {"steps_prompted_gap": prompted[0] - prompted_best[0], "steps_unconditional_gap": free[0] - free_best[0],
                "steps_prompted_diversity_gap": max(0.0, prompted_best[1] - prompted[1]),
                "distinct4_ratio": prompted[1] / prompted_best[1] if prompted_best[1] > 0 else 1.0,
                "steps_free_diversity_gap": max(0.0, free_best[1] - free[1])}

    def evaluate(self, plan: Plan, fidelity: str = "full") -> QualityResult:
        """Proxy score of ``plan`` (see the module docstring)."""
        check_fidelity(fidelity)
        s = self.settings
        plan.validate_for(self.dense)
        model = self.compressed(plan)
        low = fidelity == "low"
        kl_parts = self.masked_kl_parts(model, plan, fidelity)
        parts = self.trajectory(model, plan, s.low_fidelity_prompts if low else s.trajectory_prompts)
        parts |= self.step_term(plan.sampler)
        parts |= self.infill_term(model, plan.sampler, s.low_fidelity_infill_windows if low else s.infill_windows)
        if low:  # free rows at a fixed step count, against the dense model's at that count
            free_sampler = self.low_fidelity_sampler(plan.sampler)
            reference_steps = free_sampler.steps if s.low_fidelity_free_steps > 0 else None
            parts |= self.free_term(model, free_sampler, s.low_fidelity_free_rows, reference_steps)
            free_weight = s.low_fidelity_free_weight
        else:  # the Plan's free rows against the dense model's with the Plan's own steps: compression only
            parts |= self.free_term(model, plan.sampler, s.unconditional_rows, plan.sampler.steps)
            free_weight = s.step_weight
        steps_term = (free_weight * max(0.0, parts.get("free_gap", 0.0))
                      + s.dense_step_weight * max(0.0, parts["steps_unconditional_gap"])
                      + s.step_diversity_weight * parts["steps_prompted_diversity_gap"]
                      + s.step_cost_weight * parts["step_cost"])
        score = (kl_parts["kl"] + s.trajectory_weight * parts["trajectory"] + steps_term
                 + s.infill_weight * (1.0 - parts.get("infill_agreement", 1.0)))
        return QualityResult(score, {**kl_parts, **parts}, fidelity)
