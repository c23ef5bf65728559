"""``dlmsearch`` command line: one subcommand per user verb, each a thin layer over the API."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dlmsearch.evaluators.base import FIDELITIES
from dlmsearch.models.embedded import EMBEDDED_MODEL_NAME
from dlmsearch.models.loading import ModelLoadError
from dlmsearch.models.sampler_rules import REMASKING_STRATEGIES, SamplerSettingsError
from dlmsearch.plan import (
    PRUNE_METHODS,
    STRUCTURES,
    WEIGHT_STORAGES,
    PlanValidationError,
    SamplerSettings,
)
from dlmsearch.search.attributes import METRICS_ATTR

#: Errors that are the user's input, shown as one message without a traceback.
USER_ERRORS: tuple[type[Exception], ...] = (PlanValidationError, ModelLoadError, SamplerSettingsError,
                                            FileNotFoundError, ValueError)


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=EMBEDDED_MODEL_NAME,
                        help=f"embedded model name or local checkpoint folder (default: {EMBEDDED_MODEL_NAME})")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow a checkpoint folder's own modelling code to run")


#: Sampler defaults when neither the command line nor a compressed model's Plan sets them.
SAMPLER_DEFAULTS: dict[str, Any] = dataclasses.asdict(SamplerSettings())
#: ``generate``'s own: 16-token blocks, since one 64-token block degenerates into spaces on the embedded model.
GENERATE_DEFAULTS: dict[str, Any] = {**SAMPLER_DEFAULTS, "block_length": 16}


def _add_sampler_args(parser: argparse.ArgumentParser, defaults: dict[str, Any]) -> None:
    note = "default: the compressed model's Plan, else {}"
    parser.add_argument("--steps", type=int, help="denoising steps, " + note.format(defaults["steps"]))
    parser.add_argument("--gen-length", type=int, help="tokens to generate, " + note.format(defaults["gen_length"]))
    parser.add_argument("--block-length", type=int, help="semi-autoregressive block length, "
                        + note.format(defaults["block_length"]))
    parser.add_argument("--remasking", choices=REMASKING_STRATEGIES, help="default: the Plan's, else low_confidence")
    parser.add_argument("--temperature", type=float, help="0 = greedy (default: the Plan's, else 0)")
    parser.add_argument("--seed", type=int, default=0)


def _sampler_settings(args: argparse.Namespace, plan_sampler: Any, defaults: dict[str, Any]) -> dict[str, Any]:
    """Explicit flags win, then the compressed model's Plan, then ``defaults``."""
    settings = dict(defaults)
    if plan_sampler is not None:
        settings.update({key: getattr(plan_sampler, key) for key in defaults})
    settings.update({key: getattr(args, key) for key in defaults if getattr(args, key) is not None})
    return settings


def cmd_generate(args: argparse.Namespace) -> int:
    """Generate text with the denoising sampler."""
    from dlmsearch.models.loading import load_model
    from dlmsearch.models.sampler import generate

    adapter = load_model(args.model, trust_remote_code=args.trust_remote_code)
    record = adapter.compression
    settings = _sampler_settings(args, record.plan.sampler if record is not None else None, GENERATE_DEFAULTS)
    prompt = adapter.encode(args.prompt).repeat(args.num_samples, 1)
    out = generate(adapter, prompt, seed=args.seed, **settings)
    for row in out:
        print(adapter.decode(row))
        if args.num_samples > 1:
            print("-" * 40)
    return 0


