"""Writes a small checkpoint folder with its own modelling code, named like LLaDA (OLMo-style)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

MODELING_SOURCE = '''
import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput


class TinyLLaDAConfig(PretrainedConfig):
    model_type = "llada"

    def __init__(self, n_layers=2, d_model=32, n_heads=4, n_kv_heads=4, mlp_hidden_size=64,
                 embedding_size=40, max_sequence_length=64, **kwargs):
        self.n_layers = n_layers
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads
        self.mlp_hidden_size = mlp_hidden_size
        self.embedding_size = embedding_size
        self.max_sequence_length = max_sequence_length
        super().__init__(**kwargs)


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, f = cfg.d_model, cfg.mlp_hidden_size
        self.heads = cfg.n_heads
        self.attn_norm = nn.LayerNorm(d)
        self.ff_norm = nn.LayerNorm(d)
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.ff_proj = nn.Linear(d, f, bias=False)
        self.up_proj = nn.Linear(d, f, bias=False)
        self.ff_out = nn.Linear(f, d, bias=False)

    def forward(self, x, output_attentions=False):
        b, l, d = x.shape
        h = self.attn_norm(x)
        split = lambda t: t.view(b, l, self.heads, d // self.heads).transpose(1, 2)
        q, k, v = split(self.q_proj(h)), split(self.k_proj(h)), split(self.v_proj(h))
        probs = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, dim=-1)
        x = x + self.attn_out((probs @ v).transpose(1, 2).reshape(b, l, d))
        h = self.ff_norm(x)
        x = x + self.ff_out(nn.functional.silu(self.ff_proj(h)) * self.up_proj(h))
        return x, probs if output_attentions else None


class Transformer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.wte = nn.Embedding(cfg.embedding_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.max_sequence_length, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.ff_out = nn.Linear(cfg.d_model, cfg.embedding_size, bias=False)


class Inner(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.transformer = Transformer(cfg)


class TinyLLaDAModel(PreTrainedModel):
    config_class = TinyLLaDAConfig
    base_model_prefix = "model"

    def __init__(self, config):
        super().__init__(config)
        self.model = Inner(config)
        self.post_init()

    def forward(self, input_ids, output_attentions=False, **kwargs):
        t = self.model.transformer
        x = t.wte(input_ids) + t.wpe(torch.arange(input_ids.shape[1], device=input_ids.device))
        attentions = []
        for block in t.blocks:
            x, probs = block(x, output_attentions)
            attentions.append(probs)
        logits = t.ff_out(t.ln_f(x))
        return CausalLMOutput(logits=logits, attentions=tuple(attentions) if output_attentions else None)
'''


def write_tiny_llada(folder: Path, seed: int = 0) -> Path:
    """Create the folder (config with auto_map, modelling file, safetensors) and return it."""
    import importlib.util
    import sys

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "modeling_tinyllada.py").write_text(MODELING_SOURCE)
    config = {
        "model_type": "llada", "architectures": ["TinyLLaDAModel"],
        "auto_map": {"AutoConfig": "modeling_tinyllada.TinyLLaDAConfig",
                     "AutoModel": "modeling_tinyllada.TinyLLaDAModel"},
        "n_layers": 2, "d_model": 32, "n_heads": 4, "n_kv_heads": 4, "mlp_hidden_size": 64,
        "embedding_size": 40, "max_sequence_length": 64, "mask_token_id": 39,
    }
    (folder / "config.json").write_text(json.dumps(config))
    spec = importlib.util.spec_from_file_location("tinyllada_writer", folder / "modeling_tinyllada.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["tinyllada_writer"] = module
    spec.loader.exec_module(module)
    torch.manual_seed(seed)
    cfg_kwargs = {k: v for k, v in config.items() if k not in ("model_type", "architectures", "auto_map")}
    model = module.TinyLLaDAModel(module.TinyLLaDAConfig(**cfg_kwargs))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    return folder
