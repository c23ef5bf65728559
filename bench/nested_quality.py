"""Quality cost of nested (Matryoshka) weight storage against independent round-to-nearest.

Reproduce with::

    .venv/bin/python bench/nested_quality.py            # full: 64 held-out windows x 4 mask rates
    .venv/bin/python bench/nested_quality.py --quick    # under a minute: 8 windows

Nested storage keeps one 8-bit master per layer and computes at b bits with the top b bits of
each code (``dlmsearch.compress.quantize.nested_from_master``); ``copies`` quantizes the weight
independently at b bits (plain group-wise RTN). For each b in {2, 3, 4, 8} and every linear of the
embedded model, at group size 64:

- ``recon_<storage>_w<b>``: relative reconstruction error ||W - W_hat||_F / ||W||_F, mean over layers;
- ``kl_<storage>_w<b>``: KL(dense || quantized) in nats per masked token, the whole model quantized
  uniformly, over masked states of held-out windows (4 stratified mask rates each, seeded masks);
- ``nelbo_<storage>_w<b>`` beside ``nelbo_dense``: masked-diffusion NELBO on the same windows.

And the int8 CPU format against the simulated one, every linear W8A8 at group size 64:
``kl_w8a8_simulated`` / ``nelbo_w8a8_simulated`` (the Plan's own scheme, dequantize-then-matmul
with per-token 8-bit activations, what the evaluators score) and ``kl_w8a8_fbgemm`` /
``nelbo_w8a8_fbgemm`` (fbgemm's dynamic int8, what ``apply_plan_`` runs on a CPU: weights
requantized symmetric per channel, activations per tensor).

Printed last as ``name: value`` lines (progress goes to stderr).
"""

from __future__ import annotations

import argparse
import sys

import torch
from tqdm import tqdm

from dlmsearch.compress import apply_plan_
from dlmsearch.compress.quantize import nested_from_master, quantize_rtn
from dlmsearch.data import load_split
from dlmsearch.models.adapters import DLMAdapter
from dlmsearch.models.diffusion import eval_windows, evaluate_nelbo, mask_tokens, stratified_mask_probs
from dlmsearch.models.loading import load_model
from dlmsearch.plan import uniform_plan

BITS: tuple[int, ...] = (2, 3, 4, 8)
GROUP_SIZE = 64
REPEATS = 4


def reconstruction_errors(adapter: DLMAdapter, bits: int) -> tuple[float, float]:
    """Mean relative error over the linears of (nested slice of an 8-bit master, independent RTN)."""
    nested, copies = [], []
    for info in adapter.linears():
        weight = adapter.get_module(info.name).weight.detach()
        norm = weight.norm()
        nested_w = nested_from_master(quantize_rtn(weight, 8, GROUP_SIZE), bits).dequantize()
        nested.append(float((weight - nested_w).norm() / norm))
        copies.append(float((weight - quantize_rtn(weight, bits, GROUP_SIZE).dequantize()).norm() / norm))
    return sum(nested) / len(nested), sum(copies) / len(copies)


def masked_states(windows: torch.Tensor, mask_token_id: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Seeded masked copies of ``windows`` at stratified mask rates (REPEATS per window)."""
    n = windows.shape[0]
    probs = stratified_mask_probs(n * REPEATS).view(REPEATS, n)
    generator = torch.Generator().manual_seed(seed)
    return [mask_tokens(windows, probs[r], mask_token_id, generator) for r in range(REPEATS)]


@torch.no_grad()
def masked_kl(reference: list[torch.Tensor], adapter: DLMAdapter,
              states: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """KL(reference || adapter) per masked token, over the masked positions of ``states``."""
    total, count = 0.0, 0
    for ref_logits, (ids, masked) in zip(reference, states, strict=True):
        ref = torch.log_softmax(ref_logits.float(), dim=-1)[masked]
        out = torch.log_softmax(adapter.forward_logits(ids).float(), dim=-1)[masked]
        total += float((ref.exp() * (ref - out)).sum())
        count += int(masked.sum())
    return total / count


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="8 windows instead of 64 (under a minute)")
    args = parser.parse_args(argv)
    dense = load_model()
    windows = eval_windows(dense.encode(load_split("evaluation")), min(128, dense.shape.max_length),
                           8 if args.quick else 64)
    states = masked_states(windows, dense.mask_token_id)
    with torch.no_grad():
        reference = [dense.forward_logits(ids) for ids, _ in states]
    figures = {"nelbo_dense": evaluate_nelbo(dense.forward_logits, windows, dense.mask_token_id)}
    for bits in tqdm(BITS, desc="bit-widths", file=sys.stderr):
        figures[f"recon_nested_w{bits}"], figures[f"recon_copies_w{bits}"] = reconstruction_errors(dense, bits)
        for storage in ("nested", "copies"):
            model = load_model()
            apply_plan_(model, uniform_plan(model, weight_bits=bits, group_size=GROUP_SIZE, weight_storage=storage))
            figures[f"kl_{storage}_w{bits}"] = masked_kl(reference, model, states)
            figures[f"nelbo_{storage}_w{bits}"] = evaluate_nelbo(model.forward_logits, windows, model.mask_token_id)
    for fmt, use_kernels in (("simulated", False), ("fbgemm", None)):
        model = load_model()
        apply_plan_(model, uniform_plan(model, weight_bits=8, act_bits=8, group_size=GROUP_SIZE),
                    use_kernels=use_kernels)
        figures[f"kl_w8a8_{fmt}"] = masked_kl(reference, model, states)
        figures[f"nelbo_w8a8_{fmt}"] = evaluate_nelbo(model.forward_logits, windows, model.mask_token_id)
    for name, value in figures.items():
        print(f"{name}: {value:.5f}")
    return figures


if __name__ == "__main__":
    main()
