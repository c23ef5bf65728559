"""Analytic roofline cost model, vectorised over many Plans at once.

For every denoising step the plain LLaDA sampler recomputes the whole sequence, so each step
processes ``M = batch * (prompt_length + gen_length)`` tokens. Per step and per linear::

    FLOPs = 2 * M * K * N                 (2:4 sparsity runs dense: apply_plan_ has no sparse kernel)
    bytes = K * N * weight_bits / 8 + scales + M * K * act_bytes + M * N * dense_bytes
    time  = max(FLOPs / (eta_c(M) * peak[compute dtype]), bytes / (eta_m(M) * bandwidth)) + launch

(the roofline of RESEARCH.md; Williams et al. 2009). Which real kernels may run is
:func:`kernels_that_run`: the target's listed kernels that ``apply_plan_``'s ``use_kernels`` allows
on its device type (:func:`dlmsearch.compress.kernels.kernels_for`, the one place that decides
it: by default those measured faster than the float matmul there -- ``int8_fbgemm`` on CPUs, none
on CUDA, so a GPU target prices every quantized layer as ``simulated`` unless ``use_kernels=True``
asks for the real kernels, which were all slower than bf16 on an H200). Which format
runs follows :func:`dlmsearch.compress.kernels.select_kernel`, restated over arrays: on CPUs W8A8
runs ``int8_fbgemm`` (int8 peak, any group size: it requantizes per channel); W8A8 runs the
``int8_dynamic`` kernel (int8 peak, 1-byte activations) when the weight is 8-bit *per channel*;
other 8-bit per-channel weights run ``int8_weight_only``; 2/3/4-bit weights whose group is a
multiple of 32 (and ``N % 16 == 0`` on CPUs, ``N % 8 == 0`` and ``K % 32 == 0`` on GPUs) run
``int4_weight_only``; both weight-only kernels compute in the model's dense dtype. Every other
quantized weight is dequantized once and multiplied densely (dense bytes, dense peak; format
``simulated``, which a profile times separately because the quantized layer adds Python work): per-group
8-bit weights, for example, have no kernel and cost dense time. Activations quantized outside a
W8A8 kernel cost :data:`FAKE_QUANT_PASSES` read+write passes over the input. Structured pruning
shrinks K or N; unstructured sparsity changes nothing (no sparse kernel runs it). Attention adds
``4 * M * L * heads * head_dim`` FLOPs per layer (L = M, bidirectional), the LM head
``2 * M * d * V``, and norms, activations and sampling are memory-bound passes over their tensors
(``mlp_act``, the MLP's activation and product, apart: it is the only one MLP channel pruning shrinks).
Step time is summed over the Plan's steps, each step at its timestep group's precision. Dense
bytes and the dense peak are those of the dtype the model runs in (:func:`default_dense_dtype`:
float32 on CPUs, as ``load_model`` loads it; bf16 on accelerators).

A measured profile (:mod:`dlmsearch.cost_models.profile`) replaces the datasheet efficiencies:
each part with a measured curve costs ``ideal / eta_f(M)``, where ``ideal`` is the roofline above
at full peak and bandwidth without launch overhead and ``eta_f`` the format's (or part's)
measured fraction of it; :meth:`AnalyticCostModel.ideal_part_times` is the exact ``ideal`` the
profile calibrates against.

Memory: resident weights under a :class:`WeightLayout`. ``packed`` (a deployment, the default):
codes at their bit-width (``copies``: one copy per distinct bit-width a layer uses; ``nested``: one
master slice at the layer's highest precision, see
:func:`dlmsearch.compress.quantize.nested_from_master`), fp16 scale and zero point per group, a
dense copy where a group runs at 16 bits. ``runtime`` (what :class:`~dlmsearch.compress.
quantized_linear.QuantizedLinear` holds): one byte per code, float32 scales and zeros, plus the
kernel-packed operand of every kernel a group runs and the dequantized dense weight of every
bit-width without a kernel. Both add the embeddings and LM head in the dense dtype, activations
at the peak layer, and fp32 logits and probabilities. The plain sampler keeps no KV cache.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from dlmsearch.compress.kernels import kernels_for
from dlmsearch.cost_models.base import BaseCostModel, CostResult
from dlmsearch.cost_models.hardware_spec import HardwareSpec
from dlmsearch.models.adapters import ATTENTION_ROLES, LinearInfo, ModelShape
from dlmsearch.plan import LayerPlan, Plan

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
SCALE_BYTES_PER_GROUP = 4  # fp16 scale + fp16 zero point
FAKE_QUANT_PASSES = 4  # absmax, divide+round, clamp, rescale: read+write passes over a quantized input
TINYGEMM_GROUPS = (256, 128, 64, 32)  # group sizes the int4 kernels take (compress.kernels)
_STRUCTURES = {"unstructured": 0, "2:4": 1, "heads": 2, "channels": 3}
#: Format codes of a linear in one timestep group: dense (the model's dtype) or a real kernel.
DENSE, INT8_DYNAMIC, INT8_WEIGHT_ONLY, INT4_WEIGHT_ONLY, SIMULATED, INT8_FBGEMM = 0, 1, 2, 3, 4, 5
KERNEL_FORMATS = {INT8_DYNAMIC: "int8_dynamic", INT8_WEIGHT_ONLY: "int8_weight_only",
                  INT4_WEIGHT_ONLY: "int4_weight_only", SIMULATED: "simulated", INT8_FBGEMM: "int8_fbgemm"}
#: Formats whose kernel quantizes its own activations (int8 peak, no fake-quant passes).
_W8A8 = (INT8_DYNAMIC, INT8_FBGEMM)
#: Framework calls per step part, each paying ``launch_overhead_s`` (eager PyTorch / HF Llama block:
#: two RMSNorms of ~7 ops, rotary embedding ~12, reshapes, residual adds, SiLU and product).
ATTENTION_LAUNCHES_PER_LAYER = 4  # repeat_kv / transpose / SDPA / reshape
ELEMENTWISE_LAUNCHES_PER_LAYER = 34  # all but the MLP's activation and product
MLP_ACT_LAUNCHES_PER_LAYER = 2  # SiLU(gate) and its product with up: the only passes over MLP channels
LM_HEAD_LAUNCHES = 8  # embedding, final norm, rotary tables, attention mask, head
SAMPLING_LAUNCHES = 10  # mask fill, argmax, softmax, gather, masked_fill, topk, scatter, where
PARTS: tuple[str, ...] = ("linear", "act_quant", "attention", "elementwise", "mlp_act", "lm_head", "sampling")


@dataclass(frozen=True)
class WeightLayout:
    """How a runtime keeps compressed weights in memory (what the memory model counts)."""

    name: str
    packed_codes: bool  # True: codes take their bit-width; False: one byte per code
    scale_bytes_per_group: int  # scale + zero point of one group
    kernel_copies: bool  # each kernel a layer runs keeps its packed operand beside the codes
    dequantized_copies: bool  # each bit-width without a kernel keeps a dense dequantized weight


LAYOUTS: dict[str, WeightLayout] = {
    "packed": WeightLayout("packed", True, SCALE_BYTES_PER_GROUP, False, False),
    "runtime": WeightLayout("runtime", False, 8, True, True),
}


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
    per_channel: np.ndarray  # (P, n) bool: one scale per output channel (group 0 or the full width)


def default_dense_dtype(hw: HardwareSpec) -> str:
    """The dtype a model runs in on ``hw`` unless told otherwise: ``fp32`` on a CPU (``load_model``'s
    default; most CPUs emulate bf16 matmuls several times slower), ``bf16`` on accelerators."""
    return "fp32" if hw.kind == "cpu" else "bf16"


def target_device_type(hw: HardwareSpec) -> str:
    """The torch device type a model targeting ``hw`` runs on (``cuda`` for GPUs, else ``cpu``)."""
    return "cuda" if hw.kind == "gpu" else "cpu"


def kernels_that_run(hw: HardwareSpec, use_kernels: bool | None = None) -> frozenset[str]:
    """The real kernels quantized layers may run on ``hw``: those the spec lists that ``use_kernels``
    (as given to ``apply_plan_``) allows on the target's device type.

    None, the default, is decided in one place, :func:`dlmsearch.compress.kernels.kernels_for`:
    the kernels measured faster than the float matmul on the device type at a DLM step's token
    counts. On CPUs only ``int8_fbgemm`` (torch's int8 / int4 weight-only kernels there are many
    times slower than a float32 matmul); on CUDA none (torch's int8 / int4 weight-only and W8A8
    kernels ran at 0.004-0.15x bf16's speed on an H200). Layers without a kernel run
    dequantize-then-matmul, format ``simulated``.
    """
    return kernels_for(target_device_type(hw), use_kernels) & frozenset(hw.kernels)


def steps_per_group(steps: int, boundaries: Sequence[float]) -> list[int]:
    """How many of ``steps`` fall in each timestep group (step k has progress k / steps)."""
    edges = [0, *(math.ceil(b * steps - 1e-9) for b in boundaries), steps]
    return [edges[i + 1] - edges[i] for i in range(len(edges) - 1)]


def _layer_row(weight_bits: tuple[int, ...], act_bits: tuple[int, ...], sparsity: float, structure: str,
               group_size: int, groups: int) -> tuple[tuple[int, ...], tuple[int, ...], float, int, int]:
    # padding repeats the last group: no new bit-width to store (padded groups run no steps)
    pad = groups - len(weight_bits)
    return (weight_bits + weight_bits[-1:] * pad, act_bits + act_bits[-1:] * pad, sparsity, _STRUCTURES[structure],
            group_size)


class AnalyticCostModel(BaseCostModel):
    """Roofline latency and memory of Plans for one model shape (see the module docstring).

    ``dense_dtype`` is the dtype the model runs in: it sets dense bytes and the dense peak; None
    (the default) takes :func:`default_dense_dtype` of the target (``fp32`` on a CPU, where
    ``load_model`` keeps float32 and bf16 matmuls are emulated, ``bf16`` on accelerators).
    ``use_kernels`` says which real low-bit kernels quantized layers run; None (the default)
    takes the decision ``apply_plan_`` makes by default on the target (:func:`kernels_that_run`):
    fbgemm's int8 for W8A8 on CPUs, dequantize-then-matmul (``simulated``) for the rest and for
    every quantized layer on a GPU. ``layout`` is ``"packed"`` or
    ``"runtime"`` (see :data:`LAYOUTS`).
    """

    def __init__(self, shape: ModelShape, linears: Sequence[LinearInfo], prompt_length: int = 0,
                 batch_size: int = 1, dense_dtype: str | None = None, layout: str | WeightLayout = "packed",
                 use_kernels: bool | None = None) -> None:
        if dense_dtype is not None and dense_dtype not in DTYPE_BYTES:
            raise ValueError(f"dense_dtype={dense_dtype!r}; allowed: {', '.join(DTYPE_BYTES)}")
        if isinstance(layout, str) and layout not in LAYOUTS:
            raise ValueError(f"layout={layout!r}; allowed: {', '.join(LAYOUTS)}")
        self.shape = shape
        self.linears = list(linears)
        self.prompt_length = prompt_length
        self.batch_size = batch_size
        self.dense_dtype = dense_dtype
        self.use_kernels = use_kernels
        self.layout = LAYOUTS[layout] if isinstance(layout, str) else layout
        self._names = tuple(info.name for info in self.linears)
        self._in = np.array([i.in_features for i in self.linears], dtype=np.float64)
        self._out = np.array([i.out_features for i in self.linears], dtype=np.float64)
        self._attention = np.array([i.role in ATTENTION_ROLES for i in self.linears])
        self._shrinks_out = np.array([i.role in ("q", "k", "v", "gate", "up") for i in self.linears])
        self._block = np.array([i.block for i in self.linears])
        self._dense_plans: dict[int, LayerPlan] = {}
        self._steps_cache: dict[tuple[int, tuple[float, ...], int], list[int]] = {}

    # ------------------------------------------------------------ encoding

    def encode(self, plans: Sequence[Plan]) -> PlanArrays:
        """Arrays of ``plans`` (layers a Plan does not list stay dense).

        Plans share LayerPlan objects (a search space builds one per layer group), so each distinct
        object is encoded once and the (P, n) arrays are gathered from that small table.
        """
        groups = max(p.num_timestep_groups for p in plans)
        dense = self._dense_plans.setdefault(groups, LayerPlan((16,) * groups, (16,) * groups, group_size=0))
        names, count = self._names, len(self._names)
        flat: list[LayerPlan] = []
        steps, gen, nested = [], [], []
        cache = self._steps_cache
        for plan in plans:
            layers = plan.layers
            if len(layers) == count and tuple(layers) == names:
                flat.extend(layers.values())
            else:
                get = layers.get
                flat.extend([get(name, dense) for name in names])
            sampler = plan.sampler
            key = (sampler.steps, plan.timestep_groups, groups)
            per_group = cache.get(key)
            if per_group is None:
                per_group = steps_per_group(sampler.steps, plan.timestep_groups)
                per_group = cache[key] = per_group + [0] * (groups - len(per_group))
            steps.append(per_group)
            gen.append(sampler.gen_length)
            nested.append(plan.weight_storage == "nested")
        ids = np.fromiter(map(id, flat), dtype=np.int64, count=len(flat))
        _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
        # distinct objects may still be equal values: encode each value once (LayerPlan is hashable)
        rows: dict[tuple[tuple[int, ...], tuple[int, ...], float, str, int], int] = {}
        setdefault = rows.setdefault
        value_index = np.array([setdefault((lp.weight_bits, lp.act_bits, lp.sparsity, lp.structure, lp.group_size),
                                           len(rows))
                                for lp in map(flat.__getitem__, first.tolist())], dtype=np.int64)
        inverse = value_index[inverse.reshape(len(plans), count)]
        table = [_layer_row(wb_, ab_, sp_, st_, gs_, groups) for wb_, ab_, sp_, st_, gs_ in rows]
        wb = np.array([r[0] for r in table], dtype=np.float64)[inverse]
        ab = np.array([r[1] for r in table], dtype=np.float64)[inverse]
        sparsity = np.array([r[2] for r in table], dtype=np.float64)[inverse]
        structure = np.array([r[3] for r in table], dtype=np.int64)[inverse]
        raw_group = np.array([r[4] for r in table], dtype=np.float64)[inverse]
        group = np.where(raw_group == 0, self._in, raw_group)
        tokens = self.batch_size * (self.prompt_length + np.array(gen, dtype=np.float64))
        return PlanArrays(wb, ab, sparsity, structure, group, np.array(steps, dtype=np.float64), tokens,
                          np.array(nested, dtype=bool), group == self._in)

    # ------------------------------------------------------------ shapes and formats

    def _effective_shapes(self, a: PlanArrays) -> tuple[np.ndarray, np.ndarray]:
        """(K, N) per plan and linear after structured pruning."""
        structured = (a.structure >= 2) & (a.sparsity > 0)
        keep = np.where(structured, 1.0 - a.sparsity, 1.0)
        k = np.where(self._shrinks_out, self._in, self._in * keep)
        n = np.where(self._shrinks_out, self._out * keep, self._out)
        return k, n

    def formats(self, a: PlanArrays, hw: HardwareSpec) -> np.ndarray:
        """(P, n, G) format code per linear and timestep group (:data:`DENSE` or a kernel code)."""
        k, n = self._effective_shapes(a)
        wb, ab = a.weight_bits, a.act_bits
        per_channel = a.per_channel[:, :, None]
        runs = kernels_that_run(hw, self.use_kernels)
        has = {name: name in runs for name in ("int8_fbgemm", "int8_dynamic", "int8_weight_only",
                                               "int4_weight_only")}
        int8_fbgemm = (wb == 8) & (ab == 8) & (has["int8_fbgemm"] and hw.kind == "cpu")
        int8_dynamic = (wb == 8) & (ab == 8) & ~int8_fbgemm & per_channel & has["int8_dynamic"]
        int8_weight_only = (wb == 8) & ~int8_dynamic & ~int8_fbgemm & per_channel & has["int8_weight_only"]
        span_ok = (a.group_size % TINYGEMM_GROUPS[-1] == 0)
        shape_ok = (n % 16 == 0) if hw.kind == "cpu" else (n % 8 == 0) & (k % 32 == 0)
        int4 = (wb <= 4) & (span_ok & shape_ok)[:, :, None] & has["int4_weight_only"]
        quantized = (wb < 16) | (ab < 16)  # a QuantizedLinear: without a kernel it dequantizes (simulates)
        return np.where(int8_fbgemm, INT8_FBGEMM, np.where(int8_dynamic, INT8_DYNAMIC, np.where(
            int8_weight_only, INT8_WEIGHT_ONLY, np.where(int4, INT4_WEIGHT_ONLY, np.where(quantized, SIMULATED,
                                                                                           DENSE)))))

    # ------------------------------------------------------------ latency

    def _linear_terms(self, a: PlanArrays, hw: HardwareSpec) -> tuple[np.ndarray, ...]:
        """(format, FLOPs, bytes, peak, fake-quant bytes) per plan, linear and group."""
        k2, n2 = self._effective_shapes(a)
        k, n = k2[:, :, None], n2[:, :, None]
        m = a.tokens[:, None, None]
        fmt = self.formats(a, hw)
        dtype = self.dtype_for(hw)
        db = DTYPE_BYTES[dtype]
        dense = (fmt == DENSE) | (fmt == SIMULATED)
        stored_bits = np.where(fmt == INT4_WEIGHT_ONLY, 4.0, np.where(dense, 8.0 * db, 8.0))
        scale_bytes = np.where(~dense, k * n / a.group_size[:, :, None] * SCALE_BYTES_PER_GROUP, 0.0)
        w8a8 = np.isin(fmt, _W8A8)
        act_bytes = np.where(fmt == INT8_DYNAMIC, 1.0, np.where(fmt == INT8_FBGEMM, db + 1.0, db))
        peak = np.where(w8a8, hw.peak("int8"), hw.peak(dtype))
        flops = 2.0 * m * k * n
        data = k * n * stored_bits / 8 + scale_bytes + m * k * act_bytes + m * n * db
        fake = np.where((a.act_bits < 16) & ~w8a8, 2.0 * FAKE_QUANT_PASSES * m * k * db, 0.0)
        return fmt, flops, data, peak, fake

    def _other_terms(self, a: PlanArrays, hw: HardwareSpec) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
        """(FLOPs, bytes, launches) per plan (P, 1) of the non-linear parts of one step."""
        s, db = self.shape, DTYPE_BYTES[self.dtype_for(hw)]
        tokens = a.tokens[:, None]
        heads = s.num_heads * self._block_keep(a, attention=True)  # (P, layers)
        attn_flops = (4.0 * tokens * tokens * heads * s.head_dim).sum(axis=1, keepdims=True)
        attn_bytes = (4.0 * tokens * heads * s.head_dim * db).sum(axis=1, keepdims=True)
        channels = s.intermediate_size * self._block_keep(a, attention=False)
        elementwise_bytes = tokens * 6.0 * s.hidden_size * db * s.num_layers  # norms, rotary, residual adds
        mlp_act_bytes = (tokens * 3 * channels * db).sum(axis=1, keepdims=True)  # what MLP channel pruning shrinks
        zero = np.zeros_like(tokens)
        return {"attention": (attn_flops, attn_bytes, ATTENTION_LAUNCHES_PER_LAYER * s.num_layers),
                "elementwise": (zero, elementwise_bytes, ELEMENTWISE_LAUNCHES_PER_LAYER * s.num_layers),
                "mlp_act": (zero, mlp_act_bytes, MLP_ACT_LAUNCHES_PER_LAYER * s.num_layers),
                "lm_head": (2.0 * tokens * s.hidden_size * s.vocab_size,
                            s.hidden_size * s.vocab_size * db + tokens * s.vocab_size * 4, LM_HEAD_LAUNCHES),
                "sampling": (zero, 3 * tokens * s.vocab_size * 4, SAMPLING_LAUNCHES)}

    def part_launches(self) -> dict[str, int]:
        """Framework calls per step of each non-linear part (each pays the launch overhead)."""
        s = self.shape
        return {"attention": ATTENTION_LAUNCHES_PER_LAYER * s.num_layers,
                "elementwise": ELEMENTWISE_LAUNCHES_PER_LAYER * s.num_layers,
                "mlp_act": MLP_ACT_LAUNCHES_PER_LAYER * s.num_layers, "lm_head": LM_HEAD_LAUNCHES,
                "sampling": SAMPLING_LAUNCHES}

    def ideal_part_times(self, a: PlanArrays, hw: HardwareSpec) -> dict[str, np.ndarray]:
        """Roofline seconds per step at full peak and bandwidth, no launch overhead, per part ((P, G) each).

        ``linear`` is split further by format: ``linear:<format>`` for the dense dtype and each kernel.
        """
        fmt, flops, data, peak, fake = self._linear_terms(a, hw)
        bw, dtype = hw.memory_bandwidth_bytes_per_s, self.dtype_for(hw)
        ideal = np.maximum(flops / peak, data / bw)
        out = {f"linear:{name}": np.where(fmt == code, ideal, 0.0).sum(axis=1)
               for code, name in ((DENSE, dtype), *KERNEL_FORMATS.items())}
        out["act_quant"] = (fake / bw).sum(axis=1)
        groups = fmt.shape[2]
        for part, (part_flops, part_bytes, _) in self._other_terms(a, hw).items():
            dense_peak = hw.peak(dtype)
            out[part] = np.repeat(np.maximum(part_flops / dense_peak, part_bytes / bw), groups, 1)
        return out

    def step_times(self, a: PlanArrays, hw: HardwareSpec) -> dict[str, np.ndarray]:
        """Seconds per step for each plan and timestep group, split into parts ((P, G) each)."""
        fmt, flops, data, peak, fake = self._linear_terms(a, hw)
        bw, launch, dtype = hw.memory_bandwidth_bytes_per_s, hw.launch_overhead_s, self.dtype_for(hw)
        unique, where = np.unique(a.tokens, return_inverse=True)
        eta_c = hw.compute_efficiency.many(unique)[where][:, None, None]
        eta_m = hw.memory_efficiency.many(unique)[where][:, None, None]
        linear = np.maximum(flops / (eta_c * peak), data / (eta_m * bw)) + launch
        ideal = np.maximum(flops / peak, data / bw)
        for code, name in ((DENSE, dtype), *KERNEL_FORMATS.items()):
            curve = hw.part_efficiency(name)
            if curve is None and code == SIMULATED:
                curve = hw.part_efficiency(dtype)  # dequantized weights multiply densely
            if curve is not None:
                eta = curve.many(unique)[where][:, None, None]
                linear = np.where(fmt == code, ideal / eta + launch, linear)
        act_curve = hw.part_efficiency("act_quant")
        act_eta = act_curve.many(unique)[where][:, None, None] if act_curve is not None else eta_m
        act_quant = np.where(fake > 0, fake / (act_eta * bw) + (0.0 if act_curve is not None else launch), 0.0)
        parts = {"linear": linear.sum(axis=1), "act_quant": act_quant.sum(axis=1)}
        groups = fmt.shape[2]
        dense_peak = hw.peak(dtype)
        for part, (part_flops, part_bytes, launches) in self._other_terms(a, hw).items():
            curve = hw.part_efficiency(part)
            if curve is not None:
                seconds = (np.maximum(part_flops / dense_peak, part_bytes / bw) / curve.many(unique)[where][:, None]
                           + launches * launch)
            else:
                c, m_ = eta_c[:, :, 0], eta_m[:, :, 0]
                seconds = np.maximum(part_flops / (c * dense_peak), part_bytes / (m_ * bw)) + launches * launch
            parts[part] = np.repeat(seconds, groups, 1)
        return parts

    def _block_keep(self, a: PlanArrays, attention: bool) -> np.ndarray:
        """(P, layers) fraction of heads (attention) or MLP channels kept per block."""
        structure = 2 if attention else 3
        kind = self._attention if attention else ~self._attention
        keep = np.ones((a.sparsity.shape[0], self.shape.num_layers))
        pruned_all = (a.structure == structure) & (a.sparsity > 0)
        if not pruned_all.any():
            return keep
        for block in range(self.shape.num_layers):
            columns = np.flatnonzero((self._block == block) & kind)
            if columns.size == 0:
                continue
            pruned = pruned_all[:, columns]
            keep[:, block] = np.where(pruned.any(axis=1), 1.0 - a.sparsity[:, columns].max(axis=1), 1.0)
        return keep

    def latency_ms(self, a: PlanArrays, hw: HardwareSpec) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Whole-generation latency (P,) in ms and its parts in ms (summed over the steps)."""
        parts = {name: (t * a.steps_per_group).sum(axis=1) * 1e3 for name, t in self.step_times(a, hw).items()}
        return np.sum(list(parts.values()), axis=0), parts

    # ------------------------------------------------------------ memory

    def memory_bytes(self, a: PlanArrays, hw: HardwareSpec | None = None) -> dict[str, np.ndarray]:
        """Peak memory parts (P,) in bytes (``hw`` decides which kernels run, for the runtime layout)."""
        k, n = self._effective_shapes(a)
        wb, layout, db = a.weight_bits, self.layout, DTYPE_BYTES[self.dtype_for(hw)]
        quantized = wb < 16
        groups_per_weight = k * n / a.group_size
        used = {bits: (wb == bits).any(axis=2) for bits in (2, 3, 4, 8)}
        top = np.where(quantized, wb, 0).max(axis=2)
        copies_count = sum(u.astype(float) for u in used.values())
        code_tensors = np.where(a.nested[:, None], (top > 0).astype(float), copies_count)
        if layout.packed_codes:
            distinct = sum(u * bits for bits, u in used.items())
            codes = np.where(a.nested[:, None], top, distinct) * k * n / 8
        else:
            codes = code_tensors * k * n
        scales = code_tensors * groups_per_weight * layout.scale_bytes_per_group
        dense16 = ((wb == 16).any(axis=2) | ~quantized.any(axis=2)) * k * n * db
        weights = codes + scales + dense16
        if (layout.kernel_copies or layout.dequantized_copies) and hw is not None:
            # caches are built on first use: a timestep group that runs no step builds none
            fmt = np.where(a.steps_per_group[:, None, :] > 0, self.formats(a, hw), -1)
            extra = np.zeros_like(k)
            if layout.kernel_copies:
                extra += np.isin(fmt, _W8A8).any(axis=2) * (k * n + 8 * n)
                extra += (fmt == INT8_WEIGHT_ONLY).any(axis=2) * (k * n + 2 * n * db)
                kernel_group = np.zeros_like(a.group_size)
                for g in reversed(TINYGEMM_GROUPS):
                    kernel_group = np.where(a.group_size % g == 0, g, kernel_group)
                int4_bytes = k * n / 2 + k / np.maximum(kernel_group, 1) * n * 2 * db
                for bits in (2, 3, 4):
                    extra += ((fmt == INT4_WEIGHT_ONLY) & (wb == bits)).any(axis=2) * int4_bytes
            if layout.dequantized_copies:
                for bits in (2, 3, 4, 8):
                    extra += ((fmt == SIMULATED) & (wb == bits)).any(axis=2) * k * n * db
            weights = weights + extra
        s = self.shape
        embeddings = np.full(len(a.tokens), 2.0 * s.vocab_size * s.hidden_size * db)
        tokens = a.tokens
        channels = s.intermediate_size * self._block_keep(a, attention=False).max(axis=1)
        activations = tokens * (4 * s.hidden_size + 3 * channels) * db
        logits = 2 * tokens * s.vocab_size * 4
        return {"weights": weights.sum(axis=1) + embeddings, "activations": activations,
                "logits": logits, "kv_cache": np.zeros(len(tokens))}

    # ------------------------------------------------------------ the protocol

    def cost_many(self, plans: Sequence[Plan], hardware: HardwareSpec) -> list[CostResult]:
        """Costs of many Plans in one vectorised pass."""
        arrays = self.encode(plans)
        latency, parts = self.latency_ms(arrays, hardware)
        memory = self.memory_bytes(arrays, hardware)
        total = np.sum(list(memory.values()), axis=0).astype(np.int64).tolist()
        keys = [f"{name}_ms" for name in parts] + [f"{name}_bytes" for name in memory]
        columns = [v.tolist() for v in parts.values()] + [v.tolist() for v in memory.values()]
        per_step = (latency / arrays.steps_per_group.sum(axis=1)).tolist()
        provenance = "analytic"
        return [CostResult(lat, mem, provenance, {**dict(zip(keys, values, strict=True)), "latency_per_step_ms": step})
                for lat, mem, step, *values in zip(latency.tolist(), total, per_step, *columns, strict=True)]

    def cost(self, plan: Plan, hardware: HardwareSpec) -> CostResult:
        """Latency and memory of one Plan (see :meth:`cost_many` for many)."""
        return self.cost_many([plan], hardware)[0]

    def for_one_block(self) -> AnalyticCostModel:
        """The same model cut to block 0 (what a profile measures per block)."""
        linears = [i for i in self.linears if i.block == 0]
        return AnalyticCostModel(replace(self.shape, num_layers=1), linears, self.prompt_length, self.batch_size,
                                 self.dense_dtype, self.layout, self.use_kernels)

    def dtype_for(self, hw: HardwareSpec | None) -> str:
        """The dense dtype priced on ``hw``: ``dense_dtype`` when given, else :func:`default_dense_dtype`."""
        if self.dense_dtype is not None:
            return self.dense_dtype
        return default_dense_dtype(hw) if hw is not None else "bf16"
