"""Accuracy of the analytic cost model against real, end-to-end generation on this CPU.

Reproduce with::

    .venv/bin/python bench/cost_model_accuracy.py            # 30 random Plans + 8 extremes + named, per model
    .venv/bin/python bench/cost_model_accuracy.py --quick    # 6 random Plans + 8 extremes + named, 2 rounds
    .venv/bin/python bench/cost_model_accuracy.py --quick --only embedded --threads 1

Two models: the embedded model (``load_model()``, the quickstart's workload: prompt 32 + 64 generated
tokens, M = 96, 16/32/64 steps, blocks of 16 or 32) and a LLaDA-shaped random model
(``build_random_model``: 8 layers, d=1024, 8 heads of 128, MLP 3072 = 3d as LLaDA, vocabulary
8192; prompt 8 + 8 generated, M = 16, 1-4 steps). Each Plan (random per-(block, attention / MLP)
weight bits over one or two timestep groups, activation bits, group size 0 or 64, magnitude
pruning unstructured / heads / channels, nested or copies, steps, block length; then the
extremes; then the named quickstart Plans -- dense, W8, W4, W4/8 over two timestep groups, heads
1/3 + MLP channels 0.25, unstructured 50% -- at every steps / block length) is applied as the
search deploys it (``apply_plan_`` with its default ``use_kernels``: dequantize-then-matmul on
CPUs; ``--use-kernels`` forces the real low-bit kernels, and prices them) and its whole
``generate`` call timed. Plans are
timed in interleaved rounds (every Plan once per round, shuffled order; the LLaDA-shaped model in
chunks of 6 Plans, which is what fits in memory), each round also times the dense model, and the
figure per Plan is the median over rounds (9; ``measured_round_to_round_kendall`` says how well one
round ranks the Plans like another: the ceiling of any prediction's Kendall tau).
``drift-corrected`` divides each time by the dense time of the same round and multiplies by the
dense median of the whole run (timings on this shared machine drift 2-3x; the ratio to a
neighbour does not).

Predictions: (a) datasheet-only: the analytic model on the ``x86-avx512-laptop`` spec;
(b) calibrated: the same analytic model on a profile measured in this run just before the timings
(``measure_profile`` over the model's shapes at M/4 .. 2M); (b') interleaved: the same profile
measured once before each timing round (``rounds`` passes spread over the rounds of every chunk)
and merged (``merge_profiles``: each sample's median over the passes), so that the profile sees the
machine in the states the timings saw, not a snapshot of its speed at the start; (c) quick profile: the profile
``hardware: local`` measures (:data:`QUICK_TOKEN_COUNTS`, few rounds). The analytic model is built
as the search builds it (dense dtype and kernels follow the target). Reported per model: MAPE,
Kendall tau and Spearman rho of predicted vs measured latency (and Kendall's tau-a over the pairs
measured at least 10% apart: closer pairs are within the noise), the mean / max error over the named
Plans; tensor bytes held after generation vs the predicted
weights under the ``runtime`` layout; and, for a few Plans built one at a time, RSS growth (peak
during generation minus RSS before the model copy; glibc's mmap threshold is lowered so freed
tensors leave the RSS) vs the predicted weights + activations + logits. Last, the analytic
LLaDA-8B prediction on the A100 80GB spec (bf16, prompt 512, 256 tokens, 256 steps, block 32),
compared with Fast-dLLM's published 6.7 tokens/s. Figures print as ``name: value`` lines.

One torch thread by default (``--threads``): on a shared 2-core machine whose cores are
oversubscribed, a 2-thread op waits for its descheduled peer and takes a multiple of the scheduler
slice (~12 ms) whatever its size, which no per-op model can predict.
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from dlmsearch.compress.apply import apply_plan_
from dlmsearch.cost_models import AnalyticCostModel, HardwareSpec, load_hardware, measure_profile, merge_profiles
from dlmsearch.cost_models.measured import (
    generate_call,
    peak_rss_bytes,
    reset_peak_rss,
    rss_bytes,
    tensor_bytes,
    time_call,
)
from dlmsearch.cost_models.profile import QUICK_TOKEN_COUNTS
from dlmsearch.models.adapters import ATTENTION_ROLES, DLMAdapter, LinearInfo, ModelShape
from dlmsearch.models.grouping import layer_groups
from dlmsearch.models.loading import build_random_model, load_model
from dlmsearch.plan import LayerPlan, ModelRef, Plan, SamplerSettings

DATASHEET = "x86-avx512-laptop"
MMAP_THRESHOLD = "65536"


@dataclass(frozen=True)
class Workload:
    """A model, its sampler lengths and the step counts its Plans draw from."""

    name: str
    adapter: DLMAdapter
    prompt_length: int
    gen_length: int
    steps: tuple[int, ...]
    chunk: int  # Plans held in memory at once
    block_lengths: tuple[int, ...] = ()  # () : one block of gen_length


def _group(adapter: DLMAdapter, rng: random.Random, attention: bool, groups: int) -> LayerPlan:
    bits = tuple(rng.choice((2, 3, 4, 4, 8, 8, 16)) for _ in range(groups))
    act = tuple(rng.choice((8, 16, 16)) for _ in range(groups))
    structure, sparsity = "unstructured", 0.0
    roll = rng.random()
    group = rng.choice((0, 64))
    if roll < 0.2:
        structure, sparsity = ("heads", 0.5) if attention else ("channels", rng.choice((0.25, 0.5)))
        group = 0 if attention else group  # half the heads of a small model is no multiple of 64 columns
    elif roll < 0.4:
        sparsity = rng.choice((0.3, 0.5))
    return LayerPlan(bits, act, sparsity=sparsity, prune_method="magnitude", structure=structure, group_size=group)


def _plan(w: Workload, attn: dict[int, LayerPlan], mlp: dict[int, LayerPlan], steps: int, boundaries: tuple,
          storage: str, block_length: int | None = None) -> Plan:
    layers = {}
    for group in layer_groups(w.adapter.linears(), "block_role"):
        per_block = attn if group.roles <= ATTENTION_ROLES else mlp
        layers.update(dict.fromkeys(group.modules, per_block[group.blocks[0]]))
    sampler = SamplerSettings(steps=steps, gen_length=w.gen_length, block_length=block_length or w.gen_length)
    return Plan(ModelRef(w.adapter.name, w.adapter.shape.fingerprint), sampler, boundaries, storage, layers)


def random_plans(w: Workload, count: int, seed: int = 0) -> list[Plan]:
    """Seeded random Plans, one LayerPlan per (block, attention / MLP) group."""
    rng = random.Random(seed)
    plans = []
    blocks = range(w.adapter.shape.num_layers)
    for _ in range(count):
        groups = rng.choice((1, 2))
        boundaries = (0.5,) if groups == 2 else ()
        attn = {b: _group(w.adapter, rng, True, groups) for b in blocks}
        mlp = {b: _group(w.adapter, rng, False, groups) for b in blocks}
        block = rng.choice(w.block_lengths) if w.block_lengths else None
        plans.append(_plan(w, attn, mlp, rng.choice(w.steps), boundaries, rng.choice(("nested", "copies")), block))
    return plans


EXTREMES = 8  # extreme_plans returns this many (the RSS checks take the first ones)
NAMED = ("dense", "W8", "W4", "W4/8 (2 timestep groups)", "heads 1/3 + channels 0.25", "unstructured 50%")


def extreme_plans(w: Workload) -> list[Plan]:
    """Pareto-like corners: dense at both step extremes, every kernel, structure, low bits."""
    blocks = range(w.adapter.shape.num_layers)
    lo, hi = min(w.steps), max(w.steps)

    def uniform(layer: LayerPlan, steps: int, mlp: LayerPlan | None = None, boundaries: tuple = ()) -> Plan:
        return _plan(w, dict.fromkeys(blocks, layer), dict.fromkeys(blocks, mlp or layer), steps, boundaries,
                     "nested")

    dense = LayerPlan()
    return [uniform(dense, lo), uniform(dense, hi),
            uniform(LayerPlan((4,), (16,), group_size=64), hi),
            uniform(LayerPlan((8,), (16,), group_size=0), lo),
            uniform(LayerPlan((8,), (8,), group_size=0), hi),
            uniform(LayerPlan((8,), (16,), group_size=64), hi),  # no kernel: dequantized, dense speed
            uniform(LayerPlan(structure="heads", sparsity=0.5, prune_method="magnitude"), hi,
                    LayerPlan(structure="channels", sparsity=0.5, prune_method="magnitude")),
            uniform(LayerPlan((8, 2), (16, 16), group_size=64), hi, boundaries=(0.5,))]


def named_plans(w: Workload) -> list[tuple[str, Plan]]:
    """The quickstart's reference Plans (:data:`NAMED`) at every (steps, block length) of the workload."""
    blocks = range(w.adapter.shape.num_layers)
    heads = max(1, w.adapter.shape.num_heads // 3) / w.adapter.shape.num_heads
    layers = [LayerPlan(group_size=0), LayerPlan((8,), (16,), group_size=64), LayerPlan((4,), (16,), group_size=64),
              LayerPlan((4, 8), (16, 16), group_size=64),
              (LayerPlan(structure="heads", sparsity=heads, prune_method="magnitude", group_size=0),
               LayerPlan(structure="channels", sparsity=0.25, prune_method="magnitude", group_size=0)),
              LayerPlan(sparsity=0.5, prune_method="magnitude", group_size=0)]
    out = []
    for steps in w.steps:
        for block in w.block_lengths or (w.gen_length,):
            if steps % (w.gen_length // block) or steps // (w.gen_length // block) > block:
                continue
            for name, layer in zip(NAMED, layers, strict=True):
                attn, mlp = layer if isinstance(layer, tuple) else (layer, layer)
                boundaries = (0.5,) if len(attn.weight_bits) == 2 else ()
                plan = _plan(w, dict.fromkeys(blocks, attn), dict.fromkeys(blocks, mlp), steps, boundaries,
                             "nested", block)
                out.append((f"{name} steps {steps} block {block}", plan))
    return out


USE_KERNELS: bool | None = None  # apply_plan_'s default (simulated on CPUs); --use-kernels sets True


def all_plans(w: Workload, count: int) -> tuple[list[Plan], list[str]]:
    """Random Plans, the extremes and the named Plans, with a label each."""
    named = named_plans(w)
    plans = random_plans(w, count) + extreme_plans(w) + [p for _, p in named]
    labels = [f"random {i}" for i in range(count)] + [f"extreme {i}" for i in range(EXTREMES)] + [n for n, _ in named]
    return plans, labels


def _compressed(w: Workload, plan: Plan) -> DLMAdapter:
    model = copy.deepcopy(w.adapter)
    apply_plan_(model, plan, use_kernels=USE_KERNELS)
    return model


def time_plans(w: Workload, plans: Sequence[Plan], rounds: int,
               before_round: Callable[[int, int], object] | None = None,
               ) -> tuple[list[float], list[float], list[int], list[list[float]]]:
    """(median ms, drift-corrected ms, held tensor bytes, ms of every round) per Plan, interleaved with the
    dense model. ``before_round(index, total)`` runs before each round of each chunk of Plans."""
    dense_run = generate_call(w.adapter, plans[0].sampler, w.prompt_length)
    raw: list[list[float]] = [[] for _ in plans]
    relative: list[list[float]] = [[] for _ in plans]
    dense_all: list[float] = []
    held = [0] * len(plans)
    total = -(-len(plans) // w.chunk) * rounds
    for start in range(0, len(plans), w.chunk):
        chunk = list(range(start, min(start + w.chunk, len(plans))))
        models = {i: _compressed(w, plans[i]) for i in chunk}
        runs = {i: generate_call(models[i], plans[i].sampler, w.prompt_length) for i in chunk}
        for i in chunk:
            runs[i]()  # warm-up: packs kernel operands, fills dequantized caches
        dense_steps = plans[0].sampler.steps
        for r in range(rounds):
            if before_round is not None:
                before_round(start // w.chunk * rounds + r, total)
            dense_s = time_call(w.adapter, dense_run) / dense_steps  # per step: Plans differ in steps
            dense_all.append(dense_s)
            order = random.Random(r).sample(chunk, len(chunk))  # a new order each round: load drifts
            for i in order:
                seconds = time_call(models[i], runs[i])
                raw[i].append(seconds * 1e3)
                relative[i].append(seconds / dense_s)
        for i in chunk:
            held[i] = tensor_bytes(models[i].model)
        print(f"{w.name}: timed Plans {chunk[0]}..{chunk[-1]}", file=sys.stderr)
        del models, runs
        gc.collect()
    dense_ms = statistics.median(dense_all) * 1e3
    return ([statistics.median(v) for v in raw], [statistics.median(v) * dense_ms for v in relative], held, raw)


def rss_growth_child(w: Workload, plan: Plan) -> tuple[int, int]:
    """(peak RSS during generation minus RSS before the compressed copy was made, RSS growth of the process's
    first generation) in bytes; run in a child.

    The first generation of a process leaves state behind that belongs to the runtime, not to any model
    (oneDNN's JIT-compiled kernels, thread pools, dispatcher caches): the dense model generates once
    before the measurement, and that one-time growth is returned apart.
    """
    gc.collect()
    start = rss_bytes()
    generate_call(w.adapter, plan.sampler, w.prompt_length)()
    gc.collect()
    before = rss_bytes()
    model = _compressed(w, plan)
    run = generate_call(model, plan.sampler, w.prompt_length)
    gc.collect()
    reset_peak_rss()
    run()
    growth = peak_rss_bytes() - before
    del model, run
    gc.collect()
    return growth, before - start


def accuracy(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    """MAPE (%), Kendall tau, Spearman rho, and Kendall's tau-a over the pairs whose measured times differ
    by at least 10% (pairs closer than that are within this machine's run-to-run noise)."""
    p, m = np.asarray(predicted), np.asarray(measured)
    i, j = np.triu_indices(len(m), k=1)
    apart = np.abs(m[i] - m[j]) >= 0.1 * np.minimum(m[i], m[j])
    concordance = np.sign(p[i] - p[j])[apart] * np.sign(m[i] - m[j])[apart]
    return {"mape_pct": float(np.mean(np.abs(p - m) / m) * 100), "kendall": float(stats.kendalltau(p, m)[0]),
            "spearman": float(stats.spearmanr(p, m)[0]),
            "kendall_pairs_10pct_apart": float(concordance.mean()) if concordance.size else float("nan")}


def round_to_round_kendall(per_round: Sequence[Sequence[float]]) -> float:
    """Mean Kendall tau between the times of two rounds, over every pair of rounds: how well one
    measurement ranks the Plans like a repeat of itself (the ceiling for any prediction)."""
    rounds = np.asarray(per_round).T  # (rounds, plans)
    taus = [stats.kendalltau(rounds[a], rounds[b])[0] for a in range(len(rounds)) for b in range(a + 1, len(rounds))]
    return float(np.mean(taus)) if taus else float("nan")


def run_workload(w: Workload, count: int, rounds: int, rss_plans: int) -> dict[str, float]:
    """Every figure of one model."""
    plans, labels = all_plans(w, count)
    linears = w.adapter.linears()
    m = w.prompt_length + w.gen_length
    start = time.perf_counter()

    def measure() -> HardwareSpec:
        return measure_profile(w.adapter.shape, linears, token_counts=(max(1, m // 4), m // 2, m, 2 * m),
                               reps=5, min_seconds=0.5, progress=False)

    profile = measure()
    print(f"{w.name}: profile in {time.perf_counter() - start:.0f}s", file=sys.stderr)
    passes: list[HardwareSpec] = []

    def profile_pass(index: int, total: int) -> None:  # `rounds` passes spread over the timing rounds
        if index % max(1, total // rounds) == 0 and len(passes) < rounds:
            passes.append(measure())
    start = time.perf_counter()  # what `hardware: local` measures (local_profile(quick=True))
    quick = measure_profile(w.adapter.shape, linears, token_counts=QUICK_TOKEN_COUNTS, reps=3, min_seconds=0.15,
                            progress=False)
    print(f"{w.name}: quick profile in {time.perf_counter() - start:.0f}s", file=sys.stderr)
    # the cost model as the search builds it: dense dtype and kernels follow the target (fp32, simulated on CPUs)
    model = AnalyticCostModel(w.adapter.shape, linears, prompt_length=w.prompt_length, use_kernels=USE_KERNELS)
    runtime = AnalyticCostModel(w.adapter.shape, linears, prompt_length=w.prompt_length, layout="runtime",
                                use_kernels=USE_KERNELS)
    datasheet = [c.latency_ms for c in model.cost_many(plans, load_hardware(DATASHEET))]
    calibrated = [c.latency_ms for c in model.cost_many(plans, profile)]
    local = [c.latency_ms for c in model.cost_many(plans, quick)]
    memory = runtime.cost_many(plans, profile)
    start = time.perf_counter()
    measured, corrected, held, per_round = time_plans(w, plans, rounds, profile_pass)
    print(f"{w.name}: {len(plans)} Plans timed in {time.perf_counter() - start:.0f}s", file=sys.stderr)
    interleaved = [c.latency_ms for c in model.cost_many(plans, merge_profiles(w.adapter.shape, linears, passes))]
    figures: dict[str, float] = {"plans": len(plans), "tokens_per_step": m, "rounds": rounds,
                                 "measured_ms_min": min(measured), "measured_ms_max": max(measured),
                                 "measured_round_to_round_kendall": round_to_round_kendall(per_round)}
    for label, predicted in (("datasheet", datasheet), ("calibrated", calibrated), ("interleaved", interleaved),
                             ("quick_profile", local)):
        for target, values in (("raw", measured), ("drift_corrected", corrected)):
            for key, value in accuracy(predicted, values).items():
                figures[f"{label}_{target}_{key}"] = value
    named = [i for i, label in enumerate(labels) if not label.startswith(("random", "extreme"))]
    for label, predicted in (("calibrated", calibrated), ("interleaved", interleaved), ("quick_profile", local)):
        errors = [(predicted[i] - measured[i]) / measured[i] * 100 for i in named]
        if errors:
            figures[f"named_{label}_mean_abs_error_pct"] = float(np.mean(np.abs(errors)))
            figures[f"named_{label}_max_abs_error_pct"] = float(np.max(np.abs(errors)))
    weight_errors = [abs(c.breakdown["weights_bytes"] - h) / h * 100 for c, h in zip(memory, held, strict=True)]
    figures["tensor_bytes_mean_abs_error_pct"] = float(np.mean(weight_errors))
    figures["tensor_bytes_max_abs_error_pct"] = float(np.max(weight_errors))
    for i, (plan, meas, cor, cal, inter, loc, ds) in enumerate(zip(plans, measured, corrected, calibrated, interleaved,
                                                                   local, datasheet, strict=True)):
        print(f"{w.name} plan {i:2d} steps {plan.sampler.steps:3d}: measured {meas:9.1f} ms (drift-corrected "
              f"{cor:9.1f})  calibrated {cal:9.1f} ({(cal / meas - 1) * 100:+5.1f}%)  interleaved {inter:9.1f} "
              f"({(inter / meas - 1) * 100:+5.1f}%)  quick profile {loc:9.1f} "
              f"({(loc / meas - 1) * 100:+5.1f}%)  datasheet {ds:8.2f}  held {held[i] / 2**20:7.1f} MiB  "
              f"predicted {memory[i].breakdown['weights_bytes'] / 2**20:7.1f} MiB  [{labels[i]}]", file=sys.stderr)
    rss_errors, first_generations = [], []
    for index in range(count, count + rss_plans):  # the first extremes
        (growth, first_generation), cost = rss_growth(w.name, index, count), memory[index]
        first_generations.append(first_generation)
        print(f"{w.name}: RSS growth {growth / 2**20:.1f} MiB, predicted peak {cost.peak_mem_bytes / 2**20:.1f} MiB "
              f"(the process's first generation grew it by {first_generation / 2**20:.1f} MiB)", file=sys.stderr)
        if growth > 0:
            rss_errors.append((cost.peak_mem_bytes - growth) / growth * 100)
    if first_generations:
        figures["rss_first_generation_mib"] = float(np.median(first_generations)) / 2**20
    if rss_errors:
        figures["rss_growth_mean_abs_error_pct"] = float(np.mean(np.abs(rss_errors)))
        figures["rss_growth_max_abs_error_pct"] = float(np.max(np.abs(rss_errors)))
        figures["rss_growth_mean_signed_error_pct"] = float(np.mean(rss_errors))
    return {f"{w.name}_{k}": v for k, v in figures.items()}


def rss_growth(name: str, index: int, count: int) -> tuple[int, int]:
    """RSS growth of Plan ``index`` measured in a fresh process with a low glibc mmap threshold.

    The threshold makes freed tensors leave the RSS, but turns every large allocation into an
    mmap + page faults, several times slower: that is why it runs apart from the timings.
    """
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD}
    flags = ["--use-kernels"] if USE_KERNELS else []
    out = subprocess.run([sys.executable, __file__, "--rss-child", name, str(index), str(count), *flags], env=env,
                         capture_output=True, text=True, check=True).stdout
    values = dict(line.split(":") for line in out.splitlines() if line.startswith("rss_"))
    return int(values["rss_growth_bytes"]), int(values["rss_first_generation_bytes"])


LLADA_8B = ModelShape("llama", 32, 4096, 32, 32, 128, 12288, 126464, 4096)


def llada_a100() -> dict[str, float]:
    """Analytic LLaDA-8B on the A100 80GB spec: bf16, 256 tokens, 256 steps, block 32, prompt 512 (and 1024)."""
    roles = (("q", 4096, 4096), ("k", 4096, 4096), ("v", 4096, 4096), ("o", 4096, 4096), ("gate", 4096, 12288),
             ("up", 4096, 12288), ("down", 12288, 4096))
    linears = [LinearInfo(f"model.layers.{b}.{r}", r, b, k, n) for b in range(32) for r, k, n in roles]
    sampler = SamplerSettings(steps=256, gen_length=256, block_length=32)
    plan = Plan(ModelRef("llada-8b"), sampler, (), "nested", {})
    figures = {}
    for prompt in (512, 1024):
        cost = AnalyticCostModel(LLADA_8B, linears, prompt_length=prompt).cost(plan, load_hardware("a100-80gb"))
        figures[f"llada8b_a100_prompt{prompt}_latency_s"] = cost.latency_ms / 1e3
        figures[f"llada8b_a100_prompt{prompt}_tokens_per_s"] = 256 / (cost.latency_ms / 1e3)
        for part in ("linear", "attention", "lm_head"):
            figures[f"llada8b_a100_prompt{prompt}_{part}_share"] = cost.breakdown[f"{part}_ms"] / cost.latency_ms
    figures["fast_dllm_baseline_tokens_per_s"] = 6.7
    return figures


def workload(name: str) -> Workload:
    """The two benchmark models (deterministic: the random model is seeded)."""
    if name == "embedded":
        return Workload("embedded", load_model(), 32, 64, (16, 32, 64), 128, (16, 32))  # the quickstart's
    big = build_random_model("llama", num_layers=8, hidden_size=1024, num_heads=8, intermediate_size=3072,
                             vocab_size=8192, max_length=64)
    return Workload("llada8x1024", big, 8, 8, (1, 2, 4), 6)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true",
                        help="6 random Plans + 8 extremes (+ the named Plans) per model, 2 rounds")
    parser.add_argument("--only", choices=("embedded", "llada8x1024"), help="one model only")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on an oversubscribed machine multi-threaded ops wait for "
                             "descheduled peers and time in scheduler slices)")
    parser.add_argument("--use-kernels", action="store_true",
                        help="apply Plans with real low-bit kernels (default: apply_plan_'s default, which simulates "
                             "on CPUs) and price them so")
    parser.add_argument("--rounds", type=int, default=None, help="timing rounds per Plan (default 9, quick 2)")
    parser.add_argument("--rss-child", nargs=3, metavar=("MODEL", "INDEX", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    global USE_KERNELS
    USE_KERNELS = True if args.use_kernels else None
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    count, rounds, rss_plans = (6, 2, 2) if args.quick else (30, 9, 4)
    rounds = args.rounds or rounds
    if args.rss_child:
        name, index, count = args.rss_child[0], int(args.rss_child[1]), int(args.rss_child[2])
        w = workload(name)
        growth, first_generation = rss_growth_child(w, all_plans(w, count)[0][index])
        print(f"rss_growth_bytes: {growth}\nrss_first_generation_bytes: {first_generation}")
        return {}
    figures: dict[str, float] = {}
    workloads = [workload(name) for name in ("embedded", "llada8x1024") if args.only in (None, name)]
    for w in workloads:
        figures |= run_workload(w, count, rounds, rss_plans)
    figures |= llada_a100()
    print(f"threads: {torch.get_num_threads()}")
    for name, value in figures.items():
        print(f"{name}: {value:.4g}")
    return figures


if __name__ == "__main__":
    main()
