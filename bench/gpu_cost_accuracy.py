"""Cost-model accuracy and real kernel speed-ups on one CUDA GPU (run by ``bench/gpu_check.sh``).

Reproduce with::

    python bench/gpu_cost_accuracy.py            # 30 random Plans on a 4-block LLaDA-8B-shaped model
    python bench/gpu_cost_accuracy.py --quick    # 30 Plans on 2 blocks, 2 timing rounds

The model is a random-init LLaDA-8B-shaped stack (hidden 4096, 32 heads, MLP 12288, vocabulary
126464) with fewer blocks, in bf16 on the GPU; a generation is 64 prompt + 64 generated tokens.
Plans are drawn as in ``bench/cost_model_accuracy.py`` (per-(block, attention / MLP) weight and
activation bits over one or two timestep groups, group size 0 or 64, pruning, 8/16/32 steps),
applied with ``apply_plan_``'s default (on CUDA no real kernel: every quantized layer dequantizes
and multiplies in bf16, since each kernel was slower than bf16 here), and their ``generate`` time is
the median over interleaved rounds (CUDA-synchronised). Predictions: the analytic model on the
shipped datasheet spec of the GPU (H100 or H200 class) and on a profile measured in this run
(``measure_profile(device="cuda")``). Kernel speed-ups: one LLaDA MLP projection (K=4096,
N=12288) at M=128, bf16 dense against each real kernel, 2:4 semi-structured sparsity, fp8, and the
dequantize-then-matmul layer ``apply_plan_`` runs by default (``speedup_simulated``: 4-bit weights,
group 128; ``speedup_simulated_w8a8``: 8-bit weights with 8-bit fake-quantized activations).
Figures print last as ``name: value`` lines.
"""

from __future__ import annotations

import argparse
import copy
import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cost_model_accuracy import Workload, accuracy, random_plans  # noqa: E402

from dlmsearch.compress import apply_plan_  # noqa: E402
from dlmsearch.compress.kernels import KERNELS, kernel_available  # noqa: E402
from dlmsearch.compress.prune import keep_mask  # noqa: E402
from dlmsearch.compress.quantize import quantize_rtn  # noqa: E402
from dlmsearch.compress.quantized_linear import QuantConfig, QuantizedLinear  # noqa: E402
from dlmsearch.cost_models.analytic import AnalyticCostModel  # noqa: E402
from dlmsearch.cost_models.hardware_spec import load_hardware  # noqa: E402
from dlmsearch.cost_models.profile import measure_profile  # noqa: E402
from dlmsearch.models.loading import build_random_model  # noqa: E402
from dlmsearch.models.sampler import generate  # noqa: E402

PROMPT, GEN = 64, 64
#: The figures ``cost_model_accuracy.accuracy`` returns, printed per prediction as ``gpu_<label>_<stat>``.
ACCURACY_STATS = ("mape_pct", "kendall", "spearman", "kendall_pairs_10pct_apart")


def _seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def datasheet_name() -> str:
    """The shipped spec closest to this GPU (H200 unless it says H100 or A100)."""
    name = torch.cuda.get_device_name().lower()
    return "h100-sxm" if "h100" in name else "a100-80gb" if "a100" in name else "h200"


def time_plans(w: Workload, plans: list, rounds: int) -> list[float]:
    """Median ms of each Plan's ``generate``, interleaved over rounds, a chunk of Plans at a time."""
    prompt = torch.randint(0, w.adapter.mask_token_id, (PROMPT,), device="cuda")
    medians: list[float] = []
    for start in range(0, len(plans), w.chunk):
        chunk = plans[start:start + w.chunk]
        models = []
        for plan in chunk:
            model = copy.deepcopy(w.adapter)
            apply_plan_(model, plan)
            models.append(model)
        runs = [lambda m=m, p=p: generate(m, prompt, gen_length=GEN, steps=p.sampler.steps,
                                          block_length=p.sampler.block_length)
                for m, p in zip(models, chunk, strict=True)]
        times: list[list[float]] = [[] for _ in chunk]
        with torch.inference_mode():
            for run in runs:
                run()  # warm-up: packs kernel operands
            for _ in range(rounds):
                for i, run in enumerate(runs):
                    times[i].append(_seconds(run, 1) * 1e3)
        medians.extend(statistics.median(t) for t in times)
        print(f"timed Plans {start}..{start + len(chunk) - 1}", file=sys.stderr)
        del models, runs
        gc.collect()
        torch.cuda.empty_cache()
    return medians


