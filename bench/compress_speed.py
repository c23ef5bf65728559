"""Speed of each weight format on this CPU, as ratios to fp32 measured in the same run.

Reproduce with::

    .venv/bin/python bench/compress_speed.py --quick     # under a minute: M in 1, 16 (embedded) and 1, 8 (LLaDA)
    .venv/bin/python bench/compress_speed.py             # full: M in 1, 16, 128, 512 (the slow kernels take minutes)
    .venv/bin/python bench/compress_speed.py --threads 1 # pin the thread count

Two workloads: every linear of the embedded model (``load_model()``, one pass over all
``adapter.linears()``) and one LLaDA-8B-shaped MLP layer (K=4096, N=12288), each at several token
counts M. Formats (all through :mod:`dlmsearch.compress.kernels` or plain torch):

- ``fp32``: ``F.linear`` in float32 (the reference, ratio 1).
- ``bf16``: ``F.linear`` in bfloat16 (slow without AVX-512-BF16/AMX).
- ``int8_dyn``: the ``int8_fbgemm`` kernel, fbgemm's ``quantized::linear_dynamic`` (the op behind
  ``torch.ao.quantization.quantize_dynamic``; per-tensor activations, symmetric per-channel
  weights), what ``apply_plan_`` runs for W8A8 layers on a CPU.
- ``int8_dyn_intmm``: W8A8 with per-token activations through ``torch._int_mm`` (what
  ``QuantizedLinear`` runs for 8-bit weights and activations on CUDA).
- ``int8_wo``: ``torch._weight_int8pack_mm`` (int8 weight-only, per channel).
- ``int4_wo``: ``torch._weight_int4pack_mm_for_cpu`` (int4 weight-only, group 128; 64 for the
  embedded model, whose width 192 has no group of 128).
- ``struct50``: fp32 matmul with half the output rows (structured 50% pruning).

End to end (``e2e_int8_<model>``): ``generate`` time of a compressed model over the same dense
model's, every linear W8A8 through ``apply_plan_`` (so ``int8_fbgemm``), timed in interleaved
rounds in one run, median of each. Two models: the embedded one (64 prompt + 64 generated tokens,
16 steps; quick: 32 + 32, 8 steps) and a random-init LLaDA-8B-shaped stack (hidden 4096, 32 heads,
MLP 12288) of 2 blocks (quick: 1) with the vocabulary cut to 8192 so that, as in the 32-block 8B
model, the LM head (not in a Plan) is under a tenth of a step's work (32 + 32 tokens, 4 steps).

Method: one warm-up call per format, then at least ``reps`` rounds (3 quick, 7 full; more, up to
100, while a workload's rounds add up to under 1 s quick / 5 s full); each round calls every format once in
a rotated order (interleaved, so drifting machine load hits all formats alike) and each call uses
the next of several weight copies, enough that one format's copies together exceed the last-level
cache several times over (a single 64 MB weight would otherwise sit in cache and fake bandwidth).
The embedded model's weights (about 10 MB) fit the cache as they do in real use, so they are not
copied. The figure is the median time of a format divided by the median fp32 time; absolute times vary
2-3x between runs, ratios much less. Figures are printed last as ``name: value`` lines, e.g.
``llada_layer_M16_int4_wo_vs_fp32: 7.9`` (above 1 means slower than fp32).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from dlmsearch.compress import QuantizedLinear, apply_plan_
from dlmsearch.compress.kernels import (
    INT4_WEIGHT_ONLY,
    INT8_DYNAMIC,
    INT8_FBGEMM,
    INT8_WEIGHT_ONLY,
    KERNELS,
    bf16_linear,
    int4_group_size,
    int4_weight_only_linear,
    int8_dynamic_linear,
    int8_weight_only_linear,
    kernel_available,
    pack_int4_weight_only,
    pack_int8_dynamic,
    pack_int8_weight_only,
)
from dlmsearch.compress.quantize import quantize_rtn
from dlmsearch.cost_models.profile import last_level_cache_bytes
from dlmsearch.models.adapters import DLMAdapter
from dlmsearch.models.loading import build_random_model, load_model
from dlmsearch.models.sampler import generate
from dlmsearch.plan import uniform_plan

LLADA_SHAPE = (12288, 4096)  # (N, K) of LLaDA-8B's MLP up/gate projection
MiB = 1 << 20


@dataclass(frozen=True)
class Format:
    """How to prepare a weight (N, K) for one format, copy the result, and run ``x @ W^T``."""

    name: str
    prepare: Callable[[torch.Tensor, int], Any]  # (fp32 weight, int4 group size) -> operand
    run: Callable[[torch.Tensor, Any], torch.Tensor]
    available: Callable[[], bool] = lambda: True


def _copy(operand: Any) -> Any:
    """A copy of a prepared operand in fresh memory (tensors and dataclasses of tensors)."""
    if isinstance(operand, torch.Tensor):
        return operand.clone()
    if dataclasses.is_dataclass(operand) and not isinstance(operand, type):
        fields = {f.name: _copy(getattr(operand, f.name)) for f in dataclasses.fields(operand)}
        return dataclasses.replace(operand, **fields)
    if hasattr(operand, "unpack"):  # fbgemm's opaque packed params: unpack and pack again
        return torch.ops.quantized.linear_prepack(*operand.unpack())
    return operand


FORMATS: tuple[Format, ...] = (
    Format("fp32", lambda w, g: w.clone(), F.linear),
    Format("bf16", lambda w, g: w.bfloat16(), bf16_linear),
    Format("int8_dyn", lambda w, g: KERNELS[INT8_FBGEMM].pack(quantize_rtn(w, 8, 0), torch.float32),
           KERNELS[INT8_FBGEMM].linear, lambda: kernel_available(INT8_FBGEMM, "cpu")),
    Format("int8_dyn_intmm", lambda w, g: pack_int8_dynamic(quantize_rtn(w, 8, 0), torch.float32),
           int8_dynamic_linear, lambda: kernel_available(INT8_DYNAMIC, "cpu")),
    Format("int8_wo", lambda w, g: pack_int8_weight_only(quantize_rtn(w, 8, 0), torch.float32),
           int8_weight_only_linear, lambda: kernel_available(INT8_WEIGHT_ONLY, "cpu")),
    Format("int4_wo", lambda w, g: pack_int4_weight_only(quantize_rtn(w, 4, g), torch.float32),
           int4_weight_only_linear, lambda: kernel_available(INT4_WEIGHT_ONLY, "cpu")),
    Format("struct50", lambda w, g: w[: w.shape[0] // 2].clone(), F.linear),
)


def _operand_bytes(operand: Any) -> int:
    if isinstance(operand, torch.Tensor):
        return operand.numel() * operand.element_size()
    if isinstance(operand, (list, tuple)):
        return sum(_operand_bytes(o) for o in operand)
    if dataclasses.is_dataclass(operand):
        return sum(_operand_bytes(getattr(operand, f.name)) for f in dataclasses.fields(operand))
    if hasattr(operand, "unpack"):
        return sum(_operand_bytes(t) for t in operand.unpack() if isinstance(t, torch.Tensor))
    return 0


def prepare_copies(fmt: Format, weights: Sequence[torch.Tensor], group: int, target_bytes: int) -> list[Any]:
    """Enough copies of the prepared weights (a list per copy) to exceed ``target_bytes`` together."""
    first = [fmt.prepare(w, group) for w in weights]
    count = max(1, math.ceil(target_bytes / max(_operand_bytes(first), 1)))
    return [first] + [[_copy(o) for o in first] for _ in range(count - 1)]


def _run_all(fmt: Format, inputs: Sequence[torch.Tensor], operands: Sequence[Any]) -> None:
    for x, operand in zip(inputs, operands, strict=True):
        fmt.run(x, operand)


def measure(formats: Sequence[Format], copies: dict[str, list[Any]], inputs: Sequence[torch.Tensor],
            reps: int, min_seconds: float) -> dict[str, float]:
    """Median seconds per call of each format: warm-up, then interleaved rotated rounds over weight copies.

    Runs at least ``reps`` rounds, more (up to 100) when rounds are short, to fill ``min_seconds``.
    """
    times: dict[str, list[float]] = {f.name: [] for f in formats}
    calls = dict.fromkeys(times, 0)
    with torch.inference_mode():
        start = time.perf_counter()
        for fmt in formats:
            _run_all(fmt, inputs, copies[fmt.name][-1])
        warm_up = time.perf_counter() - start
        rounds = min(max(reps, math.ceil(min_seconds / max(warm_up, 1e-9))), 100)
        for round_index in range(rounds):
            shift = round_index % len(formats)
            for fmt in (*formats[shift:], *formats[:shift]):
                operands = copies[fmt.name][calls[fmt.name] % len(copies[fmt.name])]
                calls[fmt.name] += 1
                start = time.perf_counter()
                _run_all(fmt, inputs, operands)
                times[fmt.name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def bench_workload(label: str, weights: Sequence[torch.Tensor], group: int, token_counts: Sequence[int],
                   reps: int, min_seconds: float, target_bytes: int) -> dict[str, float]:
    """Ratios to fp32 (and the fp32 milliseconds) of every available format for one set of weights."""
    formats = [f for f in FORMATS if f.available()]
    for missing in sorted({f.name for f in FORMATS} - {f.name for f in formats}):
        print(f"{label}: {missing} has no kernel here; skipped", file=sys.stderr)
    copies = {}
    for fmt in formats:
        start = time.perf_counter()
        copies[fmt.name] = prepare_copies(fmt, weights, group, target_bytes)
        print(f"{label}: prepared {fmt.name} x{len(copies[fmt.name])} in {time.perf_counter() - start:.1f}s",
              file=sys.stderr)
    figures: dict[str, float] = {}
    for m in token_counts:
        start = time.perf_counter()
        inputs = [torch.randn(m, w.shape[1]) for w in weights]
        medians = measure(formats, copies, inputs, reps, min_seconds)
        figures[f"{label}_M{m}_fp32_ms"] = medians["fp32"] * 1e3
        for fmt in formats[1:]:
            figures[f"{label}_M{m}_{fmt.name}_vs_fp32"] = medians[fmt.name] / medians["fp32"]
        print(f"{label}: M={m} done in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    return figures


def end_to_end(make: Callable[[], DLMAdapter], label: str, prompt_length: int, gen_length: int, steps: int,
               rounds: int) -> dict[str, float]:
    """``generate`` time of the model with every linear W8A8 over the dense model's (interleaved rounds)."""
    dense, compressed = make(), make()
    apply_plan_(compressed, uniform_plan(compressed, weight_bits=8, act_bits=8, steps=steps, gen_length=gen_length))
    kernels = {m.summary["kernels"][0] for m in compressed.model.modules() if isinstance(m, QuantizedLinear)}
    if kernels != {INT8_FBGEMM}:
        raise SystemExit(f"{label}: the W8A8 layers run {sorted(kernels)}, not {INT8_FBGEMM}")
    prompt = torch.randint(0, dense.mask_token_id, (prompt_length,), generator=torch.Generator().manual_seed(0))
    models = {"dense": dense, "int8": compressed}
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for round_index in range(rounds + 1):  # round 0 warms up (and packs the kernel operands)
            order = list(models) if round_index % 2 else list(reversed(models))
            for name in order:
                start = time.perf_counter()
                generate(models[name], prompt, gen_length=gen_length, steps=steps, block_length=gen_length)
                if round_index:
                    times[name].append(time.perf_counter() - start)
    dense_s, int8_s = statistics.median(times["dense"]), statistics.median(times["int8"])
    print(f"{label}: dense {dense_s * 1e3:.0f} ms, int8 {int8_s * 1e3:.0f} ms per generate", file=sys.stderr)
    return {f"e2e_dense_{label}_ms": dense_s * 1e3, f"e2e_int8_{label}": int8_s / dense_s}


