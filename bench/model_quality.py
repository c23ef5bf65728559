"""Quality figures of a DLM (by default the embedded ``shakespeare-char`` model) on held-out plays.

Reproduce with::

    .venv/bin/python bench/model_quality.py            # full run: 256 NELBO windows, 64 infill windows
    .venv/bin/python bench/model_quality.py --quick    # under a minute: 16 NELBO windows, 8 infill windows
    .venv/bin/python bench/model_quality.py --model path/to/checkpoint

All text comes from the evaluation split (``dlmsearch.data.load_split("evaluation")``: plays the
model never saw in training). Windows are ``eval_windows`` of 128 characters (or the model's
``max_length`` when shorter), spread evenly over that text, so every run scores the same windows.
The figures, printed last as ``name: value`` lines on stdout (progress goes to stderr):

- ``eval_nelbo_nats_per_char``: masked-diffusion negative ELBO of the model on the windows
  (``evaluate_nelbo``, 4 stratified mask rates per window, seeded masks): an upper bound on the
  model's negative log-likelihood per character. Lower is better.
- ``eval_unigram_entropy_nats_per_char``: entropy of the character frequencies of the whole
  evaluation text, the score of a model that ignores context. A trained model's NELBO should be
  well below it.
- ``infill_accuracy_steps64`` / ``infill_accuracy_steps16``: a span of 64 characters in the middle
  of each window is masked and filled in by :func:`dlmsearch.models.sampler.infill` (LLaDA's
  low-confidence rule: each denoising step commits the most confident masked predictions; the span
  is filled left to right in 4 blocks of 16, as LLaDA's semi-autoregressive sampler does, the
  steps split evenly over the blocks) with 64 and 16 steps; the figure is the fraction of span characters equal to the
  real text. ``infill_accuracy_diff_64_minus_16`` and ``infill_accuracy_ratio_16_over_64`` show how
  much quality the 4x cheaper schedule keeps (the ratio is ``nan`` when the 64-step accuracy is 0).

For a checkpoint with a subword tokenizer, "per char" and "character accuracy" read "per token".
"""

from __future__ import annotations

import argparse
import math
import sys

import torch
from tqdm import tqdm

from dlmsearch.data import load_split
from dlmsearch.models.adapters import DLMAdapter
from dlmsearch.models.diffusion import eval_windows, evaluate_nelbo, unigram_entropy
from dlmsearch.models.loading import load_model
from dlmsearch.models.sampler import infill

WINDOW_LENGTH = 128
INFILL_SPAN = 64
INFILL_BLOCK = 16  # semi-autoregressive blocks, as the sampler's; one 64-character block degenerates
INFILL_STEPS: tuple[int, int] = (64, 16)


def span_mask(batch: int, length: int, span: int) -> torch.Tensor:
    """(batch, length) mask of one centred span of ``span`` positions per row."""
    if not 0 < span < length:
        raise ValueError(f"span={span}: must be between 1 and the window length {length} - 1")
    start = (length - span) // 2
    masked = torch.zeros(batch, length, dtype=torch.bool)
    masked[:, start:start + span] = True
    return masked


def infill_accuracy(adapter: DLMAdapter, windows: torch.Tensor, span: int, steps: int,
                    batch_size: int) -> float:
    """Fraction of the centred ``span`` characters of ``windows`` that :func:`infill` restores exactly."""
    n_batches = math.ceil(windows.shape[0] / batch_size)
    correct, total = 0, 0
    with tqdm(total=n_batches * steps, desc=f"infill {steps} steps", unit="pass", file=sys.stderr) as bar:
        for start in range(0, windows.shape[0], batch_size):
            batch = windows[start:start + batch_size]
            masked = span_mask(batch.shape[0], batch.shape[1], span)
            filled = infill(adapter, batch, masked, steps, block_length=INFILL_BLOCK, on_step=bar.update).cpu()
            correct += int((filled == batch)[masked].sum())
            total += int(masked.sum())
    return correct / total


def nelbo(adapter: DLMAdapter, windows: torch.Tensor, seed: int, repeats: int, batch_size: int) -> float:
    """``evaluate_nelbo`` of ``windows`` with a progress bar over its forward passes."""
    n_passes = repeats * math.ceil(windows.shape[0] / batch_size)
    with tqdm(total=n_passes, desc="nelbo", unit="pass", file=sys.stderr) as bar:

        def logits_fn(ids: torch.Tensor) -> torch.Tensor:
            logits = adapter.forward_logits(ids.to(adapter.device)).cpu()
            bar.update()
            return logits

        return evaluate_nelbo(logits_fn, windows, adapter.mask_token_id, seed=seed, repeats=repeats,
                              batch_size=batch_size)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true",
                        help="reduced run (16 NELBO windows, 8 infill windows), under a minute")
    parser.add_argument("--model", default="shakespeare-char",
                        help="embedded model name or local checkpoint folder (default: shakespeare-char)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the NELBO masks and of torch")
    parser.add_argument("--batch-size", type=int, default=16, help="windows per forward pass")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    nelbo_windows, infill_windows = (16, 8) if args.quick else (256, 64)

    adapter = load_model(args.model)
    adapter.model.eval()
    length = min(WINDOW_LENGTH, adapter.shape.max_length)
    span = INFILL_SPAN
    ids = adapter.encode(load_split("evaluation"))
    print(f"model={args.model} eval_chars={ids.numel()} window={length} nelbo_windows={nelbo_windows} "
          f"infill_windows={infill_windows} span={span} seed={args.seed}", file=sys.stderr)

    figures: dict[str, float] = {}
    with torch.no_grad():
        figures["eval_nelbo_nats_per_char"] = nelbo(
            adapter, eval_windows(ids, length, nelbo_windows), args.seed, repeats=4,
            batch_size=args.batch_size)
        figures["eval_unigram_entropy_nats_per_char"] = unigram_entropy(ids, adapter.shape.vocab_size)
        windows = eval_windows(ids, length, infill_windows)
        for steps in INFILL_STEPS:
            figures[f"infill_accuracy_steps{steps}"] = infill_accuracy(
                adapter, windows, span, steps, args.batch_size)

    (many_steps, many), (few_steps, few) = ((s, figures[f"infill_accuracy_steps{s}"]) for s in INFILL_STEPS)
    figures[f"infill_accuracy_diff_{many_steps}_minus_{few_steps}"] = many - few
    figures[f"infill_accuracy_ratio_{few_steps}_over_{many_steps}"] = few / many if many else math.nan
    for name, value in figures.items():
        print(f"{name}: {value:.4f}")
    return figures


if __name__ == "__main__":
    main()
