"""Train the embedded character-level DLM with the MDLM / LLaDA objective.

    python -m dlmsearch.models.train --out runs/shakespeare-char --steps 20000

Seeded and reproducible (same arguments, device and thread count -> same weights). Every
``--eval-every`` steps it writes the shippable folder (fp16 safetensors, config, tokenizer, model
card) and a resumable training state; ``--resume`` continues an interrupted run exactly.

On a GPU (``--device cuda``, with ``--autocast-bf16`` for bf16 matrix products) the batches and
masks are still drawn on the CPU from the seeded generator, so a GPU run sees the same data as a
CPU run of the same arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm
from transformers import LlamaForCausalLM

from dlmsearch.data import load_split, split_names
from dlmsearch.models.diffusion import (
    MIN_MASK_PROB,
    bidirectional_attention_mask,
    eval_windows,
    evaluate_nelbo,
    mask_tokens,
    nelbo_loss,
    unigram_entropy,
)
from dlmsearch.models.embedded import EmbeddedModelShape
from dlmsearch.models.tokenizer import CharTokenizer

logger = logging.getLogger("dlmsearch.models.train")

TRAIN_STATE_FILE = "train_state.pt"
LOG_FILE = "train_log.jsonl"


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run (all recorded in the model card)."""

    steps: int = 8000
    batch_size: int = 32
    seq_len: int = 128
    lr: float = 2e-3
    min_lr_ratio: float = 0.1  # cosine decays to 10% of lr
    warmup_steps: int = 200
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    short_batch_prob: float = 0.1  # share of batches cropped to a random length, so short inputs work
    seed: int = 0
    eval_every: int = 500
    eval_sequences: int = 64
    hidden_size: int = 192
    num_layers: int = 6
    num_heads: int = 6
    intermediate_size: int = 512
    compile: bool = True  # torch.compile: ~1.3x faster steps on a 2-core CPU, same maths
    autocast_bf16: bool = False  # bf16 autocast of the forward (for GPUs; weights and optimizer stay fp32)


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``lr * min_lr_ratio`` at the last step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def sample_batch(ids: torch.Tensor, cfg: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    """Random windows of the training text; some batches are cropped to a shorter length."""
    length = cfg.seq_len
    if torch.rand((), generator=generator) < cfg.short_batch_prob:
        length = int(torch.randint(16, cfg.seq_len + 1, (), generator=generator))
    starts = torch.randint(0, ids.numel() - length, (cfg.batch_size,), generator=generator)
    return torch.stack([ids[s:s + length] for s in starts.tolist()])


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` (``cuda:N``) or ``auto`` (a GPU when torch sees one) as a torch device."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"device={name!r}: expected 'cpu', 'cuda', 'cuda:N' or 'auto'")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name!r}: torch {torch.__version__} sees no CUDA GPU here; use 'cpu'")
    return torch.device(name)


def device_description(device: torch.device) -> str:
    """What the model card says the run ran on: the GPU's name, or the CPU thread count."""
    if device.type == "cuda":
        return f"1 GPU ({torch.cuda.get_device_name(device)})"
    return cpu_threads(torch.get_num_threads())


def cpu_threads(count: int) -> str:
    """``count`` CPU thread(s), in words."""
    return f"{count} CPU thread" + ("" if count == 1 else "s")


def model_logits(model: LlamaForCausalLM, ids: torch.Tensor) -> torch.Tensor:
    """Bidirectional logits of a Llama module for token ids (B, L)."""
    mask = bidirectional_attention_mask(ids.shape[0], ids.shape[1], model.dtype, ids.device)
    return model(input_ids=ids, attention_mask=mask, use_cache=False).logits


def write_model_folder(model: LlamaForCausalLM, tokenizer: CharTokenizer, out: Path,
                       card: dict[str, Any]) -> None:
    """Write the shippable folder: fp16 safetensors, config, tokenizer, model card."""
    out.mkdir(parents=True, exist_ok=True)
    half = LlamaForCausalLM(model.config)
    half.load_state_dict({name: tensor.cpu() for name, tensor in model.state_dict().items()})
    half.half().save_pretrained(out, safe_serialization=True)
    tokenizer.save(out)
    (out / "training.json").write_text(json.dumps(card, indent=1))
    (out / "MODEL_CARD.md").write_text(render_model_card(card))


def render_model_card(card: dict[str, Any]) -> str:
    """Markdown model card from the training record."""
    cfg = card["config"]
    rows = "\n".join(f"| `{k}` | {v} |" for k, v in cfg.items())
    evals = card.get("evals", [])
    curve = "\n".join(f"| {e['step']} | {e['tokens']:,} | {e['val_nelbo']:.4f} | {e['elapsed_s'] / 60:.1f} |"
                      for e in evals)
    return f"""# shakespeare-char: the embedded default DLM of dlmsearch

A LLaDA-style masked diffusion language model over characters: a stock transformers
`LlamaForCausalLM` (RMSNorm, RoPE, SwiGLU) run bidirectionally with an additive 4-D zero
attention mask. {card['parameters']:,} parameters, stored as fp16 safetensors.

- Data: the Shakespeare texts shipped in `dlmsearch/data` (see ATTRIBUTION.md there).
  Trained on the `train` split; validation on the `calibration` plays
  ({', '.join(card['calibration_texts'])}); final figures on the held-out `evaluation` plays
  ({', '.join(card['evaluation_texts'])}), never seen in training.
- Objective: MDLM / LLaDA masked diffusion: t ~ U({MIN_MASK_PROB}, 1], mask each token with
  probability t, loss = sum of masked-token cross-entropy / t, averaged per token (NELBO).
- Tokenizer: {card['vocab_size']} ids: the corpus characters, `[UNK]` and `[MASK]` (id {card['mask_token_id']}).

## Result

| figure | value |
| --- | --- |
| steps done | {card['steps_done']:,} of {cfg['steps']:,} |
| tokens seen | {card['tokens_seen']:,} |
| training time | {card['elapsed_s'] / 60:.1f} min on {card.get('device', cpu_threads(card['threads']))} |
| final validation NELBO (calibration plays) | {card['val_nelbo']:.4f} nats/char |
| evaluation NELBO (held-out plays) | {card.get('eval_nelbo', float('nan')):.4f} nats/char |
| unigram entropy (held-out plays) | {card['unigram_entropy']:.4f} nats/char |
{_chain_totals(card)}
## Hyperparameters

| name | value |
| --- | --- |
{rows}

## Learning curve

| step | tokens | validation NELBO | minutes |
| --- | --- | --- | --- |
{curve}

## Reproduce

    {card['command']}
{_previous_runs(card)}
torch {card['torch']}, transformers {card['transformers']}.
"""


def _chain(card: dict[str, Any]) -> list[dict[str, Any]]:
    """This run's record, then those of the runs it continued (``--init-from``), oldest last."""
    runs = [card]
    while runs[-1].get("previous"):
        runs.append(runs[-1]["previous"])
    return runs


def _chain_totals(card: dict[str, Any]) -> str:
    """Table rows totalling this run and the runs it continued (empty for a run from scratch)."""
    runs = _chain(card)
    if len(runs) == 1:
        return ""
    steps = sum(run["steps_done"] for run in runs)
    tokens = sum(run["tokens_seen"] for run in runs)
    minutes = sum(run["elapsed_s"] for run in runs) / 60
    return (f"| all {len(runs)} runs (this one and those it continued) | {steps:,} steps, {tokens:,} tokens, "
            f"{minutes:.0f} min |\n")


def _previous_runs(card: dict[str, Any]) -> str:
    """Markdown lines naming the runs this one continued (``--init-from``), oldest last."""
    lines = [f"continuing a run of {previous['steps_done']:,} steps "
             f"(validation NELBO {previous['val_nelbo']:.4f}) made with\n\n    {previous['command']}\n"
             for previous in _chain(card)[1:]]
    return "\n" + "\n".join(lines) if lines else ""


def train(cfg: TrainConfig, out: Path, resume: bool = False, threads: int = 0,
          stop_after: int | None = None, init_from: Path | None = None, device: str = "cpu") -> dict[str, Any]:
    """Run (or resume) training, writing checkpoints to ``out``; returns the training record.

    ``init_from`` starts from the weights of a model folder written by this script (a new
    schedule on top of a finished run, e.g. to train the shipped model further); the record
    keeps the earlier run's card under ``previous``.

    ``stop_after`` ends the run after that many steps with a resumable checkpoint, so a long
    schedule can be split across sessions; resuming gives the same weights as one run.

    ``device`` (see :func:`resolve_device`) is where the model trains; data and masks are drawn on
    the CPU either way.
    """
    import transformers

    target = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    train_text = load_split("train")
    tokenizer = CharTokenizer.from_text(train_text + load_split("calibration") + load_split("evaluation"))
    train_ids = tokenizer.encode(train_text)
    val_seqs = eval_windows(tokenizer.encode(load_split("calibration")), cfg.seq_len, cfg.eval_sequences)
    eval_ids = tokenizer.encode(load_split("evaluation"))
    eval_seqs = eval_windows(eval_ids, cfg.seq_len, cfg.eval_sequences)

    shape = EmbeddedModelShape(cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.intermediate_size,
                               cfg.seq_len)
    model = LlamaForCausalLM(shape.llama_config(tokenizer.vocab_size))
    _move(model, target)  # before the optimizer exists; loaded weights and optimizer state follow it
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr,
                                  betas=(0.9, 0.95))
    generator = torch.Generator().manual_seed(cfg.seed)
    card: dict[str, Any] = {
        "config": asdict(cfg), "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": tokenizer.vocab_size, "mask_token_id": tokenizer.mask_token_id,
        "calibration_texts": list(split_names("calibration")),
        "evaluation_texts": list(split_names("evaluation")),
        "unigram_entropy": unigram_entropy(eval_ids, tokenizer.vocab_size),
        "threads": torch.get_num_threads(), "device": device_description(target), "torch": torch.__version__,
        "transformers": transformers.__version__,
        "command": "python -m dlmsearch.models.train " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "evals": [], "steps_done": 0, "tokens_seen": 0, "elapsed_s": 0.0, "val_nelbo": float("nan"),
    }
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / TRAIN_STATE_FILE
    start_step = 0
    if init_from is not None:
        model.load_state_dict(_folder_weights(init_from))
        card["previous"] = json.loads((init_from / "training.json").read_text())
        logger.info("initialised from %s", init_from)
    if resume and state_path.exists():
        state = torch.load(state_path, weights_only=True, map_location="cpu")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        start_step = int(state["step"])
        card = json.loads((out / "training.json").read_text())
        logger.info("resumed from step %d", start_step)

    def logits_on_cpu(ids: torch.Tensor) -> torch.Tensor:
        return model_logits(model, ids.to(target)).float().cpu()

    elapsed_before = float(card["elapsed_s"])
    t0 = time.perf_counter()
    tokens = int(card["tokens_seen"])
    forward = torch.compile(model_logits) if cfg.compile else model_logits
    model.train()
    bar = tqdm(range(start_step, cfg.steps), initial=start_step, total=cfg.steps, desc="train",
               mininterval=10)
    with (out / LOG_FILE).open("a") as log:
        for step in bar:
            lr = learning_rate(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = sample_batch(train_ids, cfg, generator)
            t = torch.rand(batch.shape[0], generator=generator) * (1 - MIN_MASK_PROB) + MIN_MASK_PROB
            noisy, masked = mask_tokens(batch, t, tokenizer.mask_token_id, generator)
            with torch.autocast(target.type, dtype=torch.bfloat16, enabled=cfg.autocast_bf16):
                logits = forward(model, noisy.to(target))
            loss = nelbo_loss(logits, batch.to(target), masked.to(target), t.to(target))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            tokens += batch.numel()
            elapsed = elapsed_before + time.perf_counter() - t0
            if step % 50 == 0:
                log.write(json.dumps({"step": step, "loss": loss.item(), "lr": lr, "tokens": tokens,
                                      "elapsed_s": round(elapsed, 1)}) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{loss.item():.3f}", tok_s=f"{tokens / max(elapsed, 1e-9):.0f}")
            done = step + 1
            stopping = done == stop_after
            if done % cfg.eval_every == 0 or done == cfg.steps or stopping:
                model.eval()
                val = evaluate_nelbo(logits_on_cpu, val_seqs, tokenizer.mask_token_id)
                if done == cfg.steps:
                    card["eval_nelbo"] = evaluate_nelbo(logits_on_cpu, eval_seqs, tokenizer.mask_token_id)
                model.train()
                card["evals"].append({"step": done, "tokens": tokens, "val_nelbo": val, "elapsed_s": elapsed})
                card.update(steps_done=done, tokens_seen=tokens, elapsed_s=elapsed, val_nelbo=val)
                write_model_folder(model, tokenizer, out, card)
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "generator": generator.get_state(), "step": done}, state_path)
                logger.info("step %d: validation NELBO %.4f", done, val)
                log.write(json.dumps({"step": done, "val_nelbo": val, "elapsed_s": round(elapsed, 1)}) + "\n")
                log.flush()
            if stopping:
                break
    return card


def _move(model: torch.nn.Module, device: torch.device) -> None:
    """``model.to(device)`` through nn.Module's signature (transformers' decorated ``to`` confuses mypy)."""
    model.to(device)


def _folder_weights(folder: Path) -> dict[str, torch.Tensor]:
    """fp32 weights of a model folder written by :func:`write_model_folder`."""
    from safetensors.torch import load_file

    return {k: v.float() for k, v in load_file(str(folder / "model.safetensors")).items()}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/train_state.pt")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (a GPU when there is one)")
    parser.add_argument("--init-from", type=Path, default=None,
                        help="start from the weights of a model folder written by this script")
    parser.add_argument("--stop-after", type=int, default=None,
                        help="stop after this many steps with a resumable checkpoint")
    defaults = TrainConfig()
    for name, value in asdict(defaults).items():
        if isinstance(value, bool):
            parser.add_argument("--" + name.replace("_", "-"), action=argparse.BooleanOptionalAction,
                                default=value)
        else:
            parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    args = parser.parse_args(argv)
    cfg = TrainConfig(**{k: getattr(args, k) for k in asdict(defaults)})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    card = train(cfg, args.out, resume=args.resume, threads=args.threads, stop_after=args.stop_after,
                 init_from=args.init_from, device=args.device)
    print(f"validation NELBO: {card['val_nelbo']:.4f}  evaluation NELBO: {card.get('eval_nelbo', float('nan')):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