def cmd_plan_init(args: argparse.Namespace) -> int:
    """Write a uniform Plan for a model."""
    from dlmsearch.models.loading import load_model
    from dlmsearch.plan import uniform_plan

    adapter = load_model(args.model, trust_remote_code=args.trust_remote_code)
    plan = uniform_plan(adapter, weight_bits=args.bits, act_bits=args.act_bits, sparsity=args.sparsity,
                        prune_method=args.prune_method, structure=args.structure,
                        group_size=args.group_size, timestep_groups=args.timestep_groups,
                        steps=args.steps, gen_length=args.gen_length, block_length=args.block_length,
                        weight_storage=args.storage)
    path = plan.save(args.output)
    print(f"wrote {path} ({len(plan.layers)} layers, {plan.num_timestep_groups} timestep group(s))")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Check a Plan JSON (with --model: against that model), a study spec or a hardware / profile YAML;
    print every problem."""
    from dlmsearch.plan import load_plan

    path = Path(args.file)
    if path.suffix in (".yaml", ".yml"):
        if _is_study_spec(path):
            from dlmsearch.search.spec import load_study_spec

            study = load_study_spec(path)
            print(f"{path}: valid study spec {study.study!r} ({study.model} on {study.hardware})")
            return 0
        from dlmsearch.cost_models.hardware_spec import load_hardware

        spec = load_hardware(path)
        print(f"{path}: valid hardware spec {spec.name!r} ({spec.kind})")
        return 0
    plan = load_plan(path)
    if args.model:
        from dlmsearch.compress import check_plan_fits
        from dlmsearch.models.loading import load_model

        check_plan_fits(plan, load_model(args.model, trust_remote_code=args.trust_remote_code), str(path))
    print(f"{path}: valid Plan ({len(plan.layers)} layers, {plan.num_timestep_groups} timestep group(s))")
    return 0


def _is_study_spec(path: Path) -> bool:
    """A YAML mapping with a ``study`` field (hardware specs have ``name`` instead)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False  # the hardware loader reports what is wrong with the file
    return isinstance(data, dict) and "study" in data


def cmd_apply(args: argparse.Namespace) -> int:
    """Apply a Plan to a model and save the compressed model."""
    from dlmsearch.compress import CalibrationSet, apply_plan_, save_compressed
    from dlmsearch.models.loading import load_model
    from dlmsearch.plan import load_plan

    plan = load_plan(args.plan)
    adapter = load_model(args.model or plan.model.name, trust_remote_code=args.trust_remote_code)
    calibration = CalibrationSet.from_split(adapter, n_sequences=args.calibration_sequences, seed=args.seed)
    record = apply_plan_(adapter, plan, calibration)
    out = save_compressed(adapter, args.out)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"wrote {out} ({size / 2**20:.2f} MiB; {len(record.quantized)} quantized linears)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score a Plan's quality with the proxy or the full evaluator and print every metric."""
    import json

    from dlmsearch.evaluators import FullEvaluator, FullSettings, ProxyEvaluator, ProxySettings
    from dlmsearch.evaluators.base import settings_with
    from dlmsearch.evaluators.user_text import read_prompts, read_text_ids
    from dlmsearch.models.loading import load_model
    from dlmsearch.plan import load_plan

    plan = load_plan(args.plan)
    adapter = load_model(args.model or plan.model.name, trust_remote_code=args.trust_remote_code)
    text_ids = read_text_ids(adapter, args.text, "--text") if args.text else None
    evaluator: FullEvaluator | ProxyEvaluator
    if args.evaluator == "full":
        prompts = read_prompts(args.prompts, "--prompts") if args.prompts else []
        settings = settings_with(FullSettings, args.set)
        evaluator = FullEvaluator(adapter, settings, text_ids=text_ids, prompts=prompts)
    else:
        if args.prompts:
            raise ValueError("--prompts: only the full evaluator generates from prompts; allowed with --evaluator full")
        evaluator = ProxyEvaluator(adapter, settings_with(ProxySettings, args.set), text_ids=text_ids)
    print(f"scoring {args.plan} with the {args.evaluator} evaluator at {args.fidelity} fidelity", file=sys.stderr)
    try:
        result = evaluator.evaluate(plan, args.fidelity)  # applying the Plan checks it against the model
    except PlanValidationError as exc:
        raise PlanValidationError(exc.issues, f"{args.plan} for model {adapter.name or '?'}") from None
    if args.json:
        print(json.dumps({"evaluator": args.evaluator, "fidelity": result.fidelity, "score": result.score,
                          "metrics": result.metrics}, indent=2))
    else:
        print(f"score: {result.score:.6f}  (lower is better; 0 = the dense model)")
        for name, value in result.metrics.items():
            print(f"{name}: {value:.6f}")
    return 0


def cmd_sinks(args: argparse.Namespace) -> int:
    """Compute attention-sink statistics and write their plotly report."""
    from dlmsearch.reports.sinks import run_sinks

    path = run_sinks(args.model, Path(args.out), n_sequences=args.sequences, seq_len=args.seq_len, seed=args.seed)
    print(f"report: {path}")
    return 0


