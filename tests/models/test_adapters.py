"""Adapters (1) and (2): role-named linears, shapes, bidirectionality, attention capture, loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dlmsearch.models.adapters import ROLES, DLMAdapter, LlamaAdapter
from dlmsearch.models.loading import ModelLoadError, build_random_model, load_model


def _first_position_changes_with_last_token(adapter: DLMAdapter) -> bool:
    vocab = adapter.shape.vocab_size - 1
    ids = torch.randint(0, vocab, (1, 16), generator=torch.Generator().manual_seed(1))
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 1) % vocab
    with torch.no_grad():
        return not torch.allclose(adapter.forward_logits(ids)[0, 0], adapter.forward_logits(changed)[0, 0])


@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
def test_forward_is_bidirectional(architecture: str) -> None:
    assert _first_position_changes_with_last_token(build_random_model(architecture))


def test_embedded_model_is_bidirectional(embedded: DLMAdapter) -> None:
    assert _first_position_changes_with_last_token(embedded)


def test_linears_are_named_by_role(tiny_llama: DLMAdapter) -> None:
    infos = tiny_llama.linears()
    assert [i.role for i in infos] == list(ROLES) * 2
    assert infos[0].name == "model.layers.0.self_attn.q_proj"
    assert infos[-1].name == "model.layers.1.mlp.down_proj"
    down = infos[-1]
    assert (down.in_features, down.out_features) == (128, 64)
    assert all(isinstance(tiny_llama.get_module(i.name), torch.nn.Linear) for i in infos)


def test_gqa_shapes(tiny_qwen2: DLMAdapter) -> None:
    shape = tiny_qwen2.shape
    assert (shape.num_heads, shape.num_kv_heads, shape.head_dim) == (4, 2, 16)
    k = next(i for i in tiny_qwen2.linears() if i.role == "k")
    assert k.out_features == shape.num_kv_heads * shape.head_dim
    assert shape.fingerprint.startswith("qwen2/L2/d64/h4/kv2")


def test_attention_capture_gives_normalised_mass_per_key(tiny_llama: DLMAdapter) -> None:
    ids = torch.randint(0, 60, (3, 12))
    with torch.no_grad():
        plain = tiny_llama.forward_logits(ids)
        with tiny_llama.capture_attention() as capture:
            captured = tiny_llama.forward_logits(ids)
    assert torch.allclose(plain, captured, atol=1e-5)  # eager and SDPA agree
    assert sorted(capture.mass) == [0, 1]
    mass = capture.mass[1][0]
    assert mass.shape == (3, 12)
    assert torch.allclose(mass.sum(-1), torch.ones(3), atol=1e-5)
    assert tiny_llama.model.config._attn_implementation == "sdpa"  # restored afterwards


def test_embedded_model_loads_with_tokenizer(embedded: DLMAdapter) -> None:
    assert isinstance(embedded, LlamaAdapter)
    assert embedded.shape.num_layers == 6
    text = "ROMEO. But soft!"
    assert embedded.decode(embedded.encode(text)) == text
    assert embedded.mask_token_id == embedded.tokenizer.mask_token_id


def test_saved_random_model_reloads_identically(tmp_path: Path, tiny_qwen2: DLMAdapter) -> None:
    tiny_qwen2.model.save_pretrained(tmp_path, safe_serialization=True)
    reloaded = load_model(tmp_path)
    ids = torch.randint(0, 60, (1, 10))
    with torch.no_grad():
        assert torch.equal(reloaded.forward_logits(ids), tiny_qwen2.forward_logits(ids))


def test_unknown_model_reference_is_explained(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="neither an embedded model"):
        load_model(tmp_path / "missing")
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(ModelLoadError, match="model_type='gpt2' has no adapter; allowed: llama, qwen2"):
        load_model(tmp_path)
