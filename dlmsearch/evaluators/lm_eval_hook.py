"""Optional lm-eval-harness hook: score a Plan's compressed model on lm-eval tasks.

``lm-eval`` (EleutherAI's lm-evaluation-harness) is not a dependency; install it with
``pip install lm-eval`` to use :func:`run_lm_eval`. The compressed model is wrapped as an
``lm_eval.api.model.LM``:

- ``loglikelihood(context, continuation)``: the masked-diffusion ELBO of the continuation given
  the context (LLaDA's Monte-Carlo estimate): the continuation is masked at ``mc_samples``
  stratified ratios t with seeded masks, and ``-sum(masked CE) / t`` is averaged; ``is_greedy``
  says whether one pass with the whole continuation masked predicts it exactly.
- ``loglikelihood_rolling(text)``: the same with an empty context.
- ``generate_until(context, {"until": [...], "max_gen_toks": n})``: the real sampler with the Plan's
  settings (steps per token and block length kept, the length rounded up to whole blocks), cut at
  the first stop string.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from dlmsearch.evaluators.plan_compressor import PlanCompressor
from dlmsearch.models.adapters import DLMAdapter
from dlmsearch.models.diffusion import stratified_mask_probs
from dlmsearch.models.sampler import generate
from dlmsearch.plan import Plan

INSTALL_HINT = "lm-eval-harness is not installed; `pip install lm-eval` to use dlmsearch's lm-eval hook"


def _require_lm_eval() -> Any:
    try:
        import lm_eval
        from lm_eval.api.model import LM  # noqa: F401
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error
    return lm_eval


@torch.no_grad()
def continuation_loglikelihood(adapter: DLMAdapter, context: torch.Tensor, continuation: torch.Tensor,
                               mc_samples: int = 8, seed: int = 0) -> tuple[float, bool]:
    """ELBO estimate of ``continuation`` (1-D ids) after ``context`` (1-D ids), and whether it is greedy."""
    ids = torch.cat([context, continuation])[-adapter.shape.max_length:]
    n = min(continuation.numel(), ids.numel())
    start = ids.numel() - n
    generator = torch.Generator().manual_seed(seed)
    rows, weights = [], []
    for t in stratified_mask_probs(mc_samples).tolist():
        masked = torch.zeros_like(ids, dtype=torch.bool)
        masked[start:] = torch.rand(n, generator=generator) < t
        rows.append(torch.where(masked, adapter.mask_token_id, ids))
        weights.append(masked.float() / t)
    everything = ids.clone()
    everything[start:] = adapter.mask_token_id
    batch = torch.stack([*rows, everything]).to(adapter.device)
    logits = adapter.forward_logits(batch).float().cpu()
    ce = F.cross_entropy(logits[:-1].transpose(1, 2), ids.expand(mc_samples, -1), reduction="none")
    loglik = -float((ce * torch.stack(weights)).sum(dim=1).mean())
    greedy = bool((logits[-1, start:].argmax(dim=-1) == ids[start:]).all())
    return loglik, greedy


def lm_eval_model(adapter: DLMAdapter, plan: Plan | None = None, mc_samples: int = 8, seed: int = 0) -> Any:
    """An ``lm_eval.api.model.LM`` for ``adapter`` compressed by ``plan`` (dense when None)."""
    _require_lm_eval()
    from lm_eval.api.model import LM

    model = PlanCompressor(adapter).compressed(plan) if plan is not None else adapter
    sampler = plan.sampler if plan is not None else None

    class DLMSearchLM(LM):
        def loglikelihood(self, requests: Sequence[Any]) -> list[tuple[float, bool]]:
            return [continuation_loglikelihood(model, model.encode(ctx), model.encode(cont), mc_samples, seed)
                    for ctx, cont in (r.args for r in requests)]

        def loglikelihood_rolling(self, requests: Sequence[Any]) -> list[float]:
            empty = torch.empty(0, dtype=torch.long)
            return [continuation_loglikelihood(model, empty, model.encode(r.args[0]), mc_samples, seed)[0]
                    for r in requests]

        def generate_until(self, requests: Sequence[Any]) -> list[str]:
            outputs = []
            for context, options in (r.args for r in requests):
                wanted = int(options.get("max_gen_toks", 64))
                block = min(sampler.block_length if sampler else wanted, wanted)
                length = block * math.ceil(wanted / block)
                steps_per_token = sampler.steps / sampler.gen_length if sampler else 1.0
                steps = max(1, round(length * steps_per_token / (length // block))) * (length // block)
                settings = {**(dataclasses.asdict(sampler) if sampler else {}), "gen_length": length,
                            "block_length": block, "steps": steps}
                prompt = model.encode(context)
                prompt = prompt[max(0, prompt.numel() - max(0, model.shape.max_length - length)):]
                text = model.decode(generate(model, prompt, seed=seed, **settings)[0, prompt.numel():])
                for stop in options.get("until", []):
                    text = text.split(stop)[0]
                outputs.append(text)
            return outputs

    return DLMSearchLM()


def run_lm_eval(adapter: DLMAdapter, plan: Plan | None, tasks: Sequence[str], limit: int | None = None,
                **options: Any) -> dict[str, Any]:
    """Run lm-eval ``tasks`` on ``adapter`` compressed by ``plan``; returns lm-eval's results dict.

    Raises ImportError with the install command when lm-eval is missing.
    """
    lm_eval = _require_lm_eval()
    result: dict[str, Any] = lm_eval.simple_evaluate(model=lm_eval_model(adapter, plan), tasks=list(tasks),
                                                     limit=limit, **options)
    return result
