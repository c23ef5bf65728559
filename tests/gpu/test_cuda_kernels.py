"""Real CUDA kernels: int8 / int4 weight-only and W8A8 through ``apply_plan_(use_kernels=True)``,
``apply_plan_``'s default on CUDA (no kernel: each was slower than bf16 on an H200, so every quantized
layer dequantizes and multiplies in bf16), 2:4 semi-structured sparsity, fp8 and bf16 dense. Run by
``bench/gpu_check.sh``; they skip without a CUDA GPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dlmsearch.compress import QuantizedLinear, apply_plan_
from dlmsearch.compress.kernels import (
    INT4_WEIGHT_ONLY,
    INT8_DYNAMIC,
    INT8_WEIGHT_ONLY,
    KERNELS,
    kernel_available,
    kernels_for,
)
from dlmsearch.compress.prune import keep_mask
from dlmsearch.compress.quantize import quantize_rtn
from dlmsearch.compress.quantized_linear import SIMULATED
from dlmsearch.models.adapters import DLMAdapter
from dlmsearch.models.loading import build_random_model
from dlmsearch.models.sampler import generate
from dlmsearch.plan import uniform_plan

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (bench/gpu_check.sh)")]


def _relative_error(out: torch.Tensor, reference: torch.Tensor) -> float:
    return float((out.float() - reference.float()).abs().max() / reference.float().abs().max())


@pytest.mark.parametrize(("name", "bits", "act_bits", "group_size"), [
    (INT8_WEIGHT_ONLY, 8, 16, 0), (INT4_WEIGHT_ONLY, 4, 16, 128), (INT8_DYNAMIC, 8, 8, 0)])
def test_kernel_runs_and_matches_its_reference(name: str, bits: int, act_bits: int, group_size: int) -> None:
    assert kernel_available(name, "cuda"), f"{name} should run on a CUDA GPU"
    kernel = KERNELS[name]
    qw = quantize_rtn(torch.randn(256, 512) * 0.02, bits, group_size).to("cuda")
    x = torch.randn(32, 512, device="cuda", dtype=torch.bfloat16)
    out = kernel.linear(x, kernel.pack(qw, torch.bfloat16))
    assert _relative_error(out, kernel.reference(x.float(), qw)) < 2e-2


def _cuda_model() -> DLMAdapter:
    adapter = build_random_model("llama", num_layers=2, hidden_size=256, num_heads=4, intermediate_size=512,
                                 vocab_size=512)
    adapter.model.to("cuda", torch.bfloat16)
    return adapter


def _kernels_run(adapter: DLMAdapter) -> set[str]:
    return {m.summary["kernels"][0] for m in adapter.model.modules() if isinstance(m, QuantizedLinear)}


@pytest.mark.parametrize(("weight_bits", "act_bits", "expected"), [
    (4, 16, INT4_WEIGHT_ONLY), (8, 16, INT8_WEIGHT_ONLY), (8, 8, INT8_DYNAMIC)])
def test_apply_plan_runs_real_kernels_on_cuda_when_asked(weight_bits: int, act_bits: int, expected: str) -> None:
    adapter = _cuda_model()
    ids = torch.randint(0, 510, (1, 32), device="cuda")
    with torch.inference_mode():
        dense = adapter.forward_logits(ids)
    group_size = 0 if weight_bits == 8 else 128  # the int8 kernels take per-channel weights
    plan = uniform_plan(adapter, weight_bits=weight_bits, act_bits=act_bits, group_size=group_size)
    apply_plan_(adapter, plan, use_kernels=True)
    assert _kernels_run(adapter) == {expected}
    with torch.inference_mode():
        assert _relative_error(adapter.forward_logits(ids), dense) < 0.25
        out = generate(adapter, ids[0, :8], gen_length=16, steps=8, block_length=16)
    assert out.shape == (1, 24)


@pytest.mark.parametrize(("weight_bits", "act_bits", "expected"), [
    (4, 16, SIMULATED), (8, 16, SIMULATED), (8, 8, f"{SIMULATED}+fake_act8")])
def test_apply_plan_dequantizes_on_cuda_by_default(weight_bits: int, act_bits: int, expected: str) -> None:
    """No real kernel beat bf16 on an H200, so by default every quantized layer multiplies its
    dequantized weight in bf16: exactly what ``use_kernels=False`` computes."""
    assert kernels_for("cuda", None) == frozenset()
    group_size = 0 if weight_bits == 8 else 128
    ids = torch.randint(0, 510, (1, 32), device="cuda")
    outputs = []
    for use_kernels in (None, False):
        adapter = _cuda_model()
        apply_plan_(adapter, uniform_plan(adapter, weight_bits=weight_bits, act_bits=act_bits, group_size=group_size),
                    use_kernels=use_kernels)
        assert _kernels_run(adapter) == {expected}
        with torch.inference_mode():
            outputs.append(adapter.forward_logits(ids))
            out = generate(adapter, ids[0, :8], gen_length=16, steps=8, block_length=16)
        assert out.shape == (1, 24)
    assert torch.equal(outputs[0], outputs[1])


def test_semi_structured_two_four_matches_masked_dense() -> None:
    from torch.sparse import to_sparse_semi_structured

    weight = torch.randn(512, 1024, device="cuda", dtype=torch.float16)
    mask = keep_mask(weight.abs().float().cpu(), 0.5, "2:4").to("cuda")
    pruned = weight * mask.to(weight.dtype)
    x = torch.randn(64, 1024, device="cuda", dtype=torch.float16)
    sparse = to_sparse_semi_structured(pruned)
    assert _relative_error(F.linear(x, sparse), F.linear(x, pruned)) < 1e-2


def test_fp8_scaled_matmul_where_the_gpu_has_it() -> None:
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 matmuls need compute capability 8.9 or newer")
    a = torch.randn(64, 512, device="cuda")
    b = torch.randn(256, 512, device="cuda")
    scale_a = (a.abs().max() / 448).reshape(1)
    scale_b = (b.abs().max() / 448).reshape(1)
    a8 = (a / scale_a).to(torch.float8_e4m3fn)
    b8 = (b / scale_b).to(torch.float8_e4m3fn)
    out = torch._scaled_mm(a8, b8.t(), scale_a=scale_a, scale_b=scale_b, out_dtype=torch.bfloat16)
    assert _relative_error(out, a @ b.t()) < 0.1


def test_bf16_dense_model_agrees_with_fp32() -> None:
    adapter = build_random_model("llama", num_layers=2, hidden_size=256, num_heads=4, intermediate_size=512,
                                 vocab_size=512)
    ids = torch.randint(0, 510, (1, 32))
    with torch.inference_mode():
        reference = adapter.forward_logits(ids)
        adapter.model.to("cuda", torch.bfloat16)
        out = adapter.forward_logits(ids.to("cuda"))
    assert _relative_error(out.cpu(), reference) < 0.05
