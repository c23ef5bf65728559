"""StudyContext: what every trial of a study needs, built once per worker process from the spec."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from dlmsearch.compress import CalibrationSet
from dlmsearch.cost_models import AnalyticCostModel, HardwareSpec, resolve_hardware
from dlmsearch.evaluators import FullEvaluator, FullSettings, ProxyEvaluator, ProxySettings
from dlmsearch.evaluators.user_text import read_text_ids
from dlmsearch.models.adapters import DLMAdapter
from dlmsearch.models.loading import load_model
from dlmsearch.plan import ModelRef, Plan, SamplerSettings
from dlmsearch.search.isolation import IsolatedEvaluator
from dlmsearch.search.spec import StudySpec
from dlmsearch.spaces import SearchSpace

logger = logging.getLogger("dlmsearch.search.context")

REFERENCE_MARGIN = 1.1


@dataclass
class StudyContext:
    """The model, its search space, the evaluator, the cost model and the hardware of one study."""

    spec: StudySpec
    adapter: DLMAdapter
    space: SearchSpace
    evaluator: ProxyEvaluator | IsolatedEvaluator
    cost_model: AnalyticCostModel
    hardware: HardwareSpec

    def dense_plan(self) -> Plan:
        """The uncompressed model at the space's largest step count: the reference of every study."""
        space, generation = self.spec.space, self.spec.generation
        steps = max(space.steps)
        block = self.space.repair_block_length(steps, max(space.block_lengths))
        sampler = SamplerSettings(steps, generation.gen_length, block, generation.remasking)
        return Plan(self.space.model, sampler, self.space.boundaries, space.weight_storage, {})

    def dense_cost(self) -> dict[str, float]:
        """Latency and memory of :meth:`dense_plan` (what relative budgets are fractions of)."""
        cost = self.cost_model.cost(self.dense_plan(), self.hardware)
        return {"latency_ms": cost.latency_ms, "peak_mem_bytes": float(cost.peak_mem_bytes)}

    def harshest_plans(self) -> list[Plan]:
        """The space's most compressed uniform Plans: its fewest weight and activation bits, its largest
        sparsity and its fewest steps, pruned unstructured and pruned by whole heads and channels where
        the space has both (which hurts more depends on the model); empty when none fits the space."""
        space = self.spec.space
        found = []
        for structured in (False, True):
            params = self.space.preset_params(self.space.weight_bits[0], self.space.act_bits[0],
                                              max(space.sparsity.values()), steps=min(space.steps),
                                              structured=structured)
            plan = None if params is None else self.space.plan_from_params(params)
            if plan is not None and plan not in found:
                found.append(plan)
        return found

    def quality_reference(self) -> float:
        """The quality that maps to 1 in the normalised hypervolume: the spec's ``quality_reference``, or
        else :data:`REFERENCE_MARGIN` times the worst proxy score of :meth:`harshest_plans` (at the
        fidelity the front is scored at), so the space's Plans lie inside the box as they do for
        latency and memory; 1.0 where those Plans score 0 or none exists."""
        if self.spec.quality_reference is not None:
            return self.spec.quality_reference
        if "quality" not in self.spec.objectives:
            return 1.0
        fidelity = "low" if self.spec.evaluator.fidelity == "low" else "full"
        score = max((self.evaluator.evaluate(plan, fidelity).score for plan in self.harshest_plans()), default=0.0)
        logger.info("quality reference %.4f: %.1f x the proxy score of the space's most compressed Plan",
                    score * REFERENCE_MARGIN, REFERENCE_MARGIN)
        return score * REFERENCE_MARGIN if score > 0 else 1.0

    def reference_point(self) -> dict[str, float]:
        """Per objective, the value that maps to 1 in the normalised hypervolume: the dense Plan's
        cost times :data:`REFERENCE_MARGIN` (so the dense Plan itself adds volume) and
        :meth:`quality_reference`."""
        return {"quality": self.quality_reference(),
                **{name: value * REFERENCE_MARGIN for name, value in self.dense_cost().items()}}


def user_texts(spec: StudySpec, adapter: DLMAdapter, calibration_sequences: int, window_length: int, seed: int
               ) -> tuple[torch.Tensor | None, CalibrationSet | None]:
    """The spec's held-out text (``evaluator.data_files``, encoded) and calibration set
    (``evaluator.calibration_files``); None for each the spec leaves to the embedded plays."""
    text_ids = (read_text_ids(adapter, spec.evaluator.data_files, "evaluator.data_files")
                if spec.evaluator.data_files else None)
    calibration = None
    if spec.evaluator.calibration_files:
        ids = read_text_ids(adapter, spec.evaluator.calibration_files, "evaluator.calibration_files")
        calibration = CalibrationSet.from_ids(ids, adapter.mask_token_id, calibration_sequences,
                                              min(window_length, adapter.shape.max_length), seed)
    return text_ids, calibration


def build_evaluator(spec: StudySpec, adapter: DLMAdapter | None = None) -> ProxyEvaluator:
    """The spec's proxy evaluator on ``adapter`` (the spec's model, loaded here when omitted)."""
    adapter = adapter or load_model(spec.model, trust_remote_code=spec.trust_remote_code)
    settings = ProxySettings(**dict(spec.evaluator.settings))
    text_ids, calibration = user_texts(spec, adapter, settings.calibration_sequences, settings.window_length,
                                       settings.seed)
    logger.info("building the proxy evaluator (the dense reference is cached on disk after the first run)")
    return ProxyEvaluator(adapter, settings, text_ids=text_ids, calibration=calibration)


def build_full_evaluator(spec: StudySpec, adapter: DLMAdapter | None = None) -> FullEvaluator:
    """The full evaluator that verifies the spec's front (``verify_settings``), on the spec's held-out and
    calibration text files when it names them."""
    adapter = adapter or load_model(spec.model, trust_remote_code=spec.trust_remote_code)
    settings = FullSettings(**dict(spec.verify_settings))
    text_ids, calibration = user_texts(spec, adapter, settings.calibration_sequences, settings.window_length,
                                       settings.seed)
    return FullEvaluator(adapter, settings, text_ids=text_ids, calibration=calibration)


def build_context(spec: StudySpec, isolation: str | None = None) -> StudyContext:
    """Build the space, the evaluator, the cost model and the hardware of ``spec``.

    ``isolation`` (default: the spec's) ``"process"`` keeps only the model's skeleton here (meta
    tensors: shapes, no weights) and scores Plans in a recycled child process
    (:class:`~dlmsearch.search.isolation.IsolatedEvaluator`); ``"none"`` loads the model and scores here.
    """
    isolation = isolation or spec.isolation
    adapter = load_model(spec.model, trust_remote_code=spec.trust_remote_code, meta=isolation == "process")
    linears = list(adapter.linears())
    space = SearchSpace(spec.space, spec.generation, ModelRef(adapter.name, adapter.shape.fingerprint), linears,
                        adapter.shape)
    hardware = resolve_hardware(spec.hardware, adapter.shape, linears)
    evaluator: ProxyEvaluator | IsolatedEvaluator
    if isolation == "process":
        evaluator = IsolatedEvaluator(spec.to_dict(), spec.recycle_after, torch.get_num_threads())
    else:
        evaluator = build_evaluator(spec, adapter)
    cost_model = AnalyticCostModel(adapter.shape, linears, prompt_length=spec.generation.prompt_length)
    return StudyContext(spec, adapter, space, evaluator, cost_model, hardware)
