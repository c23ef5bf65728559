"""Measured cost: apply a Plan with real kernels and time the real sampler on the local device.

The end-to-end check of the analytic model. :func:`time_generate` times
:func:`dlmsearch.models.sampler.generate` (warm-up first: it packs kernel operands and fills the
dequantized-weight caches), :func:`tensor_bytes` counts what the compressed model holds (parameters,
buffers and :class:`~dlmsearch.compress.quantized_linear.QuantizedLinear`'s kernel and dequantized
caches, each storage once), and :class:`MeasuredCostModel` puts both behind the cost-model
protocol with ``provenance="measured"``. Timings on a shared machine drift: compare Plans measured
side by side (``bench/cost_model_accuracy.py`` interleaves them), never numbers from different runs.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dlmsearch.cost_models.base import BaseCostModel, CostResult
from dlmsearch.cost_models.hardware_spec import HardwareSpec
from dlmsearch.models.adapters import DLMAdapter
from dlmsearch.models.sampler import generate
from dlmsearch.plan import Plan, SamplerSettings


@dataclass(frozen=True)
class GenerateTiming:
    """Wall-clock time of whole ``generate`` calls (every denoising step of the sampler)."""

    median_ms: float
    times_ms: tuple[float, ...]
    steps: int
    tokens: int  # sequence length each step recomputes (prompt + generated), batch 1

    @property
    def spread(self) -> float:
        """(max - min) / median over the repetitions."""
        return (max(self.times_ms) - min(self.times_ms)) / self.median_ms if self.median_ms else 0.0


def prompt_ids(adapter: DLMAdapter, prompt_length: int, seed: int = 0) -> torch.Tensor:
    """A fixed random prompt of ``prompt_length`` ids that avoids the mask token."""
    vocab = adapter.shape.vocab_size
    ids = torch.randint(0, vocab - 1, (prompt_length,), generator=torch.Generator().manual_seed(seed))
    return torch.where(ids >= adapter.mask_token_id, ids + 1, ids) if adapter.mask_token_id < vocab - 1 else ids


def generate_call(adapter: DLMAdapter, settings: SamplerSettings, prompt_length: int,
                  seed: int = 0) -> Callable[[], torch.Tensor]:
    """A no-argument callable running the sampler once as ``settings`` say (for interleaved timing)."""
    prompt = prompt_ids(adapter, prompt_length, seed)

    def run() -> torch.Tensor:
        return generate(adapter, prompt, gen_length=settings.gen_length, steps=settings.steps,
                        block_length=settings.block_length, remasking=settings.remasking,
                        temperature=settings.temperature, seed=seed)

    return run


def _sync(adapter: DLMAdapter) -> None:
    if adapter.device.type == "cuda":
        torch.cuda.synchronize(adapter.device)


def time_call(adapter: DLMAdapter, run: Callable[[], object],
              clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds of one call of ``run`` (synchronised on CUDA).

    ``clock=time.thread_time`` counts only the CPU time of the calling thread: with one torch thread on
    a CPU, the wall time the call would take with the core to itself, whatever else the machine runs.
    """
    _sync(adapter)
    start = clock()
    run()
    _sync(adapter)
    return clock() - start


def time_generate(adapter: DLMAdapter, settings: SamplerSettings, prompt_length: int, repeats: int = 3,
                  warmup: int = 1, seed: int = 0) -> GenerateTiming:
    """Median wall-clock of ``repeats`` whole ``generate`` calls after ``warmup`` calls."""
    run = generate_call(adapter, settings, prompt_length, seed)
    for _ in range(warmup):
        run()
    times = [time_call(adapter, run) * 1e3 for _ in range(max(1, repeats))]
    return GenerateTiming(statistics.median(times), tuple(times), settings.steps, prompt_length + settings.gen_length)


def _tensors(value: object) -> Iterable[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _tensors(getattr(value, f.name))
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)


def tensor_bytes(model: nn.Module) -> int:
    """Bytes of every tensor the model holds: parameters, buffers and QuantizedLinear caches, each storage once."""
    seen: set[int] = set()
    total = 0
    tensors: list[torch.Tensor] = [*model.parameters(), *model.buffers()]
    for module in model.modules():
        for cache in ("_packed", "_dequantized"):
            for value in getattr(module, cache, {}).values():
                tensors.extend(_tensors(value))
    for tensor in tensors:
        storage = tensor.untyped_storage()
        if storage.data_ptr() in seen:
            continue
        seen.add(storage.data_ptr())
        total += storage.nbytes()
    return total


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")


def rss_bytes() -> int:
    """Resident set size of this process now (Linux)."""
    return _status_kib("VmRSS") * 1024


def peak_rss_bytes() -> int:
    """Peak resident set size since start or the last :func:`reset_peak_rss` (Linux)."""
    return _status_kib("VmHWM") * 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter to the current RSS (Linux >= 4.0); False when not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class MeasuredCostModel(BaseCostModel):
    """Cost by measurement: apply the Plan to a fresh model and time ``generate``.

    ``load`` returns a fresh, uncompressed adapter each call. ``use_kernels`` goes to ``apply_plan_``:
    None (the default) is what it does by default, the decision :class:`AnalyticCostModel` prices
    too (fbgemm's int8 for W8A8 on CPUs, dequantize-then-matmul elsewhere and for every quantized
    layer on CUDA); True forces the real kernels. Only
    meaningful for the device the model runs on: ``cost`` refuses a hardware spec of another kind.
    Slow (it compresses and runs the model): use it to check the analytic model, not inside a search.
    """

    def __init__(self, load: Callable[[], DLMAdapter], prompt_length: int = 0, repeats: int = 3,
                 use_kernels: bool | None = None) -> None:
        self.load = load
        self.prompt_length = prompt_length
        self.repeats = repeats
        self.use_kernels = use_kernels

    def cost(self, plan: Plan, hardware: HardwareSpec) -> CostResult:
        """Measured latency (median of ``repeats`` generations) and held tensor bytes of ``plan``."""
        from dlmsearch.compress.apply import apply_plan_

        adapter = self.load()
        kind = "gpu" if adapter.device.type == "cuda" else "cpu"
        if hardware.kind != kind:
            raise ValueError(f"hardware {hardware.name!r} is a {hardware.kind}; this model runs on {adapter.device} "
                             "(a measured cost only describes the local device)")
        apply_plan_(adapter, plan, use_kernels=self.use_kernels)
        timing = time_generate(adapter, plan.sampler, self.prompt_length, repeats=self.repeats)
        held = tensor_bytes(adapter.model)
        return CostResult(timing.median_ms, held, "measured",
                          {"spread": timing.spread, "weights_bytes": float(held),
                           "latency_per_step_ms": timing.median_ms / plan.sampler.steps})
