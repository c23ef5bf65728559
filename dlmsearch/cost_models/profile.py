"""Measured profile of the local device: microbenchmarks that calibrate the analytic model.

:func:`measure_profile` times, on this device, every matmul format the compression code runs
(dense fp32 and bf16, W8A8 through fbgemm on CPUs or ``torch._int_mm``, int8 and int4
weight-only, each as :class:`~dlmsearch.compress.quantized_linear.QuantizedLinear` runs it with
``use_kernels=True``, and 50% structured shapes) over
the model's distinct linear shapes and a set of token counts M, plus the other parts of a
denoising step: activation fake-quant, SDPA attention, one whole transformer block (its norms,
rotary embedding, residuals and framework overhead), the model's outer parts (embedding, final
norm, LM head) and the sampler's per-step ops. Method, as RESEARCH.md asks:

- one warm-up call per item (it also packs kernel operands), then ``reps`` rounds, more while a
  round is short, up to ``max_rounds``; every round calls every item once in a rotated order
  (interleaved, so drifting load hits all formats alike);
- each linear item rotates over as many weight copies as the model has linears of that shape
  (capped at :data:`ROTATION_CAP_BYTES`), so the weights a step touches are as cache-resident as
  in the real model: a model larger than the last-level cache reads cold weights every call;
- the median of the rounds is kept, with the spread ``(p90 - p10) / median`` and the count.

Calibration: for each format or part, ``eta_f(M) = ideal(M) / measured(M)`` where ``ideal`` is
:meth:`AnalyticCostModel.ideal_part_times` (roofline at the profile's peak FLOP/s and bandwidth,
no launch overhead) summed over the model's linears, so the analytic model given the profile
reproduces the measured times at the measured M (and interpolates in log M between them).
``simulated`` (a quantized layer without a kernel: the cached dequantized weight and a dense
matmul in the model's dtype, what ``apply_plan_`` runs by default for every quantized layer on a
GPU and for all but W8A8 on CPUs) is calibrated as the dense timings of the same shapes in the
dtype a model runs in on the device (float32 on CPUs, bf16 on GPUs: see
:func:`~dlmsearch.cost_models.analytic.default_dense_dtype`) plus the quantized layer's measured
per-call Python overhead. The
result is a :class:`HardwareSpec` (``format_efficiency`` plus raw samples under ``profile``)
that :func:`load_hardware` reads back. Profiles are cached under
``cache_dir()/profiles`` by device fingerprint, torch version, thread count, the model's shapes
and the token counts.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import logging
import math
import os
import platform
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from dlmsearch.cost_models.analytic import AnalyticCostModel, default_dense_dtype
from dlmsearch.cost_models.hardware_spec import EfficiencyCurve, HardwareSpec, HardwareSpecError, load_hardware
from dlmsearch.models.adapters import LinearInfo, ModelShape
from dlmsearch.plan import LayerPlan, ModelRef, Plan, SamplerSettings

logger = logging.getLogger("dlmsearch.cost_models.profile")

PROFILE_FORMAT = "dlmsearch.profile"
PROFILE_VERSION = 5  # 3: int8_fbgemm measured; 4: simulated on GPUs from bf16 timings; 5: mlp_act timed apart
QUICK_TOKEN_COUNTS: tuple[int, ...] = (1, 16, 64, 256)
FULL_TOKEN_COUNTS: tuple[int, ...] = (1, 4, 16, 32, 64, 128, 256, 512)
ROTATION_CAP_BYTES = 512 * 2**20  # at most this much rotating weight memory per (format, shape)
LOCAL = "local"
_MIB = 2**20
#: Weight formats a profile times: name -> (weight bits, act bits, per channel?) as QuantizedLinear runs them.
LINEAR_FORMATS: dict[str, tuple[int, int, bool]] = {
    "int8_fbgemm": (8, 8, True), "int8_dynamic": (8, 8, True), "int8_weight_only": (8, 16, True),
    "int4_weight_only": (4, 16, False),
    "simulated": (8, 16, False)}  # per-group 8-bit: no kernel anywhere, dequantized once, dense matmul
_KERNEL_OF_FORMAT = {name: name for name in LINEAR_FORMATS if name != "simulated"}
_MAX_VOCAB_PROBE = 8192  # the one-block model uses at most this vocabulary (LM head scaled by ideal time)


# ---------------------------------------------------------------- the device


def last_level_cache_bytes() -> int:
    """Size of the largest CPU cache sysfs reports (32 MiB when unknown)."""
    sizes = []
    for path in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = path.read_text().strip().upper()
        unit = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
        sizes.append(int(text.rstrip("KM")) * unit)
    return max(sizes, default=32 * _MIB)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_fingerprint(device: torch.device | str = "cpu") -> str:
    """What the timings depend on: the processor, its vector ISA, threads and cache (or the GPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"cuda/{props.name}/sm{props.major}{props.minor}/{props.total_memory // _MIB}MiB"
    return (f"cpu/{_cpu_model()}/{torch.backends.cpu.get_cpu_capability()}/threads{torch.get_num_threads()}"
            f"/llc{last_level_cache_bytes() // _MIB}MiB")


def _memory_capacity(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 16 * 2**30


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------- timing


@dataclass
class _Item:
    """One thing timed each round: ``run(i)`` uses rotating copy ``i``."""

    part: str
    key: tuple[int, ...]  # (K, N) for linears, (K,) for act_quant, () otherwise
    count: int  # how many of these the model runs per step
    run: Callable[[int], Any]


@dataclass(frozen=True)
class Sample:
    """The measured time of one item at one token count."""

    part: str
    key: tuple[int, ...]
    count: int
    tokens: int
    median_s: float
    spread: float  # (p90 - p10) / median over the rounds
    rounds: int

    def to_list(self) -> list[Any]:
        return [self.part, list(self.key), self.count, self.tokens, self.median_s * 1e3, self.spread, self.rounds]


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def time_items(items: Sequence[_Item], tokens: int, device: torch.device, reps: int, min_seconds: float,
               max_rounds: int) -> list[Sample]:
    """Warm-up, then interleaved rotated rounds; the median per item (see the module docstring)."""
    times: dict[int, list[float]] = {i: [] for i in range(len(items))}
    with torch.inference_mode():
        start = time.perf_counter()
        for item in items:
            item.run(0)
        _sync(device)
        warm_up = time.perf_counter() - start
        rounds = min(max(reps, math.ceil(min_seconds / max(warm_up, 1e-6))), max_rounds)
        order = list(range(len(items)))
        for r in range(rounds):
            shift = r % len(order)
            for index in (*order[shift:], *order[:shift]):
                _sync(device)
                start = time.perf_counter()
                items[index].run(r + 1)
                _sync(device)
                times[index].append(time.perf_counter() - start)
    out = []
    for index, item in enumerate(items):
        values = times[index]
        median = statistics.median(values)
        spread = (_percentile(values, 0.9) - _percentile(values, 0.1)) / median if median > 0 else 0.0
        out.append(Sample(item.part, item.key, item.count, tokens, median, spread, len(values)))
    return out


def _best_seconds(fn: Callable[[], Any], device: torch.device, repeats: int = 5) -> float:
    with torch.inference_mode():
        fn()
        best = float("inf")
        for _ in range(repeats):
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            best = min(best, time.perf_counter() - start)
    return best


def _peaks(device: torch.device) -> tuple[dict[str, float], float]:
    """Probe peak FLOP/s (fp32, bf16, int8) and memory bandwidth (bytes/s, a large copy)."""
    m, k, n = 256, 1024, 1024
    flops = 2.0 * m * k * n
    x, w = torch.randn(m, k, device=device), torch.randn(n, k, device=device)
    peaks = {"fp32": flops / _best_seconds(lambda: F.linear(x, w), device)}
    xb, wb = x.bfloat16(), w.bfloat16()
    peaks["bf16"] = flops / _best_seconds(lambda: F.linear(xb, wb), device)
    peaks["int8"] = max(_int8_peaks(device, x, w), default=peaks["fp32"])
    size = max(4 * last_level_cache_bytes(), 128 * _MIB) if device.type == "cpu" else 1024 * _MIB
    source = torch.empty(size // 4, dtype=torch.float32, device=device).fill_(1.0)
    target = torch.empty_like(source)
    bandwidth = 2.0 * size / _best_seconds(lambda: target.copy_(source), device, repeats=3)
    return peaks, bandwidth


def _int8_peaks(device: torch.device, x: torch.Tensor, w: torch.Tensor) -> list[float]:
    """FLOP/s of the int8 matmuls that run here: ``torch._int_mm`` and, on CPUs, fbgemm's dynamic linear."""
    from dlmsearch.compress.kernels import INT8_FBGEMM, KERNELS, kernel_available
    from dlmsearch.compress.quantize import quantize_rtn

    (m, k), n = x.shape, w.shape[0]
    found = []
    try:  # _int_mm is slow on CPUs: probe a smaller product
        xi = torch.randint(-128, 127, (32, k), dtype=torch.int8, device=device)
        wi = torch.randint(-128, 127, (k, n), dtype=torch.int8, device=device)
        found.append(2.0 * 32 * k * n / _best_seconds(lambda: torch._int_mm(xi, wi), device, repeats=3))
    except (RuntimeError, NotImplementedError):
        pass
    if kernel_available(INT8_FBGEMM, device):
        kernel = KERNELS[INT8_FBGEMM]
        packed = kernel.pack(quantize_rtn(w.cpu(), 8, 0), torch.float32)
        found.append(2.0 * m * k * n / _best_seconds(lambda: kernel.linear(x, packed), device))
    return found


def _launch_overhead(device: torch.device) -> float:
    """Seconds of one tiny ``nn.Linear`` call: the per-call framework cost every op pays."""
    tiny, x = nn.Linear(16, 16, bias=False).to(device), torch.randn(1, 16, device=device)
    with torch.inference_mode():
        for _ in range(20):
            tiny(x)
        times = []
        for _ in range(200):
            _sync(device)
            start = time.perf_counter()
            tiny(x)
            _sync(device)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def others_busy_cores(window_s: float = 0.5) -> float | None:
    """Cores that other processes kept busy over the next ``window_s`` seconds (Linux ``/proc``), or None.

    The machine's busy time (``/proc/stat``) less this process's own (``/proc/self/stat``, all its
    threads). Unlike the 1-minute load average it forgets an install or a run that just ended, and it
    never counts this process's own work.
    """
    def busy_ticks() -> tuple[int, int] | None:
        try:
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
            own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        machine = sum(int(v) for v in fields[:8]) - int(fields[3]) - int(fields[4])  # all but idle and iowait
        return machine, int(own[11]) + int(own[12])  # utime + stime

    before = busy_ticks()
    start = time.perf_counter()
    time.sleep(window_s)
    after = busy_ticks()
    if before is None or after is None:
        return None
    ticks_per_s = os.sysconf("SC_CLK_TCK")
    others = (after[0] - before[0]) - (after[1] - before[1])
    return max(0.0, others / ticks_per_s / (time.perf_counter() - start))


def _busy_warning(device: torch.device) -> float | None:
    """Cores other processes keep busy (:func:`others_busy_cores`; the 1-minute load average where
    ``/proc`` is missing); warns when they leave fewer free cores than torch threads.

    A profile is a snapshot of the machine's load: measured beside other busy processes every part
    comes out slower (with several torch threads, much slower: OpenMP waits for descheduled peers),
    and every prediction made from it with it.
    """
    if device.type != "cpu":
        return None
    busy = others_busy_cores()
    what = "other processes keep %.1f of %d cores busy"
    if busy is None:
        if not hasattr(os, "getloadavg"):
            return None
        busy, what = os.getloadavg()[0], "load average %.1f on %d cores"
    cores, threads = os.cpu_count() or 1, torch.get_num_threads()
    if busy > cores - threads + 0.5:
        hint = "" if threads == 1 else ", or with fewer threads (dlmsearch profile --threads 1)"
        logger.warning(what + " with %d torch thread(s): the profile will measure a busy machine (predictions "
                       "too slow for a quiet one); measure when it is idle%s", busy, cores, threads, hint)
    return busy


def _quantized_overhead(device: torch.device, calls: int = 300) -> float:
    """Seconds a dequantize-then-matmul ``QuantizedLinear`` call takes beyond a plain ``nn.Linear`` call.

    Both run the same ``F.linear`` on a tiny float weight inside a sampler step; the difference is the
    quantized layer's Python work (timestep group, kernel choice, cached weight lookup). Interleaved
    calls, median difference: robust where timing two big matmuls separately drifts apart.
    """
    from dlmsearch.compress.quantized_linear import QuantConfig, QuantizedLinear
    from dlmsearch.models.sampler import DenoisingStep, denoising_step

    plain = nn.Linear(32, 16, bias=False).to(device)
    config = QuantConfig(weight_bits=(8, 4), act_bits=(16, 16), timestep_boundaries=(0.5,), group_size=16)
    quantized = QuantizedLinear.from_linear(plain, config, use_kernels=False).to(device)
    x = torch.randn(1, 32, device=device)
    plain_s: list[float] = []
    quantized_s: list[float] = []
    with torch.inference_mode(), denoising_step(DenoisingStep(0, 2)):
        for _ in range(20):
            plain(x), quantized(x)
        for _ in range(calls):
            for module, times in ((plain, plain_s), (quantized, quantized_s)):
                _sync(device)
                start = time.perf_counter()
                module(x)
                _sync(device)
                times.append(time.perf_counter() - start)
    return max(statistics.median(quantized_s) - statistics.median(plain_s), 0.0)


# ---------------------------------------------------------------- what is timed


def _linear_module(k: int, n: int, fmt: str, group: int, device: torch.device, seed: int) -> nn.Module:
    from dlmsearch.compress.quantized_linear import QuantConfig, QuantizedLinear

    generator = torch.Generator().manual_seed(seed)
    linear = nn.Linear(k, n, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(n, k, generator=generator) * 0.02)
    if fmt in ("fp32", "bf16"):
        return linear.to(device=device, dtype=torch.float32 if fmt == "fp32" else torch.bfloat16)
    bits, act_bits, per_channel = LINEAR_FORMATS[fmt]
    config = QuantConfig(weight_bits=(bits,), act_bits=(act_bits,), group_size=0 if per_channel else group)
    # ``simulated`` as apply_plan_ runs it where kernels are off: no kernel lookup, the cached dequantized weight
    return QuantizedLinear.from_linear(linear, config, use_kernels=fmt != "simulated").to(device)


def _rotating_copies(first: nn.Module, count: int, bytes_per_copy: int) -> list[nn.Module]:
    copies = max(1, min(count, math.ceil(ROTATION_CAP_BYTES / max(bytes_per_copy, 1))))
    return [first] + [copy.deepcopy(first) for _ in range(copies - 1)]


def _module_bytes(module: nn.Module) -> int:
    total = sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
    for cache in ("_packed", "_dequantized"):
        for value in getattr(module, cache, {}).values():
            tensors = [value] if isinstance(value, torch.Tensor) else [
                getattr(value, f) for f in getattr(value, "__dataclass_fields__", {})]
            total += sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))
    return total


def _input_dtype(fmt: str, device: torch.device) -> torch.dtype:
    """The input dtype a linear format is timed with: bf16 for ``bf16``, and for ``simulated`` on a GPU
    (a bf16 model's quantized layers multiply their dequantized weight in bf16 there); else float32."""
    if fmt == "bf16" or (fmt == "simulated" and device.type == "cuda"):
        return torch.bfloat16
    return torch.float32


def _simulated_group(k: int) -> int:
    """A group size for 8-bit weights that no int8 kernel takes (not per channel)."""
    return next((g for g in (64, 32, 16) if k % g == 0 and g < k), 0)


def _int4_group(k: int) -> int:
    return next((g for g in (64, 128, 32, 256) if k % g == 0), 0)


def available_formats(device: torch.device | str = "cpu") -> list[str]:
    """Matmul formats that run on ``device`` (dense fp32 and bf16 always): a kernel format when it is
    the one ``QuantizedLinear(use_kernels=True)`` picks there for its bits (W8A8 on an x86 CPU is
    ``int8_fbgemm``, so ``int8_dynamic`` is not measured there)."""
    from dlmsearch.compress.kernels import select_kernel

    def runs(fmt: str) -> bool:
        bits, act_bits, per_channel = LINEAR_FORMATS[fmt]
        kernel = select_kernel(bits, act_bits, 0 if per_channel else 32, 32, 128, device)
        return kernel is not None and kernel.name == _KERNEL_OF_FORMAT[fmt]

    return ["fp32", "bf16", "simulated", *(f for f in _KERNEL_OF_FORMAT if runs(f))]


class _BlockProbe:
    """A one-block random model of the target shape: times one decoder block and the outer parts."""

    def __init__(self, shape: ModelShape, max_tokens: int, device: torch.device) -> None:
        from dlmsearch.models.loading import build_random_model

        self.vocab = min(shape.vocab_size, _MAX_VOCAB_PROBE)
        self.adapter = build_random_model(
            "qwen2" if shape.architecture == "qwen2" else "llama", num_layers=1, hidden_size=shape.hidden_size,
            num_heads=shape.num_heads, num_kv_heads=shape.num_kv_heads, intermediate_size=shape.intermediate_size,
            vocab_size=self.vocab, max_length=max(max_tokens, 8))
        self.adapter.model.to(device)
        self.block = self.adapter.blocks()[0]
        self.device = device
        self._captured: dict[int, tuple[tuple[Any, ...], dict[str, Any]]] = {}

    def ids(self, tokens: int) -> torch.Tensor:
        return torch.randint(0, self.vocab - 1, (1, tokens), generator=torch.Generator().manual_seed(tokens)
                             ).to(self.device)

    def block_call(self, tokens: int) -> Callable[[int], Any]:
        """The decoder block's forward with the arguments the model passes it at ``tokens``."""
        if tokens not in self._captured:
            def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
                self._captured[tokens] = (args, kwargs)

            handle = self.block.register_forward_pre_hook(hook, with_kwargs=True)
            try:
                with torch.inference_mode():
                    self.adapter.forward_logits(self.ids(tokens))
            finally:
                handle.remove()
        args, kwargs = self._captured[tokens]
        return lambda i: self.block(*args, **kwargs)

    def forward_call(self, tokens: int) -> Callable[[int], Any]:
        ids = self.ids(tokens)
        return lambda i: self.adapter.forward_logits(ids)


def _rotating_call(copies: Sequence[nn.Module], x: torch.Tensor) -> Callable[[int], Any]:
    return lambda i: copies[i % len(copies)](x)


def _act_quant_call(x: torch.Tensor) -> Callable[[int], Any]:
    from dlmsearch.compress.quantize import quantize_activations

    return lambda i: quantize_activations(x, 8)


def _attention_call(shape: ModelShape, tokens: int, device: torch.device) -> Callable[[int], Any]:
    q, k, v = (torch.randn(1, shape.num_heads, tokens, shape.head_dim, device=device) for _ in range(3))
    mask = torch.zeros(1, 1, tokens, tokens, device=device)
    return lambda i: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _mlp_act_call(shape: ModelShape, tokens: int, device: torch.device) -> Callable[[int], Any]:
    """The MLP's activation and product, ``silu(gate) * up``, on (1, tokens, intermediate) inputs."""
    gate, up = (torch.randn(1, tokens, shape.intermediate_size, device=device) for _ in range(2))
    return lambda i: F.silu(gate) * up


def _sampling_call(vocab: int, tokens: int, device: torch.device) -> Callable[[int], Any]:
    """The sampler's per-step ops (``dlmsearch.models.sampler.generate``) on (1, tokens, vocab) logits."""
    logits0 = torch.randn(1, tokens, vocab, device=device)
    x = torch.full((1, tokens), vocab - 1, dtype=torch.long, device=device)
    positions = torch.arange(tokens, device=device)
    k = max(1, tokens // 8)

    def run(i: int) -> Any:
        logits = logits0.clone()
        masked = x == vocab - 1
        logits[..., vocab - 1] = float("-inf")
        predicted = logits.argmax(dim=-1)
        probs = torch.softmax(logits.float(), dim=-1)
        confidence = probs.gather(-1, predicted.unsqueeze(-1)).squeeze(-1)
        confidence = confidence.masked_fill(~masked | (positions >= tokens), float("-inf"))
        chosen = confidence.topk(k, dim=-1).indices
        commit = torch.zeros_like(masked).scatter_(1, chosen, True) & confidence.isfinite()
        return torch.where(commit, predicted, x)

    return run


# ---------------------------------------------------------------- calibration


def _uniform(model: AnalyticCostModel, layer: LayerPlan, gen_tokens: int) -> Plan:
    sampler = SamplerSettings(steps=1, gen_length=gen_tokens, block_length=gen_tokens)
    return Plan(ModelRef("profile"), sampler, (), "nested", {info.name: layer for info in model.linears})


def _format_layer(fmt: str, group: int) -> LayerPlan:
    if fmt in ("fp32", "bf16"):
        return LayerPlan((16,), (16,), group_size=0)
    bits, act_bits, per_channel = LINEAR_FORMATS[fmt]
    return LayerPlan((bits,), (act_bits,), group_size=0 if per_channel else group)


def _ideal(model: AnalyticCostModel, layer: LayerPlan, tokens: int, hw: HardwareSpec) -> dict[str, float]:
    arrays = model.encode([_uniform(model, layer, tokens)])
    return {part: float(v[0, 0]) for part, v in model.ideal_part_times(arrays, hw).items()}


def _net(measured: float, overhead: float, floor: float) -> float:
    """Measured seconds less the framework overhead, kept above a floor (noise can make it negative)."""
    return max(measured - overhead, floor, 1e-9)


def _curve(points: dict[int, float]) -> list[list[float]]:
    return [[float(m), float(max(eta, 1e-6))] for m, eta in sorted(points.items())]


def measure_profile(shape: ModelShape, linears: Sequence[LinearInfo], *,
                    token_counts: Sequence[int] = QUICK_TOKEN_COUNTS, device: torch.device | str = "cpu",
                    reps: int = 5, min_seconds: float = 0.3, max_rounds: int = 25, progress: bool = True,
                    formats: Sequence[str] | None = None) -> HardwareSpec:
    """Time every format and step part on ``device`` for this model's shapes; return the calibrated spec.

    ``token_counts`` are the M values measured (the analytic model interpolates in log M between
    them and holds the ends flat); ``reps`` / ``min_seconds`` / ``max_rounds`` bound the rounds per M.
    """
    device = torch.device(device)
    token_counts = sorted({int(m) for m in token_counts})
    if not token_counts or token_counts[0] < 1:
        raise ValueError(f"token_counts={token_counts}: need positive token counts")
    formats = list(formats) if formats is not None else available_formats(device)
    shapes = Counter((i.in_features, i.out_features) for i in linears)
    widths = Counter(i.in_features for i in linears)
    started = time.perf_counter()
    busy = _busy_warning(device)
    peaks, bandwidth = _peaks(device)
    launch = _launch_overhead(device)
    quantized_overhead = _quantized_overhead(device)
    logger.info("peaks %s, bandwidth %.1f GB/s", {k: f"{v / 1e9:.1f} GFLOP/s" for k, v in peaks.items()},
                bandwidth / 1e9)

    modules: dict[tuple[str, int, int], list[nn.Module]] = {}
    for fmt in (*formats, "fp32@structured50"):
        base = fmt.split("@")[0]
        if base not in formats:
            continue
        for (k, n), count in shapes.items():
            n_eff = max(16, n // 2 // 16 * 16) if fmt.endswith("structured50") else n
            group = _int4_group(k) if base != "simulated" else _simulated_group(k)
            if (fmt == "int4_weight_only" and (not group or n_eff % 16)) or (base == "simulated" and not group):
                continue
            first = _linear_module(k, n_eff, base, group, device, seed=k * 7919 + n_eff)
            with torch.inference_mode():  # packs kernel operands before copying
                first(torch.randn(2, k, device=device, dtype=_input_dtype(base, device)))
            modules[(fmt, k, n)] = _rotating_copies(first, count, _module_bytes(first))
    probe = _BlockProbe(shape, max(token_counts), device)

    samples: list[Sample] = []
    with tqdm(total=len(token_counts), desc="profile", unit="size", disable=not progress or None) as bar:
        for tokens in token_counts:
            inputs = {(k, dtype): torch.randn(tokens, k, device=device, dtype=dtype)
                      for k in widths for dtype in (torch.float32, torch.bfloat16)}
            items = []
            for (fmt, k, n), copies in modules.items():
                x = inputs[(k, _input_dtype(fmt, device))]
                items.append(_Item(fmt, (k, n), shapes[(k, n)], _rotating_call(copies, x)))
            for k, count in widths.items():
                items.append(_Item("act_quant", (k,), count, _act_quant_call(inputs[(k, torch.float32)])))
            items.append(_Item("attention", (), shape.num_layers, _attention_call(shape, tokens, device)))
            items.append(_Item("mlp_act", (), shape.num_layers, _mlp_act_call(shape, tokens, device)))
            items.append(_Item("block", (), shape.num_layers, probe.block_call(tokens)))
            items.append(_Item("forward1", (), 1, probe.forward_call(tokens)))
            items.append(_Item("sampling", (), 1, _sampling_call(shape.vocab_size, tokens, device)))
            bar.set_postfix(M=tokens)
            samples.extend(time_items(items, tokens, device, reps, min_seconds, max_rounds))
            bar.update(1)
    spec = calibrate(shape, linears, samples, peaks, bandwidth, device, formats, probe.vocab, launch,
                     quantized_overhead)
    elapsed = time.perf_counter() - started
    info = dict(spec.profile)
    info.update(seconds=round(elapsed, 1), reps=reps, min_seconds=min_seconds, max_rounds=max_rounds,
                **({"others_busy_cores": round(busy, 2)} if busy is not None else {}))
    logger.info("profile measured in %.1f s", elapsed)
    return replace(spec, profile=info)


def calibrate(shape: ModelShape, linears: Sequence[LinearInfo], samples: Sequence[Sample], peaks: dict[str, float],
              bandwidth: float, device: torch.device, formats: Sequence[str], probe_vocab: int,
              launch: float = 0.0, quantized_overhead: float | None = None) -> HardwareSpec:
    """Turn measured samples into per-format ``eta_f(M)`` curves (see the module docstring).

    ``launch`` (seconds per framework call) is taken off every measured time first, once per call
    the analytic model counts, so ``ideal / eta + calls * launch`` reproduces each measurement.
    With ``quantized_overhead`` (see :func:`_quantized_overhead`) the ``simulated`` format is the
    dense matmul of the same shapes in the device's model dtype (float32 on CPUs, bf16 on GPUs)
    plus that much per call -- what dequantize-then-matmul runs -- rather than its own, separately
    drifting, timings.
    """
    from dlmsearch.compress.kernels import KERNELS, kernel_available

    kernels = tuple(k for k in KERNELS if kernel_available(k, device))
    kind = "gpu" if device.type == "cuda" else "cpu"
    ideal_hw = HardwareSpec("ideal", kind, peaks, bandwidth, 2**40, kernels)
    # dequantize-then-matmul multiplies in the dtype the model runs in here (a bf16 model's on a GPU)
    simulated_dense = default_dense_dtype(ideal_hw)
    by = {(s.part, s.key, s.tokens): s for s in samples}
    token_counts = sorted({s.tokens for s in samples})
    # calibrated against each kernel's own ideal time, whatever a target runs by default
    dense = {fmt: AnalyticCostModel(shape, linears, dense_dtype=fmt, use_kernels=True) for fmt in ("fp32", "bf16")}
    probe_shape = replace(shape, vocab_size=probe_vocab)
    block = AnalyticCostModel(probe_shape, [i for i in linears if i.block == 0], dense_dtype="fp32",
                              use_kernels=True).for_one_block()
    shapes = Counter((i.in_features, i.out_features) for i in linears)
    widths = Counter(i.in_features for i in linears)
    group = next((g for g in (64, 128, 32, 256) if all(k % g == 0 for k in widths)), 0)
    curves: dict[str, dict[int, float]] = {}
    for tokens in token_counts:
        for fmt in formats:
            measured = [by.get((fmt, key, tokens)) for key in shapes]
            as_dense = [by.get((simulated_dense, key, tokens)) for key in shapes]
            if fmt == "simulated" and quantized_overhead is not None and all(s is not None for s in as_dense):
                measured = [replace(s, median_s=s.median_s + quantized_overhead) for s in as_dense if s is not None]
            if any(s is None for s in measured):
                continue  # a shape the kernel cannot run: no curve from a partial sum
            total = sum(_net(s.median_s, launch, 0.1 * s.median_s) * s.count for s in measured if s is not None)
            model = dense[fmt if fmt in dense else simulated_dense if fmt == "simulated" else "fp32"]
            layer = _format_layer(fmt, group if fmt != "simulated" else min(_simulated_group(k) for k in widths))
            ideal = _ideal(model, layer, tokens, ideal_hw)[f"linear:{fmt}"]
            curves.setdefault(fmt, {})[tokens] = ideal / total
        act = sum(by[("act_quant", (k,), tokens)].median_s * c for k, c in widths.items())
        curves.setdefault("act_quant", {})[tokens] = _ideal(
            dense["fp32"], LayerPlan((16,), (8,), group_size=0), tokens, ideal_hw)["act_quant"] / act
        one = _ideal(block, LayerPlan((16,), (16,), group_size=0), tokens, ideal_hw)
        calls = block.part_launches()
        attention = by[("attention", (), tokens)].median_s
        mlp_act = by[("mlp_act", (), tokens)].median_s
        block_s = by[("block", (), tokens)].median_s
        linears_s = sum(by[("fp32", (i.in_features, i.out_features), tokens)].median_s for i in block.linears)
        # the rest of the block (norms, rotary, residual adds, the framework's own work) does not shrink
        # with MLP channels: priced by channel bytes, it made channel pruning look 3x cheaper than measured
        elementwise = block_s - linears_s - attention - mlp_act
        outer = by[("forward1", (), tokens)].median_s - block_s
        floor = 0.02 * block_s  # differences of medians can come out tiny or negative
        curves.setdefault("attention", {})[tokens] = one["attention"] / _net(attention, calls["attention"] * launch,
                                                                               floor)
        curves.setdefault("elementwise", {})[tokens] = one["elementwise"] / _net(
            elementwise, calls["elementwise"] * launch, floor)
        curves.setdefault("mlp_act", {})[tokens] = one["mlp_act"] / _net(mlp_act, calls["mlp_act"] * launch,
                                                                         0.1 * mlp_act)
        curves.setdefault("lm_head", {})[tokens] = one["lm_head"] / _net(outer, calls["lm_head"] * launch, floor)
        sampling_ideal = one["sampling"] * shape.vocab_size / probe_vocab  # measured at the real vocabulary
        curves.setdefault("sampling", {})[tokens] = sampling_ideal / _net(
            by[("sampling", (), tokens)].median_s, calls["sampling"] * launch, floor)
    fp32 = curves.get("fp32", {1: 1.0})
    generic = EfficiencyCurve(tuple((float(m), float(min(1.0, max(e, 1e-6)))) for m, e in sorted(fp32.items())))
    fingerprint = device_fingerprint(device)
    name = "local-" + hashlib.sha256(fingerprint.encode()).hexdigest()[:8]
    info = {"format": PROFILE_FORMAT, "version": PROFILE_VERSION, "device": fingerprint,
            "torch": torch.__version__, "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "threads": torch.get_num_threads(), "model_shape": shape.fingerprint,
            **({"quantized_overhead_us": round(quantized_overhead * 1e6, 3)} if quantized_overhead is not None else {}),
            "linear_shapes": [[k, n, c] for (k, n), c in sorted(shapes.items())], "token_counts": token_counts,
            "probe_vocab": probe_vocab, "sample_columns": ["part", "key", "count", "tokens", "median_ms", "spread",
                                                           "rounds"],
            "samples": [s.to_list() for s in samples]}
    return HardwareSpec(
        name=name, kind=kind, peak_flops=peaks, memory_bandwidth_bytes_per_s=bandwidth,
        memory_bytes=_memory_capacity(device), kernels=kernels, launch_overhead_s=launch,
        compute_efficiency=generic, memory_efficiency=generic,
        source=f"measured by dlmsearch profile on {fingerprint}, torch {torch.__version__}",
        format_efficiency={part: EfficiencyCurve(tuple((m, e) for m, e in _curve(points)))
                           for part, points in curves.items()},
        profile=info)


def merge_profiles(shape: ModelShape, linears: Sequence[LinearInfo], passes: Sequence[HardwareSpec],
                   device: torch.device | str = "cpu") -> HardwareSpec:
    """One profile from several passes of :func:`measure_profile` over the same shapes, calibrated again.

    Each sample's time is the median of its times over the passes, and so are the peaks, the
    bandwidth and the overheads. A profile is a snapshot of a machine whose speed drifts; passes
    measured at different moments (e.g. between the rounds of the timings it is meant to predict)
    describe the same machine state distribution as those timings.
    """
    if not passes:
        raise ValueError("passes: need at least one measured profile to merge")
    infos = [spec.profile for spec in passes]
    for index, info in enumerate(infos):
        if info.get("format") != PROFILE_FORMAT or not info.get("samples"):
            raise ValueError(f"passes[{index}]: {passes[index].name} is not a measured profile with samples")
        if info.get("version") != PROFILE_VERSION:
            raise ValueError(f"passes[{index}]: measured by profile version {info.get('version')}, not "
                             f"{PROFILE_VERSION}; allowed: passes measured by this dlmsearch (measure again)")
        if info.get("model_shape") != shape.fingerprint:
            raise ValueError(f"passes[{index}]: measured for model shape {info.get('model_shape')}, "
                             f"not {shape.fingerprint}")
    times: dict[tuple[str, tuple[int, ...], int], list[float]] = {}
    counts: dict[tuple[str, tuple[int, ...], int], int] = {}
    for info in infos:
        for part, key, count, tokens, median_ms, _spread, _rounds in info["samples"]:
            entry = (str(part), tuple(int(k) for k in key), int(tokens))
            times.setdefault(entry, []).append(float(median_ms) / 1e3)
            counts[entry] = int(count)
    samples = []
    for (part, key, tokens), values in times.items():
        if len(values) == len(passes):  # a sample every pass measured
            median = statistics.median(values)
            spread = (max(values) - min(values)) / median if median > 0 else 0.0  # over the passes
            samples.append(Sample(part, key, counts[(part, key, tokens)], tokens, median, spread, len(values)))
    peaks = {dtype: statistics.median(spec.peak_flops[dtype] for spec in passes) for dtype in passes[0].peak_flops}
    overheads = [info["quantized_overhead_us"] / 1e6 for info in infos if "quantized_overhead_us" in info]
    formats = [fmt for fmt in available_formats(device) if any(s.part == fmt for s in samples)]
    bandwidth = statistics.median(spec.memory_bandwidth_bytes_per_s for spec in passes)
    launch = statistics.median(spec.launch_overhead_s for spec in passes)
    spec = calibrate(shape, linears, samples, peaks, bandwidth, torch.device(device), formats,
                     int(infos[0]["probe_vocab"]), launch, statistics.median(overheads) if overheads else None)
    info = dict(spec.profile)
    info.update(passes=len(passes), seconds=round(sum(float(i.get("seconds", 0.0)) for i in infos), 1))
    return replace(spec, profile=info)


# ---------------------------------------------------------------- cache and the public API


def _embedded_shapes() -> tuple[ModelShape, list[LinearInfo]]:
    from dlmsearch.models.loading import load_model

    adapter = load_model()
    return adapter.shape, adapter.linears()


def profile_cache_key(shape: ModelShape, linears: Sequence[LinearInfo], token_counts: Sequence[int],
                      device: torch.device | str = "cpu") -> str:
    """Cache key: device fingerprint, torch version, the model's shapes and the token counts."""
    shapes = sorted(Counter((i.in_features, i.out_features) for i in linears).items())
    blob = json.dumps([PROFILE_VERSION, device_fingerprint(device), torch.__version__, shape.fingerprint,
                       [[k, n, c] for (k, n), c in shapes], sorted(token_counts)])
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def profile_cache_path(key: str) -> Path:
    """Where the profile with cache ``key`` lives (``$DLMSEARCH_CACHE/profiles``)."""
    from dlmsearch.data.cache import cache_dir

    return cache_dir() / "profiles" / f"{key}.yaml"


def local_profile(shape: ModelShape | None = None, linears: Sequence[LinearInfo] | None = None, *,
                  quick: bool = True, refresh: bool = False, token_counts: Sequence[int] | None = None,
                  device: torch.device | str = "cpu", progress: bool = True) -> HardwareSpec:
    """This device's measured profile for a model's shapes (the embedded model's by default), cached.

    Measures on a cache miss (``quick``: :data:`QUICK_TOKEN_COUNTS` and few rounds, well under a
    minute for the embedded model) and writes the YAML under :func:`profile_cache_path`.
    """
    if shape is None or linears is None:
        shape, linears = _embedded_shapes()
    counts = tuple(token_counts or (QUICK_TOKEN_COUNTS if quick else FULL_TOKEN_COUNTS))
    path = profile_cache_path(profile_cache_key(shape, linears, counts, device))
    if path.is_file() and not refresh:
        try:
            return load_hardware(path)
        except HardwareSpecError as exc:
            logger.warning("ignoring a broken cached profile (%s); measuring again", exc)
    reps, min_seconds = (3, 0.15) if quick else (7, 1.0)
    spec = measure_profile(shape, linears, token_counts=counts, device=device, reps=reps, min_seconds=min_seconds,
                           progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    spec.save(tmp)
    tmp.replace(path)
    return spec


def resolve_hardware(name_or_path: str | Path, shape: ModelShape | None = None,
                     linears: Sequence[LinearInfo] | None = None) -> HardwareSpec:
    """The hardware spec a study names: a shipped spec, a YAML file, or ``"local"``.

    ``"local"`` is this machine's measured profile for the model's linear shapes (``shape`` and
    ``linears``; the embedded model's when omitted), from the cache or measured quickly when missing.
    """
    if str(name_or_path) == LOCAL:
        return local_profile(shape, linears, quick=True)
    return load_hardware(name_or_path)


def profile_summary(spec: HardwareSpec, token_counts: Sequence[int] | None = None) -> list[str]:
    """Lines describing a profile: per part, eta at each measured M and the median ms of its samples."""
    counts = token_counts or spec.profile.get("token_counts") or QUICK_TOKEN_COUNTS
    lines = [f"{spec.name}: {spec.source}",
             "peak GFLOP/s " + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in spec.peak_flops.items())
             + f"; bandwidth {spec.memory_bandwidth_bytes_per_s / 1e9:.1f} GB/s"]
    for part, curve in spec.format_efficiency.items():
        lines.append(f"  {part:18s} " + "  ".join(f"M={m}: {curve(m):.3g}" for m in counts))
    spreads = [row[5] for row in spec.profile.get("samples", [])]
    if spreads:
        lines.append(f"  spread (p90-p10)/median: median {float(np.median(spreads)):.2f}, "
                     f"max {max(spreads):.2f} over {len(spreads)} samples")
    return lines
