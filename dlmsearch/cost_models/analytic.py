"""Analytic roofline cost model, vectorised over many Plans at once.

For every denoising step the plain LLaDA sampler recomputes the whole sequence, so each step
processes ``M = batch * (prompt_length + gen_length)`` tokens. Per step and per linear::

    FLOPs = 2 * M * K * N                 (halved only by 2:4 sparsity with a sparse kernel)
    bytes = K * N * weight_bits / 8 + scales + M * K * act_bytes + M * N * 2
    time  = max(FLOPs / (eta_c(M) * peak[compute dtype]), bytes / (eta_m(M) * bandwidth)) + launch

(the roofline of RESEARCH.md; Williams et al. 2009). The compute dtype is the wider of the weight
and activation types: W4A16 runs at the bf16 peak with 4-bit weight bytes, when the hardware has
a weight-only kernel for it; without a kernel the weight is dequantized and costs 16-bit bytes.
W8A8 runs at the int8 peak with an int8 dynamic kernel. Structured pruning shrinks K or N;
unstructured sparsity changes nothing (no sparse kernel runs it). Attention adds
``4 * M * L * heads * head_dim`` FLOPs per layer (L = M, bidirectional), the LM head
``2 * M * d * V``, and norms, activations and sampling are memory-bound passes over their tensors.
Step time is summed over the Plan's steps, each step at its timestep group's precision.

Memory: resident weights (``copies``: one copy per distinct bit-width a layer uses; ``nested``:
one master slice at the layer's highest precision, see :func:`dlmsearch.compress.quantize.nested_from_master`),
their scales and zero points (fp16 each per group), a 16-bit copy where a group runs at 16 bits,
the embeddings and LM head at 16 bits, activations at the peak layer, and fp32 logits and
probabilities. The plain sampler keeps no KV cache.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dlmsearch.cost_models.base import BaseCostModel, CostResult
from dlmsearch.cost_models.hardware_spec import HardwareSpec
from dlmsearch.models.adapters import ATTENTION_ROLES, LinearInfo, ModelShape
from dlmsearch.plan import LayerPlan, Plan

DENSE_BYTES = 2  # bf16 / fp16 weights and activations
SCALE_BYTES_PER_GROUP = 4  # fp16 scale + fp16 zero point
_STRUCTURES = {"unstructured": 0, "2:4": 1, "heads": 2, "channels": 3}


@dataclass(frozen=True)
class PlanArrays:
    """Plans encoded as arrays: P plans x n linears x G timestep groups."""

    weight_bits: np.ndarray  # (P, n, G)
    act_bits: np.ndarray  # (P, n, G)
    sparsity: np.ndarray  # (P, n)
    structure: np.ndarray  # (P, n) codes of _STRUCTURES
    group_size: np.ndarray  # (P, n), the layer width where 0 (per channel)
    steps_per_group: np.ndarray  # (P, G) steps that run at each group's precision
    tokens: np.ndarray  # (P,) M, tokens recomputed per step
    nested: np.ndarray  # (P,) bool


def steps_per_group(steps: int, boundaries: Sequence[float]) -> list[int]:
    """How many of ``steps`` fall in each timestep group (step k has progress k / steps)."""
    edges = [0, *(math.ceil(b * steps - 1e-9) for b in boundaries), steps]
    return [edges[i + 1] - edges[i] for i in range(len(edges) - 1)]


class AnalyticCostModel(BaseCostModel):
    """Roofline latency and memory of Plans for one model shape (see the module docstring)."""

    def __init__(self, shape: ModelShape, linears: Sequence[LinearInfo], prompt_length: int = 0,
                 batch_size: int = 1) -> None:
        self.shape = shape
        self.linears = list(linears)
        self.prompt_length = prompt_length
        self.batch_size = batch_size
        self._in = np.array([i.in_features for i in self.linears], dtype=np.float64)
        self._out = np.array([i.out_features for i in self.linears], dtype=np.float64)
        self._attention = np.array([i.role in ATTENTION_ROLES for i in self.linears])
        self._shrinks_out = np.array([i.role in ("q", "k", "v", "gate", "up") for i in self.linears])
        self._block = np.array([i.block for i in self.linears])

    # ------------------------------------------------------------ encoding

    def encode(self, plans: Sequence[Plan]) -> PlanArrays:
        """Arrays of ``plans`` (layers a Plan does not list stay dense).

        Built from Python lists and converted once: per-element numpy writes would make encoding,
        not the roofline arithmetic, the bottleneck of a search's cost pass.
        """
        groups = max(p.num_timestep_groups for p in plans)
        names = [info.name for info in self.linears]
        widths = [info.in_features for info in self.linears]
        dense = LayerPlan(weight_bits=(16,) * groups, act_bits=(16,) * groups, sparsity=0.0, group_size=0)
        wb, ab, sparsity, structure, group, steps, tokens, nested = [], [], [], [], [], [], [], []
        for plan in plans:
            pad = (16,) * (groups - plan.num_timestep_groups)
            entries = [plan.layers.get(name, dense) for name in names]
            wb.append([lp.weight_bits + pad for lp in entries])
            ab.append([lp.act_bits + pad for lp in entries])
            sparsity.append([lp.sparsity for lp in entries])
            structure.append([_STRUCTURES[lp.structure] for lp in entries])
            group.append([lp.group_size or width for lp, width in zip(entries, widths, strict=True)])
            per_group = steps_per_group(plan.sampler.steps, plan.timestep_groups)
            steps.append(per_group + [0] * (groups - len(per_group)))
            tokens.append(self.batch_size * (self.prompt_length + plan.sampler.gen_length))
            nested.append(plan.weight_storage == "nested")
        return PlanArrays(np.array(wb, dtype=np.float64), np.array(ab, dtype=np.float64),
                          np.array(sparsity, dtype=np.float64), np.array(structure, dtype=np.int64),
                          np.array(group, dtype=np.float64), np.array(steps, dtype=np.float64),
                          np.array(tokens, dtype=np.float64), np.array(nested, dtype=bool))

    # ------------------------------------------------------------ shapes

    def _effective_shapes(self, a: PlanArrays) -> tuple[np.ndarray, np.ndarray]:
        """(K, N) per plan and linear after structured pruning."""
        structured = (a.structure >= 2) & (a.sparsity > 0)
        keep = np.where(structured, 1.0 - a.sparsity, 1.0)
        k = np.where(self._shrinks_out, self._in, self._in * keep)
        n = np.where(self._shrinks_out, self._out * keep, self._out)
        return k, n

    # ------------------------------------------------------------ latency

    def step_times(self, a: PlanArrays, hw: HardwareSpec) -> dict[str, np.ndarray]:
        """Seconds per step for each plan and timestep group, split into parts ((P, G) each)."""
        k, n = (x[:, :, None] for x in self._effective_shapes(a))
        m = a.tokens[:, None, None]
        eta_c = np.vectorize(hw.compute_efficiency)(a.tokens)[:, None, None]
        eta_m = np.vectorize(hw.memory_efficiency)(a.tokens)[:, None, None]
        wb, ab = a.weight_bits, a.act_bits
        int8_dynamic = (ab == 8) & (wb <= 8) & hw.has_kernel("int8_dynamic")
        weight_only_kernel = np.where(wb == 8, hw.has_kernel("int8_weight_only"), hw.has_kernel("int4_weight_only"))
        weight_only = (wb < 16) & ~int8_dynamic & weight_only_kernel
        stored_bits = np.where(int8_dynamic, 8.0, np.where(weight_only, np.where(wb == 8, 8.0, 4.0), 16.0))
        scale_bytes = np.where(stored_bits < 16, k * n / a.group_size[:, :, None] * SCALE_BYTES_PER_GROUP, 0.0)
        act_bytes = np.where(int8_dynamic, 1.0, DENSE_BYTES)
        peak = np.where(int8_dynamic, hw.peak("int8"), hw.peak("bf16"))
        two_four = (a.structure == 1)[:, :, None] & (a.sparsity == 0.5)[:, :, None] & hw.has_kernel("sparse_2_4")
        flops = 2.0 * m * k * n * np.where(two_four, 0.5, 1.0)
        data = k * n * stored_bits / 8 + scale_bytes + m * k * act_bytes + m * n * DENSE_BYTES
        linear = np.maximum(flops / (eta_c * peak), data / (eta_m * hw.memory_bandwidth_bytes_per_s))
        linear_s = (linear + hw.launch_overhead_s).sum(axis=1)

        s = self.shape
        tokens = a.tokens[:, None]
        head_keep = self._block_keep(a, attention=True)  # (P, layers)
        heads = s.num_heads * head_keep
        attn_flops = (4.0 * tokens * tokens * heads * s.head_dim).sum(axis=1, keepdims=True)
        attn_bytes = (4.0 * tokens * heads * s.head_dim * DENSE_BYTES).sum(axis=1, keepdims=True)
        eta_c2, eta_m2 = eta_c[:, :, 0], eta_m[:, :, 0]
        bw = hw.memory_bandwidth_bytes_per_s
        attention_s = np.maximum(attn_flops / (eta_c2 * hw.peak("bf16")), attn_bytes / (eta_m2 * bw))
        attention_s = attention_s + 2 * s.num_layers * hw.launch_overhead_s
        channels = s.intermediate_size * self._block_keep(a, attention=False)
        elementwise_bytes = (tokens * (6 * s.hidden_size + 3 * channels) * DENSE_BYTES).sum(axis=1, keepdims=True)
        other_s = elementwise_bytes / (eta_m2 * bw) + 4 * s.num_layers * hw.launch_overhead_s
        head_flops = 2.0 * tokens * s.hidden_size * s.vocab_size
        head_bytes = s.hidden_size * s.vocab_size * DENSE_BYTES + tokens * s.vocab_size * 4
        lm_head_s = np.maximum(head_flops / (eta_c2 * hw.peak("bf16")), head_bytes / (eta_m2 * bw))
        sampling_s = 3 * tokens * s.vocab_size * 4 / (eta_m2 * bw) + 4 * hw.launch_overhead_s
        groups = linear_s.shape[1]
        return {"linear": linear_s, "attention": np.repeat(attention_s, groups, 1),
                "elementwise": np.repeat(other_s, groups, 1), "lm_head": np.repeat(lm_head_s, groups, 1),
                "sampling": np.repeat(sampling_s, groups, 1)}

    def _block_keep(self, a: PlanArrays, attention: bool) -> np.ndarray:
        """(P, layers) fraction of heads (attention) or MLP channels kept per block."""
        structure = 2 if attention else 3
        kind = self._attention if attention else ~self._attention
        keep = np.ones((a.sparsity.shape[0], self.shape.num_layers))
        for block in range(self.shape.num_layers):
            columns = np.flatnonzero((self._block == block) & kind)
            if columns.size == 0:
                continue
            pruned = (a.structure[:, columns] == structure) & (a.sparsity[:, columns] > 0)
            keep[:, block] = np.where(pruned.any(axis=1), 1.0 - a.sparsity[:, columns].max(axis=1), 1.0)
        return keep

    def latency_ms(self, a: PlanArrays, hw: HardwareSpec) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Whole-generation latency (P,) in ms and its parts in ms (summed over the steps)."""
        parts = {name: (t * a.steps_per_group).sum(axis=1) * 1e3 for name, t in self.step_times(a, hw).items()}
        return np.sum(list(parts.values()), axis=0), parts

    # ------------------------------------------------------------ memory

    def memory_bytes(self, a: PlanArrays) -> dict[str, np.ndarray]:
        """Peak memory parts (P,) in bytes."""
        k, n = self._effective_shapes(a)
        wb = a.weight_bits
        quantized = wb < 16
        scale = k * n / a.group_size * SCALE_BYTES_PER_GROUP
        distinct = np.zeros_like(k)
        for bits in (2, 3, 4, 8):
            distinct += (wb == bits).any(axis=2) * bits
        top = np.where(quantized, wb, 0).max(axis=2)
        copies_count = sum(((wb == b).any(axis=2)).astype(float) for b in (2, 3, 4, 8))
        packed = np.where(a.nested[:, None], top, distinct) * k * n / 8
        scales = np.where(a.nested[:, None], np.where(top > 0, 1.0, 0.0), copies_count) * scale
        dense16 = (wb == 16).any(axis=2) * k * n * DENSE_BYTES
        s = self.shape
        embeddings = np.full(len(a.tokens), 2.0 * s.vocab_size * s.hidden_size * DENSE_BYTES)
        tokens = a.tokens
        channels = s.intermediate_size * self._block_keep(a, attention=False).max(axis=1)
        activations = tokens * (4 * s.hidden_size + 3 * channels) * DENSE_BYTES
        logits = 2 * tokens * s.vocab_size * 4
        return {"weights": (packed + scales + dense16).sum(axis=1) + embeddings, "activations": activations,
                "logits": logits, "kv_cache": np.zeros(len(tokens))}

    # ------------------------------------------------------------ the protocol

    def cost_many(self, plans: Sequence[Plan], hardware: HardwareSpec) -> list[CostResult]:
        """Costs of many Plans in one vectorised pass."""
        arrays = self.encode(plans)
        latency, parts = self.latency_ms(arrays, hardware)
        memory = self.memory_bytes(arrays)
        total = np.sum(list(memory.values()), axis=0)
        results = []
        for p, plan in enumerate(plans):
            breakdown = {f"{name}_ms": float(v[p]) for name, v in parts.items()}
            breakdown.update({f"{name}_bytes": float(v[p]) for name, v in memory.items()})
            breakdown["latency_per_step_ms"] = float(latency[p]) / plan.sampler.steps
            results.append(CostResult(float(latency[p]), int(total[p]), "analytic", breakdown))
        return results

    def cost(self, plan: Plan, hardware: HardwareSpec) -> CostResult:
        """Latency and memory of one Plan (see :meth:`cost_many` for many)."""
        return self.cost_many([plan], hardware)[0]