def _llada_shaped(num_layers: int) -> DLMAdapter:
    return build_random_model("llama", num_layers=num_layers, hidden_size=4096, num_heads=32,
                              intermediate_size=LLADA_SHAPE[0], vocab_size=8192, max_length=128)


def _linear_weight(module: torch.nn.Module) -> torch.Tensor:
    weight = module.weight
    assert isinstance(weight, torch.Tensor)
    return weight.detach().float()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer token counts and repetitions (under a minute)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    reps, min_seconds = (3, 1.0) if args.quick else (7, 5.0)
    cache = last_level_cache_bytes()
    target = max(3 * cache, 96 * MiB) if args.quick else max(8 * cache, 256 * MiB)

    adapter = load_model()
    embedded = [_linear_weight(adapter.get_module(info.name)) for info in adapter.linears()]
    widths = {w.shape[1] for w in embedded}
    embedded_group = next(g for g in (128, 64, 32) if all(k % g == 0 for k in widths))
    figures = bench_workload("embedded", embedded, embedded_group, (1, 16) if args.quick else (1, 16, 128, 512),
                             reps, min_seconds, target_bytes=0)
    llada = [torch.randn(*LLADA_SHAPE) * 0.02]
    llada_group = int4_group_size(128, LLADA_SHAPE[1]) or 0
    figures |= bench_workload("llada_layer", llada, llada_group, (1, 8) if args.quick else (1, 16, 128, 512),
                              reps, min_seconds, target)

    short = args.quick
    figures |= end_to_end(load_model, "embedded", 32 if short else 64, 32 if short else 64, 8 if short else 16,
                          3 if short else 7)
    figures |= end_to_end(lambda: _llada_shaped(1 if short else 2), "llada_shaped", 32, 32, 4, 3 if short else 5)

    print(f"threads: {torch.get_num_threads()}")
    print(f"cpu_capability: {torch.backends.cpu.get_cpu_capability()}")
    print(f"last_level_cache_mib: {cache / MiB:.0f}")
    print(f"weight_copy_target_mib: {target / MiB:.0f}")
    for name, value in figures.items():
        print(f"{name}: {value:.3g}")


if __name__ == "__main__":
    main()
