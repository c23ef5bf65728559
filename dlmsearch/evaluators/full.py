"""The full evaluator: runs the real sampler with the whole Plan on held-out text.

Three measurements of a model with a sampler setting, under one draw's seeds:

- ``infill_accuracy``: ``infill_spans`` short spans (``infill_span`` characters: about a word) of
  each held-out window are masked at seeded positions and filled with
  :func:`~dlmsearch.models.sampler.infill`, using the Plan's step budget (``steps / gen_length``
  passes per token), block length and per-timestep precision; the share of characters restored
  exactly.
- ``gen_nelbo`` (MDLM's "generative perplexity"): prompted generations with the sampler setting
  and unconditional ones (temperature 1), scored by the dense model's masked-diffusion NELBO
  (seeded masks), and ``gen_diversity``, the share of distinct 4-grams among the generated tokens
  (degenerate repetition is *likely*, so the NELBO alone would reward it). Both per kind of row:
  pooled, greedy prompted rows collapsing into spaces and sampled free rows turning to gibberish
  cancelled (bench/RESULTS.md).
- the infilled characters themselves, for agreement.

One draw compares three such measurements made under the same seeds (common random numbers): the
compressed model with the Plan's sampler (``got``), the dense model with the Plan's sampler
(``paired``) and the dense model at one token per step (``best``)::

    draw = cost(got, paired) + cost(paired, best)         # compression_cost + step_cost
    cost(a, b) = (infill_b - infill_a) + mean_k max(0, nelbo_a,k - nelbo_b,k)
                 + mean_k max(0, diversity_b,k - diversity_a,k) + 0.5 * (1 - agreement(a, b))
                 + max(0, collapsed_a - collapsed_b)

over the row kinds k; ``collapsed`` is the share of the greedy prompted rows that collapsed one by one
(:func:`collapsed_rows`: mostly one run of spaces or one phrase repeated). A collapsed row is *likely*
under the dense model, so the NELBO term alone rewarded collapse (a 32-step Plan whose prompted rows
collapsed 0.62 of the time had a NELBO gap of 0.06 against 0.29-0.63 for Plans that kept their text),
and the pooled diversity hardly sees rows collapsing one by one (bench/HISTORY.md, 2026-12-06).

The compression cost pairs the Plan with the dense model under the *same*
sampler and seeds, so its generations and fills stay close to the dense ones and their difference
carries little sampling noise; the step cost is Plan-independent (the dense model's own loss from
taking fewer steps) and measured once per sampler setting (:meth:`FullEvaluator.step_cost`). Before
this split, every Plan was compared with the dense model at one token per step and clipped at 0
per kind: a 16- or 32-step Plan was credited with the dense model's own few-step rows being
*likelier* (NELBO -0.12) and could hide compression damage behind it, and the unpaired rows made
the evaluator agree with itself at only 0.85-0.89 (one draw vs another) on lightly compressed
Plans. ``distinct4_ratio`` is the lowest over kinds of the Plan's distinct-4-gram share over the
dense model's at one token per step (near 0: collapsed text); ``collapsed_rows`` the share of the
Plan's prompted rows that collapsed one by one (:func:`collapsed_rows`), ``dense_collapsed_rows`` the
dense model's at one token per step.

The score is the mean over ``draws`` independent draws (seeds ``seed``, ``seed + 1``, ...: generations,
infill span places and NELBO masks), every metric the mean of its draws; ``score_sd`` is the
spread of the draws' scores (``score_draw<d>`` each draw's). ``fidelity="low"`` is one draw of a
quarter of the rows and windows.

The held-out windows sit halfway between the proxy's (``window_phase``) and every generation and
NELBO mask uses ``seed + FULL_SEED_OFFSET``: the proxy and the full evaluator share no text and no
random draws, so their agreement is not inflated by shared noise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dlmsearch.compress import CalibrationSet
from dlmsearch.data import load_split
from dlmsearch.evaluators.base import BaseEvaluator, QualityResult, check_fidelity
from dlmsearch.evaluators.infill_task import InfillTask
from dlmsearch.evaluators.plan_compressor import PlanCompressor
from dlmsearch.evaluators.reference import cache_key, cached_tensors, model_digest
from dlmsearch.models.adapters import DLMAdapter
from dlmsearch.models.diffusion import eval_windows, evaluate_nelbo
from dlmsearch.models.sampler import generate
from dlmsearch.plan import Plan, SamplerSettings

logger = logging.getLogger("dlmsearch.evaluators.full")

NGRAM = 4
AGREEMENT_WEIGHT = 0.5
#: Offset of every seed the full evaluator draws with (the proxy draws with seeds 0-2 by default).
FULL_SEED_OFFSET = 100
#: Bump when a cached dense measurement changes meaning.
DENSE_CACHE_VERSION = 2


@dataclass(frozen=True)
class FullSettings:
    """What the full evaluator generates; ``low`` fidelity uses a quarter of each count.

    Rows are many because every one is a random draw: with 8 prompted and 4 unconditional rows,
    the same 24 Plans scored under two seeds ranked with Spearman 0.73 only.
    """

    infill_windows: int = 32
    window_length: int = 128
    infill_span: int = 6
    infill_spans: int = 4  # spans per window
    prompts: int = 16
    prompt_length: int = 32
    unconditional: int = 16
    calibration_sequences: int = 32
    seed: int = 0
    split: str = "evaluation"
    nelbo_repeats: int = 16  # masked states per generated row for its NELBO (4 left the NELBO gap noisy)
    window_phase: float = 0.5  # windows halfway between the proxy's: no shared text
    # independent draws averaged (seeds seed, seed + 1, ...); low fidelity makes one. Four: two 4-draw
    # evaluators on disjoint seeds rank 40 light Plans alike at Spearman 0.98, two 2-draw ones at 0.94
    draws: int = 4

    def __post_init__(self) -> None:
        if self.draws < 1:
            raise ValueError(f"draws={self.draws}: must be >= 1 (independent measurements averaged)")
        for name in ("prompts", "unconditional"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)}: must be >= 0 (generated rows)")
        if self.prompts + self.unconditional < 1:
            raise ValueError(f"prompts={self.prompts}, unconditional={self.unconditional}: at least one row must be "
                             "generated")


#: The two kinds of generated rows, scored apart (see the module docstring).
ROW_KINDS = ("prompted", "free")


@dataclass(frozen=True)
class _Measured:
    tokens: torch.Tensor
    infilled: torch.Tensor  # the infilled characters, (windows, masked per window)
    infill_accuracy: float
    nelbo: dict[str, float]  # per row kind that has rows
    diversity: dict[str, float]
    collapsed: float  # share of the prompted rows that collapsed (0 without prompted rows)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """The measurement as named tensors (what the disk cache stores)."""
        def number(value: float) -> torch.Tensor:
            return torch.tensor([value], dtype=torch.float64)

        return {"tokens": self.tokens, "infilled": self.infilled, "infill_accuracy": number(self.infill_accuracy),
                **{f"nelbo.{k}": number(v) for k, v in self.nelbo.items()},
                **{f"diversity.{k}": number(v) for k, v in self.diversity.items()}, "collapsed": number(self.collapsed)}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> _Measured:
        """Read back :meth:`to_tensors`."""
        def part(prefix: str) -> dict[str, float]:
            return {k[len(prefix):]: float(v[0]) for k, v in tensors.items() if k.startswith(prefix)}

        return cls(tensors["tokens"], tensors["infilled"], float(tensors["infill_accuracy"][0]), part("nelbo."),
                   part("diversity."), float(tensors["collapsed"][0]))


def _quarter(count: int) -> int:
    """A quarter of ``count`` for the low fidelity: at least 1, and 0 stays 0."""
    return min(count, max(1, count // 4))


def distinct_ngrams(tokens: torch.Tensor, n: int = NGRAM) -> float:
    """Share of distinct ``n``-grams among all ``n``-grams of the rows of ``tokens`` (B, L)."""
    grams = [tuple(row[i:i + n]) for row in tokens.tolist() for i in range(len(row) - n + 1)]
    return len(set(grams)) / max(len(grams), 1)


#: A generated row whose own share of distinct 4-grams is below this has collapsed: most of it is one run of
#: spaces or one phrase over and over (a varied row of 64 characters keeps about 0.9 of them).
COLLAPSED_ROW_DISTINCT = 0.5


def collapsed_rows(tokens: torch.Tensor, n: int = NGRAM) -> float:
    """Share of the rows of ``tokens`` (B, L) that collapsed (own distinct-``n``-gram share below
    :data:`COLLAPSED_ROW_DISTINCT`); 0 without rows.

    Pooled over rows (:func:`distinct_ngrams`), a character model's 4-grams repeat across rows so much
    that ten collapsed rows of sixteen leave the pooled share unchanged; counted per row they show."""
    if len(tokens) == 0:
        return 0.0
    return sum(distinct_ngrams(row[None], n) < COLLAPSED_ROW_DISTINCT for row in tokens) / len(tokens)


def _cost(got: _Measured, reference: _Measured) -> tuple[float, dict[str, float]]:
    """What ``got`` loses against ``reference`` (two measurements under one draw's seeds) and its parts:
    infill accuracy, per-kind NELBO and diversity shortfalls clipped at 0, infill disagreement, and the
    share of prompted rows that collapsed beyond the reference's."""
    kinds = list(got.nelbo)
    parts = {"infill_gap": reference.infill_accuracy - got.infill_accuracy,
             "gen_gap": statistics.fmean(max(0.0, got.nelbo[k] - reference.nelbo[k]) for k in kinds),
             "diversity_gap": statistics.fmean(max(0.0, reference.diversity[k] - got.diversity[k]) for k in kinds),
             "disagreement": 1.0 - float((got.infilled == reference.infilled).float().mean()),
             "collapse_gap": max(0.0, got.collapsed - reference.collapsed)}
    total = (parts["infill_gap"] + parts["gen_gap"] + parts["diversity_gap"] + AGREEMENT_WEIGHT * parts["disagreement"]
             + parts["collapse_gap"])
    return total, parts


def one_token_per_step(sampler: SamplerSettings) -> SamplerSettings:
    """The dense model's best setting for ``sampler``'s generation shape: one token per step, greedy."""
    return SamplerSettings(steps=sampler.gen_length, gen_length=sampler.gen_length, block_length=sampler.block_length)


def distinct_ratio(got: _Measured, dense: _Measured) -> float:
    """The lowest, over row kinds, of ``got``'s share of distinct 4-grams over the dense model's (1: as
    varied as the dense model; near 0: collapsed into repetition)."""
    return min(got.diversity[k] / dense.diversity[k] if dense.diversity[k] > 0 else 1.0 for k in got.diversity)


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
        self.windows = eval_windows(ids, length, max(s.infill_windows, s.prompts), s.window_phase)
        self.infill_tasks = [InfillTask.with_spans(self.windows, s.infill_spans, s.infill_span, self.seed + draw)
                             for draw in range(s.draws)]
        self.compressor = PlanCompressor(adapter, calibration, self.settings.calibration_sequences,
                                         self.settings.seed)
        self._dense_cache: dict[tuple[SamplerSettings, str, int], _Measured] = {}
        self._digest: str | None = None
        text = hashlib.sha256(self.windows.numpy().tobytes())
        for prompt in self.user_prompts:
            text.update(b"|" + prompt.numpy().tobytes())
        self._text_digest = text.hexdigest()[:16]

    def _counts(self, fidelity: str) -> tuple[int, int, int]:
        s = self.settings
        if fidelity == "low":
            return _quarter(s.infill_windows), _quarter(s.prompts), _quarter(s.unconditional)
        return s.infill_windows, s.prompts, s.unconditional

    def compressed(self, plan: Plan) -> DLMAdapter:
        """A compressed copy of the dense model (the dense model itself is never changed)."""
        return self.compressor.compressed(plan)

    @property
    def seed(self) -> int:
        """The seed of the first draw (generations, NELBO masks, infill spans): ``settings.seed +
        FULL_SEED_OFFSET``; draw ``d`` uses ``seed + d``."""
        return self.settings.seed + FULL_SEED_OFFSET

    @torch.no_grad()
    def generations(self, model: DLMAdapter, sampler: SamplerSettings, prompts: int,
                    unconditional: int, draw: int = 0) -> torch.Tensor:
        """Generated tokens (prompted rows, then unconditional rows) of one draw, (rows, gen_length).

        Prompted rows use the sampler as the Plan sets it; unconditional rows sample at
        temperature 1 (greedy decoding from an empty prompt would give identical rows).
        """
        seed, settings = self.seed + draw, dataclasses.asdict(sampler)
        none = torch.empty(0, sampler.gen_length, dtype=torch.long)
        if prompts <= 0:
            prompted = none
        elif self.user_prompts:  # prompts of different lengths: one generation each
            prompted = torch.cat([generate(model, p, seed=seed, **settings)[:, p.numel():]
                                  for p in self.user_prompts[:prompts]])
        else:
            length = max(1, min(self.settings.prompt_length, model.shape.max_length - sampler.gen_length))
            prompted = generate(model, self.windows[:prompts, :length], seed=seed, **settings)[:, length:]
        sampled = dataclasses.asdict(dataclasses.replace(sampler, temperature=1.0))
        free = generate(model, torch.empty(unconditional, 0, dtype=torch.long), seed=seed, **sampled) \
            if unconditional > 0 else none
        return torch.cat([prompted.cpu(), free.cpu()])

    def _measure(self, model: DLMAdapter, sampler: SamplerSettings, fidelity: str, draw: int) -> _Measured:
        windows, prompts, free = self._counts(fidelity)
        task = self.infill_tasks[draw]
        tokens = self.generations(model, sampler, prompts, free, draw)
        split = len(tokens) - free  # prompted rows first, then the free ones
        rows = {kind: part for kind, part in zip(ROW_KINDS, (tokens[:split], tokens[split:]), strict=True) if len(part)}
        nelbo = {kind: evaluate_nelbo(self.dense.forward_logits, kind_rows, self.dense.mask_token_id,
                                      seed=self.seed + draw, repeats=self.settings.nelbo_repeats, batch_size=64)
                 for kind, kind_rows in rows.items()}
        infilled = task.fill(model, sampler.steps / sampler.gen_length, sampler.block_length, windows)
        accuracy = float((infilled == task.truth(windows)).float().mean())
        return _Measured(tokens, infilled, accuracy, nelbo,
                         {kind: distinct_ngrams(kind_rows) for kind, kind_rows in rows.items()},
                         collapsed_rows(tokens[:split]))

    def _dense_reference(self, sampler: SamplerSettings, fidelity: str, draw: int) -> _Measured:
        """The dense model with ``sampler`` for this draw: measured once per sampler, fidelity and draw, and
        kept on disk (``$DLMSEARCH_CACHE/full_dense_references``, keyed by the model's weights, the settings
        and the held-out text), so a later evaluator of the same model does not measure it again. The number
        of draws is not in the key: a draw's reference depends on its own seeds only, so a one-draw
        evaluator (front verification, ``dlmsearch measure``) reuses the first draw of a four-draw one."""
        key = (sampler, fidelity, draw)
        if key not in self._dense_cache:
            settings = {name: value for name, value in dataclasses.asdict(self.settings).items() if name != "draws"}
            spec = {**settings, "sampler": dataclasses.asdict(sampler), "fidelity": fidelity,
                    "draw": draw, "text": self._text_digest, "version": DENSE_CACHE_VERSION}
            stored = cached_tensors("full_dense_references", cache_key(self._model_digest(), spec),
                                    lambda: self._measure(self.dense, sampler, fidelity, draw).to_tensors())
            self._dense_cache[key] = _Measured.from_tensors(stored)
        return self._dense_cache[key]

    def _model_digest(self) -> str:
        if self._digest is None:
            self._digest = model_digest(self.dense)
        return self._digest

    def step_cost(self, sampler: SamplerSettings, fidelity: str = "full") -> dict[str, float]:
        """What ``sampler``'s step count costs the dense model itself (Plan-independent): the step part of
        the score, ``step_cost``, and its parts (``<part>_steps``), the mean over the draws."""
        draws = []
        for draw in range(1 if fidelity == "low" else self.settings.draws):
            total, parts = _cost(self._dense_reference(sampler, fidelity, draw),
                                 self._dense_reference(one_token_per_step(sampler), fidelity, draw))
            draws.append({"step_cost": total, **{f"{name}_steps": value for name, value in parts.items()}})
        return {key: statistics.fmean(d[key] for d in draws) for key in draws[0]}

    def _draw(self, model: DLMAdapter, sampler: SamplerSettings, fidelity: str, draw: int) -> dict[str, float]:
        """Score and metrics of one draw: the compression cost (the Plan against the dense model with the
        Plan's own sampler, common random numbers) plus the step cost (the dense model with the Plan's
        sampler against one token per step)."""
        paired = self._dense_reference(sampler, fidelity, draw)
        best = self._dense_reference(one_token_per_step(sampler), fidelity, draw)
        got = self._measure(model, sampler, fidelity, draw)
        prompted = len(got.tokens) - self._counts(fidelity)[2]  # prompted rows first, then the free ones
        compression, compression_parts = _cost(got, paired)
        steps, step_parts = _cost(paired, best)
        kinds = list(got.nelbo)
        per_kind = {f"{prefix}_{k}": value for k in kinds for prefix, value in (
            ("gen_nelbo", got.nelbo[k]), ("gen_diversity", got.diversity[k]),
            ("paired_gen_nelbo", paired.nelbo[k]), ("paired_gen_diversity", paired.diversity[k]),
            ("dense_gen_nelbo", best.nelbo[k]), ("dense_gen_diversity", best.diversity[k]))}
        return {"score": compression + steps, "compression_cost": compression, "step_cost": steps,
                **{f"{name}_compression": value for name, value in compression_parts.items()},
                **{f"{name}_steps": value for name, value in step_parts.items()},
                "gen_gap": compression_parts["gen_gap"] + step_parts["gen_gap"],
                "diversity_gap": compression_parts["diversity_gap"] + step_parts["diversity_gap"],
                "infill_accuracy": got.infill_accuracy,
                "agreement": float((got.infilled == best.infilled).float().mean()),
                "gen_nelbo": statistics.fmean(got.nelbo.values()),
                "gen_diversity": statistics.fmean(got.diversity.values()),
                "distinct4_ratio": distinct_ratio(got, best),
                "collapsed_rows": collapsed_rows(got.tokens[:prompted]),
                "dense_collapsed_rows": collapsed_rows(best.tokens[:prompted]),
                "generation_agreement": float((got.tokens == paired.tokens).float().mean()),
                "dense_infill_accuracy": best.infill_accuracy,
                "dense_gen_nelbo": statistics.fmean(best.nelbo.values()),
                "dense_gen_diversity": statistics.fmean(best.diversity.values()), **per_kind}

    def evaluate(self, plan: Plan, fidelity: str = "full") -> QualityResult:
        """Full quality of ``plan``: infill, generative NELBO with a diversity guard, agreement; the mean
        of ``draws`` draws (one at low fidelity), with their spread as ``score_sd`` and each draw's score as
        ``score_draw<d>``."""
        check_fidelity(fidelity)
        model = self.compressed(plan)
        draws = [self._draw(model, plan.sampler, fidelity, d)
                 for d in range(1 if fidelity == "low" else self.settings.draws)]
        mean = {key: statistics.fmean(d[key] for d in draws) for key in draws[0]}
        score = mean.pop("score")
        spread = statistics.stdev(d["score"] for d in draws) if len(draws) > 1 else 0.0
        each = {f"score_draw{d}": draw["score"] for d, draw in enumerate(draws)}
        return QualityResult(score, {**mean, "score_sd": spread, "draws": float(len(draws)), **each}, fidelity)