def kernel_speedups() -> dict[str, float]:
    """bf16 time over each format's time for x (128, 4096) @ W^T, W (12288, 4096)."""
    weight = torch.randn(12288, 4096, device="cuda") * 0.02
    x = torch.randn(128, 4096, device="cuda", dtype=torch.bfloat16)
    dense_w = weight.bfloat16()
    base = _seconds(lambda: F.linear(x, dense_w), 50)
    out: dict[str, float] = {}
    for fmt, bits, group in (("int8_weight_only", 8, 0), ("int4_weight_only", 4, 128), ("int8_dynamic", 8, 0)):
        if kernel_available(fmt, "cuda"):
            kernel = KERNELS[fmt]
            packed = kernel.pack(quantize_rtn(weight.float(), bits, group), torch.bfloat16)
            out[f"speedup_{fmt}"] = base / _seconds(lambda k=kernel, p=packed: k.linear(x, p), 50)
    from torch.sparse import to_sparse_semi_structured

    pruned = (weight * keep_mask(weight.abs().cpu(), 0.5, "2:4").to(weight.device)).bfloat16()
    sparse = to_sparse_semi_structured(pruned)
    out["speedup_sparse_2_4"] = base / _seconds(lambda: F.linear(x, sparse), 50)
    if torch.cuda.get_device_capability() >= (8, 9):
        scale = torch.ones(1, device="cuda")
        x8, w8 = x.to(torch.float8_e4m3fn), dense_w.to(torch.float8_e4m3fn)
        out["speedup_fp8"] = base / _seconds(
            lambda: torch._scaled_mm(x8, w8.t(), scale_a=scale, scale_b=scale, out_dtype=torch.bfloat16), 50)
    linear = torch.nn.Linear(4096, 12288, bias=False)
    with torch.no_grad():
        linear.weight.copy_(weight.cpu())
    for name, config in (("speedup_simulated", QuantConfig((4,), (16,), group_size=128)),
                         ("speedup_simulated_w8a8", QuantConfig((8,), (8,), group_size=0))):
        layer = QuantizedLinear.from_linear(linear, config).to("cuda")  # apply_plan_'s default: no kernel on CUDA
        with torch.inference_mode():
            out[name] = base / _seconds(lambda m=layer: m(x), 50)
        del layer
    return out


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="2 blocks and 2 timing rounds")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench/gpu_cost_accuracy.py needs a CUDA GPU (torch sees none)")
    blocks, rounds = (2, 2) if args.quick else (4, 3)
    adapter = build_random_model("llama", num_layers=blocks, hidden_size=4096, num_heads=32,
                                 intermediate_size=12288, vocab_size=126464, max_length=PROMPT + GEN)
    adapter.model.to("cuda", torch.bfloat16)
    w = Workload(f"llada8b_{blocks}blocks", adapter, PROMPT, GEN, (8, 16, 32), chunk=6)
    plans = random_plans(w, 30, seed=0)
    figures: dict[str, float] = kernel_speedups()
    profile = measure_profile(adapter.shape, adapter.linears(), token_counts=(32, 64, 128, 256), device="cuda",
                              reps=3, min_seconds=0.2)
    measured = time_plans(w, plans, rounds)
    model = AnalyticCostModel(adapter.shape, adapter.linears(), prompt_length=PROMPT)
    for label, hw in (("profile", profile), ("datasheet", load_hardware(datasheet_name()))):
        scores = accuracy([c.latency_ms for c in model.cost_many(plans, hw)], measured)
        for stat in ACCURACY_STATS:
            figures[f"gpu_{label}_{stat}"] = scores[stat]
    figures["gpu_plans"] = len(plans)
    print(f"device: {torch.cuda.get_device_name()}")
    for name, value in figures.items():
        print(f"{name}: {value:.4g}")
    return figures


if __name__ == "__main__":
    main()
