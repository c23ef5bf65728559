"""The optional lm-eval hook: the ELBO log-likelihood it reports, and the install hint without lm-eval."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from dlmsearch.evaluators.lm_eval_hook import INSTALL_HINT, continuation_loglikelihood, run_lm_eval
from dlmsearch.models.loading import build_random_model


def test_continuation_loglikelihood_is_a_deterministic_bound_and_sees_greedy_continuations() -> None:
    adapter = build_random_model("llama", hidden_size=64, num_heads=4, intermediate_size=128, max_length=64)
    context = torch.randint(0, 60, (12,), generator=torch.Generator().manual_seed(0))
    continuation = torch.randint(0, 60, (6,), generator=torch.Generator().manual_seed(1))
    loglik, _ = continuation_loglikelihood(adapter, context, continuation)
    assert loglik < 0 and continuation_loglikelihood(adapter, context, continuation)[0] == loglik
    masked = torch.cat([context, torch.full((6,), adapter.mask_token_id)])
    logits = adapter.forward_logits(masked[None])[0, 12:]
    greedy = logits.argmax(dim=-1)
    assert continuation_loglikelihood(adapter, context, greedy)[1]
    assert continuation_loglikelihood(adapter, context, greedy)[0] > loglik


@pytest.mark.skipif(importlib.util.find_spec("lm_eval") is not None, reason="lm-eval is installed")
def test_without_lm_eval_the_error_says_how_to_install_it() -> None:
    adapter = build_random_model("llama", hidden_size=64, num_heads=4, intermediate_size=128, max_length=64)
    with pytest.raises(ImportError, match="pip install lm-eval"):
        run_lm_eval(adapter, None, ["hellaswag"])
    assert "pip install lm-eval" in INSTALL_HINT