def cmd_hardware(args: argparse.Namespace) -> int:
    """List the shipped hardware specs or show one (or a user's YAML file)."""
    from dlmsearch.cost_models.hardware_spec import describe, list_hardware, load_hardware

    if args.hardware_command == "list":
        for name in list_hardware():
            spec = load_hardware(name)
            print(f"{name:24s} {spec.kind}  bf16 {spec.peak('bf16') / 1e12:7.1f} TFLOP/s  "
                  f"{spec.memory_bandwidth_bytes_per_s / 1e9:6.0f} GB/s  {spec.memory_bytes / 2**30:6.1f} GiB")
    else:
        print(describe(load_hardware(args.name)))
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    """Measure (or load from the cache) this device's profile for a model's shapes; write it as YAML."""
    from dlmsearch.cost_models.profile import FULL_TOKEN_COUNTS, QUICK_TOKEN_COUNTS, local_profile, profile_summary
    from dlmsearch.models.loading import load_model

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)  # part of the profile's cache key (device fingerprint)
    adapter = load_model(args.model, trust_remote_code=args.trust_remote_code)
    counts = args.tokens or (QUICK_TOKEN_COUNTS if args.quick else FULL_TOKEN_COUNTS)
    spec = local_profile(adapter.shape, adapter.linears(), quick=args.quick, refresh=args.refresh,
                         token_counts=counts, device=_profile_device(args.device))
    spec.save(args.out)
    print("\n".join(profile_summary(spec)))
    print(f"profile: {args.out} (use it as hardware: {args.out}, or hardware: local)")
    return 0


