"""Load a DLM by embedded name or local folder and wrap it in the matching adapter.

Weights come only from safetensors files (transformers' loader, ``use_safetensors=True``);
nothing is downloaded: every load is ``local_files_only``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)
from transformers.utils import logging as transformers_logging

from dlmsearch.models.adapters import (
    REMOTE_CODE_PATTERNS,
    DLMAdapter,
    HFDecoderAdapter,
    LlamaAdapter,
    Qwen2Adapter,
    RemoteCodeAdapter,
)
from dlmsearch.models.embedded import EMBEDDED_MODEL_NAME, EMBEDDED_MODELS, embedded_model_dir
from dlmsearch.models.tokenizer import TOKENIZER_FILE, CharTokenizer

#: transformers ``model_type`` -> adapter for checkpoints that transformers models natively.
NATIVE_ADAPTERS: dict[str, type[HFDecoderAdapter]] = {"llama": LlamaAdapter, "qwen2": Qwen2Adapter}


class ModelLoadError(ValueError):
    """A model reference that cannot be loaded, with the reason and what is allowed."""


def resolve_model_dir(name_or_path: str | Path) -> Path:
    """Folder of an embedded model name or a local checkpoint folder."""
    if str(name_or_path) in EMBEDDED_MODELS:
        return embedded_model_dir(str(name_or_path))
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        raise ModelLoadError(
            f"model={str(name_or_path)!r} is neither an embedded model ({', '.join(EMBEDDED_MODELS)}) "
            "nor a local checkpoint folder")
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"model folder {path} has no config.json")
    return path


def load_tokenizer(folder: Path) -> Any:
    """The character tokenizer when the folder holds one, else a local transformers tokenizer."""
    char_file = folder / TOKENIZER_FILE
    if char_file.is_file() and json.loads(char_file.read_text()).get("type") == "char":
        return CharTokenizer.load(folder)
    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError):
        return None


def _mask_token_id(config: Any, tokenizer: Any, default: int | None, folder: Path) -> int:
    for source in (config, tokenizer):
        value = getattr(source, "mask_token_id", None)
        if isinstance(value, int):
            return value
    if default is not None:
        return default
    raise ModelLoadError(f"{folder}: no mask token id (set 'mask_token_id' in config.json)")


def load_model(name_or_path: str | Path = EMBEDDED_MODEL_NAME, dtype: torch.dtype = torch.float32,
               trust_remote_code: bool = False, meta: bool = False) -> DLMAdapter:
    """Load a DLM for inference and return its adapter.

    ``name_or_path`` is an embedded model name or a local folder. Folders whose config names a
    native architecture (llama, qwen2) load with transformers' own code; folders with their own
    modelling code need ``trust_remote_code=True`` and a known ``model_type``
    (see :data:`~dlmsearch.models.adapters.REMOTE_CODE_PATTERNS`).

    ``meta=True`` builds the model on the meta device without reading its weights: the shapes,
    module names and configuration are real, the tensors hold no data (what a search's
    coordinating process needs; a compressed folder is loaded in full).
    """
    transformers_logging.disable_progress_bar()
    folder = resolve_model_dir(name_or_path)
    from dlmsearch.compress.persist import is_compressed_folder, load_compressed  # compress builds on models

    if is_compressed_folder(folder):
        return load_compressed(folder, trust_remote_code=trust_remote_code)
    config = json.loads((folder / "config.json").read_text())
    model_type = config.get("model_type")
    tokenizer = load_tokenizer(folder)
    common: dict[str, Any] = {"dtype": dtype, "local_files_only": True, "use_safetensors": True}
    if model_type in NATIVE_ADAPTERS and "auto_map" not in config:
        if meta:
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder, local_files_only=True),
                                                         attn_implementation="sdpa", dtype=dtype)
        else:
            model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa", **common)
        adapter_cls = NATIVE_ADAPTERS[model_type]
        mask_id = _mask_token_id(model.config, tokenizer, None, folder)
        return adapter_cls(model.eval(), mask_id, tokenizer, name=str(name_or_path))
    if model_type in REMOTE_CODE_PATTERNS:
        if not trust_remote_code:
            raise ModelLoadError(
                f"{folder} brings its own modelling code (model_type={model_type!r}); "
                "pass trust_remote_code=True (CLI: --trust-remote-code) to run it")
        patterns = REMOTE_CODE_PATTERNS[model_type]
        if meta:
            with torch.device("meta"):
                remote_config = AutoConfig.from_pretrained(folder, trust_remote_code=True, local_files_only=True)
                model = AutoModel.from_config(remote_config, trust_remote_code=True, dtype=dtype)
        else:
            model = AutoModel.from_pretrained(folder, trust_remote_code=True, **common)
        mask_id = _mask_token_id(model.config, tokenizer, patterns.default_mask_token_id, folder)
        return RemoteCodeAdapter(model.eval(), mask_id, patterns, tokenizer, name=str(name_or_path))
    allowed = sorted(NATIVE_ADAPTERS) + sorted(REMOTE_CODE_PATTERNS)
    raise ModelLoadError(f"{folder / 'config.json'}: model_type={model_type!r} has no adapter; "
                         f"allowed: {', '.join(allowed)}")


def build_random_model(architecture: str = "llama", *, num_layers: int = 2, hidden_size: int = 64,
                       num_heads: int = 4, num_kv_heads: int | None = None,
                       intermediate_size: int = 128, vocab_size: int = 64, max_length: int = 128,
                       seed: int = 0) -> DLMAdapter:
    """A tiny randomly initialised bidirectional DLM (for tests and synthetic benchmarks).

    The last vocabulary id is the mask token.
    """
    kv = num_kv_heads or num_heads
    kwargs: dict[str, Any] = dict(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
                  num_hidden_layers=num_layers, num_attention_heads=num_heads,
                  num_key_value_heads=kv, max_position_embeddings=max_length,
                  tie_word_embeddings=False, mask_token_id=vocab_size - 1)
    torch.manual_seed(seed)
    model: torch.nn.Module
    if architecture == "llama":
        model = LlamaForCausalLM(LlamaConfig(**kwargs))
    elif architecture == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**kwargs))
    else:
        raise ValueError(f"architecture={architecture!r}; allowed: llama, qwen2")
    return NATIVE_ADAPTERS[architecture](model.eval(), vocab_size - 1, name=f"random-{architecture}")