def _profile_device(name: str) -> str:
    import torch

    if name not in ("cpu", "cuda"):
        raise SystemExit(f"--device: {name!r} is not allowed; allowed: cpu, cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device: 'cuda' is not allowed here: torch sees no CUDA GPU (a CPU build, or no driver)")
    return name


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def cmd_run(args: argparse.Namespace) -> int:
    """Run (or resume) a study; print the front's size, the report and how to export."""
    from dlmsearch.search import load_study_spec, run_study

    _set_threads(args.threads)
    spec = load_study_spec(_study_path(args.spec))
    _say_remote_code(spec)
    summary = run_study(spec, args.out or Path("runs") / spec.study, storage=args.storage, n_trials=args.n_trials,
                        force=args.force)
    print(f"study {spec.study}: {len(summary.study.trials)} trials, feasible front {len(summary.front)} Plans, "
          f"hypervolume {summary.hypervolume:.4f}")
    if summary.verification is not None:
        print(_verification_line(summary.verification))
    print(f"report: {summary.run_dir / 'report.html'}")
    print(f"export: dlmsearch export {summary.run_dir} --pick 'min quality' -o plan.json")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Add a worker process to an existing or new study in a shared storage."""
    from dlmsearch.search import load_study_spec, run_study

    _set_threads(args.threads)
    spec = load_study_spec(_study_path(args.spec))
    out = args.out or Path("runs") / f"{spec.study}-worker"
    _say_remote_code(spec)
    summary = run_study(spec, out, storage=args.storage, n_trials=args.n_trials, write_outputs=False,
                        shared=True, force=args.force)
    verified = "" if summary.verification is None else \
        f"; verified {summary.verification.scored} front Plan(s) here"
    print(f"worker done: study {spec.study} holds {len(summary.study.trials)} trials{verified}")
    return 0


def _verification_line(verification: Any) -> str:
    """How many front Plans the full evaluator verified, and how well the proxy ranked them."""
    from dlmsearch.search.verification import proxy_agreement

    results = verification.results
    line = (f"front verified by the full evaluator: {len(results)} Plans ({verification.scored} scored now, "
            f"{verification.reused} before)")
    agreement = proxy_agreement(list(results.values()))
    if agreement is not None:
        line += f"; proxy vs verified Spearman {agreement:.2f}"
    return line + (f"; not verified (failed): {list(verification.failed)}" if verification.failed else "")


def _say_remote_code(spec: Any) -> None:
    if spec.trust_remote_code:
        print(f"note: trust_remote_code is on (set in the spec): the modelling code in {spec.model} will run",
              file=sys.stderr)


def _study_path(name: str) -> Path:
    """A spec path, or the name of a shipped study (``quickstart``)."""
    path = Path(name)
    shipped = Path(__file__).resolve().parent.parent / "studies" / f"{name}.yaml"
    return shipped if not path.exists() and shipped.is_file() else path


def _open(args: argparse.Namespace) -> Any:
    from dlmsearch.search import open_study

    return open_study(args.run_dir, storage=args.storage, study_name=args.study)


def cmd_pareto(args: argparse.Namespace) -> int:
    """Print the feasible front as a table, or as JSON."""
    import json
    from dataclasses import asdict

    from dlmsearch.search import front_rows

    rows = front_rows(_open(args))
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=1))
        return 0
    metrics = ["quality", "proxy", "latency_ms", "latency_per_step_ms", "peak_mem_bytes"]
    print(f"{'trial':>5}  " + "  ".join(f"{m:>19}" for m in metrics) + "  scored by  text       measured  Plan")
    for r in rows:
        values = {**r.metrics, "proxy": r.proxy_quality if r.proxy_quality is not None else float("nan")}
        speedup = f"{r.measured_speedup:.2f}x" if r.measured_speedup is not None else ""
        print(f"{r.number:>5}  " + "  ".join(f"{values.get(m, float('nan')):>19.6g}" for m in metrics)
              + f"  {'verified' if r.verified else r.fidelity:9s}  {'collapsed' if r.degenerate else 'kept':9s}"
              + f"  {speedup:>8s}  {r.summary}")
    verified = sum(r.verified for r in rows)
    print(f"{len(rows)} Plans on the feasible front; quality is the full evaluator's verified score for {verified} "
          f"of them (`verified`), the proxy's for the others (column proxy: the proxy's score of each); "
          f"`collapsed` text is never exported (see `export --trial N`); `measured`: speed-up over the dense model "
          f"timed by `dlmsearch measure`")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Write the study's HTML report."""
    from dlmsearch.reports.study_report import write_report

    out = Path(args.out) if args.out else Path(args.run_dir or ".") / "report.html"
    print(f"report: {write_report(_open(args), out)}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write one trial's Plan as JSON (by number or by a --pick expression)."""
    from dlmsearch.search import export_plan
    from dlmsearch.search.results import quality_note

    study = _open(args)
    trial, path = export_plan(study, args.output, number=args.trial, pick=args.pick, force=args.force)
    metrics = trial.user_attrs.get(METRICS_ATTR, {})
    shown = ", ".join(f"{k} {metrics[k]:.4g}" for k in ("latency_ms", "peak_mem_bytes") if k in metrics)
    print(f"wrote {path}: trial {trial.number} ({quality_note(study, trial)}, {shown})")
    print(f"apply it: dlmsearch apply {path} --out compressed/")
    return 0


def cmd_journal_repair(args: argparse.Namespace) -> int:
    """Keep a damaged journal's records before its first damaged line (stop its workers first)."""
    from dlmsearch.search.journal_check import repair_journal

    repair = repair_journal(args.journal)
    if repair.backup is None:
        print(f"{args.journal}: no damage found ({repair.kept_records} records); nothing changed")
        return 0
    print(f"kept {repair.kept_records} records, dropped {repair.dropped_lines} line(s) from the first damaged one on; "
          f"the damaged file is saved as {repair.backup}")
    print("resume with the same command as before: trials whose records were dropped run again")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The quickstart: search the embedded model for this CPU, report, export the best feasible Plan and
    measure it beside the dense model."""
    from dlmsearch.search import export_plan, load_study_spec, run_study
    from dlmsearch.search.results import quality_note

    spec = load_study_spec(_study_path("quickstart"))
    out = Path(args.out)
    summary = run_study(spec, out)
    print(f"study {spec.study}: {len(summary.study.trials)} trials, feasible front {len(summary.front)} Plans, "
          f"hypervolume {summary.hypervolume:.4f}")
    if summary.verification is not None:
        print(_verification_line(summary.verification))
    trial, path = export_plan(summary.study, out / "plan.json", pick="min quality")
    metrics = trial.user_attrs[METRICS_ATTR]
    print(f"plan: {path} (trial {trial.number}: the best quality within the budget; "
          f"{quality_note(summary.study, trial)}, latency {metrics['latency_ms']:.1f} ms, "
          f"memory {metrics['peak_mem_bytes'] / 2**20:.2f} MiB)")
    _measure_and_report(summary.study, trial.number, out / "report.html")
    print(f"next: dlmsearch apply {path} --out {out / 'compressed'} && "
          f"dlmsearch generate --model {out / 'compressed'} --prompt 'ROMEO.'")
    return 0


def cmd_measure(args: argparse.Namespace) -> int:
    """Measure one front Plan on this machine beside the dense model; keep the result in the study."""
    from dlmsearch.evaluators import FullSettings
    from dlmsearch.evaluators.base import settings_with
    from dlmsearch.search.results import select_trial
    from dlmsearch.search.validation import VALIDATION_FULL

    study = _open(args)
    if args.trial is None:
        trial = select_trial(study, pick=args.pick or "min quality", force=args.force)
    else:
        trial = select_trial(study, number=args.trial)
    settings = settings_with(FullSettings, args.set, base=VALIDATION_FULL)
    report = Path(args.run_dir) / "report.html" if args.run_dir else None
    _measure_and_report(study, trial.number, report, args.rounds, settings)
    return 0


def _measure_and_report(study: Any, number: int, report: Path | None, rounds: int | None = None,
                        settings: Any = None) -> None:
    """Measure trial ``number`` for real (see :mod:`dlmsearch.search.validation`), print what was measured,
    keep it in the study and rewrite the report (``report``: its path, None for a study without a run folder)."""
    from dlmsearch.reports.study_report import write_report
    from dlmsearch.search.measurements import store_measurement
    from dlmsearch.search.validation import VALIDATION_FULL, VALIDATION_ROUNDS, measure_trial

    print(f"measuring trial {number} on this machine (timed beside the dense model, full evaluator)...")
    measured = measure_trial(study, number, rounds or VALIDATION_ROUNDS, settings or VALIDATION_FULL)
    store_measurement(study, measured)
    check = measured.check
    print(f"measured: {check.plan_ms:.0f} ms per generation vs dense {check.dense_ms:.0f} ms: "
          f"{check.speedup:.2f}x faster (measured side by side, median of {check.rounds}; the cost model "
          f"predicted {measured.predicted_speedup:.2f}x for hardware {measured.hardware!r})")
    print(f"full evaluator: plan {check.plan_score:.4f}, dense {check.dense_score:.4f} (0 = the dense model); "
          f"distinct 4-grams {check.distinct4_ratio:.2f} of the dense model's; rows collapsed into spaces or "
          f"repetition {check.collapsed_rows:.0%} (dense {check.dense_collapsed_rows:.0%})")
    if measured.budget:
        print("budget on this machine: " + "; ".join(b.describe() for b in measured.budget))
    elif measured.hardware != "local":
        print(f"budget not checked: the study's hardware is {measured.hardware!r}, not this machine")
    for prompt, dense_text, plan_text in zip(check.prompts, check.dense_texts, check.plan_texts, strict=True):
        print(f"prompt: {prompt!r}")
        print(f"dense:  {dense_text!r}")
        print(f"plan:   {plan_text!r}")
    if report is not None:
        print(f"report: {write_report(study, report)} (with the measurement)")


def _add_study_run_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", default=None,
                        help="Optuna storage URL or journal file (default: the spec's, else RUN_DIR/journal.log)")
    parser.add_argument("--n-trials", type=int, default=None, help="the study's total trial budget (default: spec)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: all cores; use 1 per worker when workers share a machine)")
    parser.add_argument("--force", action="store_true",
                        help="resume a study whose spec or model changed (refused otherwise; the study then mixes "
                             "two searches)")


def _add_study_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", nargs="?", default=None, help="run folder written by `dlmsearch run`")
    parser.add_argument("--storage", default=None, help="a storage URL instead of a run folder (with --study)")
    parser.add_argument("--study", default=None, help="study name in --storage")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="dlmsearch", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = sub.add_parser("generate", help="generate text with a (compressed) DLM")
    _add_model_args(gen)
    gen.add_argument("--prompt", default="", help="text the answer follows")
    gen.add_argument("--num-samples", type=int, default=1)
    _add_sampler_args(gen, GENERATE_DEFAULTS)
    gen.set_defaults(func=cmd_generate)

    plan = sub.add_parser("plan", help="write Plans")
    plan_sub = plan.add_subparsers(dest="plan_command", required=True, metavar="PLAN_COMMAND")
    init = plan_sub.add_parser("init", help="write a uniform Plan for a model")
    _add_model_args(init)
    init.add_argument("--bits", type=int, default=16, help="weight bits for every layer and timestep")
    init.add_argument("--act-bits", type=int, default=16, help="activation bits (16 = not quantized)")
    init.add_argument("--sparsity", type=float, default=0.0, help="fraction of weights pruned")
    init.add_argument("--prune-method", choices=PRUNE_METHODS, default="wanda")
    init.add_argument("--structure", choices=STRUCTURES, default="unstructured")
    init.add_argument("--group-size", type=int, default=None, help="quantization group (0 = per channel)")
    init.add_argument("--timestep-groups", type=int, default=1)
    init.add_argument("--storage", choices=WEIGHT_STORAGES, default="nested")
    init.add_argument("--steps", type=int, default=SAMPLER_DEFAULTS["steps"])
    init.add_argument("--gen-length", type=int, default=SAMPLER_DEFAULTS["gen_length"])
    init.add_argument("--block-length", type=int, default=None)
    init.add_argument("-o", "--output", required=True, help="Plan JSON to write")
    init.set_defaults(func=cmd_plan_init)

    val = sub.add_parser("validate", help="check a Plan (.json), a study spec or a hardware / profile spec "
                         "(.yaml) and print every problem")
    val.add_argument("file")
    val.add_argument("--model", default=None, help="also check the Plan against this model")
    val.add_argument("--trust-remote-code", action="store_true")
    val.set_defaults(func=cmd_validate)

    apply = sub.add_parser("apply", help="apply a Plan to a model and save the compressed model")
    apply.add_argument("plan", help="Plan JSON file")
    apply.add_argument("--model", default=None, help="model name or folder (default: the one the Plan names)")
    apply.add_argument("--trust-remote-code", action="store_true")
    apply.add_argument("--out", required=True, help="folder to write the compressed model to")
    apply.add_argument("--calibration-sequences", type=int, default=32,
                       help="calibration windows for Wanda / sink-aware Wanda / GPTQ")
    apply.add_argument("--seed", type=int, default=0)
    apply.set_defaults(func=cmd_apply)

    evaluate = sub.add_parser("evaluate", help="score a Plan's quality (proxy or full evaluator) and print its metrics")
    evaluate.add_argument("plan", help="Plan JSON file")
    evaluate.add_argument("--model", default=None, help="model name or folder (default: the one the Plan names)")
    evaluate.add_argument("--trust-remote-code", action="store_true")
    evaluate.add_argument("--evaluator", choices=("full", "proxy"), default="full",
                          help="full: real generation with the whole Plan (slow); proxy: what the search uses")
    evaluate.add_argument("--fidelity", choices=FIDELITIES, default="full")
    evaluate.add_argument("--text", nargs="+", default=None, metavar="FILE",
                          help="held-out text files to measure on (default: the embedded held-out plays)")
    evaluate.add_argument("--prompts", default=None, metavar="FILE",
                          help="full evaluator: prompts to generate from, one per line (\\n for a newline)")
    evaluate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                          help="override one evaluator setting, e.g. --set unconditional=32 (repeatable)")
    evaluate.add_argument("--json", action="store_true", help="print the result as JSON")
    evaluate.set_defaults(func=cmd_evaluate)

    sinks = sub.add_parser("sinks", help="attention-sink statistics of a model, as an HTML report")
    sinks.add_argument("--model", default=EMBEDDED_MODEL_NAME)
    sinks.add_argument("--out", default="sinks.html", help="HTML file to write")
    sinks.add_argument("--sequences", type=int, default=16, help="calibration windows")
    sinks.add_argument("--seq-len", type=int, default=None, help="window length (default: up to 128)")
    sinks.add_argument("--seed", type=int, default=0)
    sinks.set_defaults(func=cmd_sinks)

    hardware = sub.add_parser("hardware", help="hardware targets: list the shipped specs or show one")
    hardware_sub = hardware.add_subparsers(dest="hardware_command", required=True, metavar="HARDWARE_COMMAND")
    hardware_sub.add_parser("list", help="the shipped hardware specs")
    show = hardware_sub.add_parser("show", help="one spec: a shipped name or a YAML file")
    show.add_argument("name")
    hardware.set_defaults(func=cmd_hardware)

    prof = sub.add_parser("profile", help="measure this device's speed per format (a hardware spec for cost models)")
    _add_model_args(prof)
    prof.add_argument("--out", default="profile.yaml", help="YAML file to write (loads with hardware: PATH)")
    prof.add_argument("--quick", action="store_true", help="4 token counts, few rounds (well under a minute)")
    prof.add_argument("--tokens", type=int, nargs="+", default=None, help="token counts M to measure")
    prof.add_argument("--refresh", action="store_true", help="measure again even when a cached profile exists")
    prof.add_argument("--threads", type=int, default=None,
                      help="torch threads to measure with (default: torch's; 1 on an oversubscribed machine)")
    prof.add_argument("--device", default="cpu", help="device to measure: cpu (default) or cuda")
    prof.set_defaults(func=cmd_profile)

    run = sub.add_parser("run", help="run or resume a search (a study spec YAML, or a shipped name: quickstart)")
    run.add_argument("spec", help="study spec YAML (see studies/)")
    run.add_argument("--out", default=None, help="run folder (default: runs/STUDY)")
    _add_study_run_args(run)
    run.set_defaults(func=cmd_run)

    worker = sub.add_parser("worker", help="add a worker to a study in a shared storage")
    worker.add_argument("spec", help="the study spec YAML every worker uses")
    worker.add_argument("--out", default=None, help="folder for this worker's log (default: runs/STUDY-worker)")
    _add_study_run_args(worker)
    worker.set_defaults(func=cmd_worker)

    pareto = sub.add_parser("pareto", help="the feasible Pareto front of a study, as a table or JSON")
    _add_study_args(pareto)
    pareto.add_argument("--json", action="store_true")
    pareto.set_defaults(func=cmd_pareto)

    report = sub.add_parser("report", help="write a study's interactive HTML report")
    _add_study_args(report)
    report.add_argument("--out", default=None, help="HTML file (default: RUN_DIR/report.html)")
    report.set_defaults(func=cmd_report)

    export = sub.add_parser("export", help="write one trial's Plan as JSON")
    _add_study_args(export)
    choice = export.add_mutually_exclusive_group(required=True)
    choice.add_argument("--trial", type=int, help="trial number")
    choice.add_argument("--pick", help="e.g. 'min quality where latency_ms <= 400 and peak_mem_bytes <= 2e9'")
    export.add_argument("-o", "--output", required=True, help="Plan JSON to write")
    export.add_argument("--force", action="store_true",
                        help="export a Plan whose generations collapsed (distinct4_ratio below 0.5, or collapsed_rows "
                             "over 0.25 above the dense model's) anyway")
    export.set_defaults(func=cmd_export)

    journal = sub.add_parser("journal", help="journal files: repair a damaged one")
    journal_sub = journal.add_subparsers(dest="journal_command", required=True)
    repair = journal_sub.add_parser("repair", help="keep the records before the first damaged line (stop the "
                                                   "study's workers first); the damaged file is saved beside it")
    repair.add_argument("journal", help="journal file, or a run folder holding journal.log")
    repair.set_defaults(func=cmd_journal_repair)

    measure = sub.add_parser("measure", help="time a front Plan beside the dense model on this machine, score it "
                                             "with the full evaluator and show its text (kept in the study)")
    _add_study_args(measure)
    which = measure.add_mutually_exclusive_group()
    which.add_argument("--trial", type=int, help="trial number (default: the Plan --pick 'min quality' exports)")
    which.add_argument("--pick", help="a pick expression, as for export")
    measure.add_argument("--rounds", type=int, default=None,
                         help="timed generate calls of each model, alternating which runs first (default 9)")
    measure.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="a full evaluator setting (default: its defaults at one draw), e.g. prompts=8")
    measure.add_argument("--force", action="store_true", help="with --pick: pick among Plans whose text collapsed too")
    measure.set_defaults(func=cmd_measure)

    demo = sub.add_parser("demo", help="the quickstart: search the embedded model for this CPU and export a Plan")
    demo.add_argument("--out", default="runs/quickstart", help="run folder")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dlmsearch`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    func: Callable[[argparse.Namespace], int] = args.func
    from dlmsearch.search.runner import RunInterrupted

    if getattr(args, "trust_remote_code", False):
        print("note: --trust-remote-code is on: a model folder's own Python code will run", file=sys.stderr)
    try:
        return func(args)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (RunInterrupted, KeyboardInterrupt) as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
