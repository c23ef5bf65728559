"""Save a compressed model to a folder and load it back without the original weights.

The folder holds:

- ``model.safetensors``: every tensor; quantized linears as packed integer codes and scales
  (``<layer>.w<bits>.packed`` ...), everything else as it is in the model;
- ``compression.json``: format header, the shapes of every linear and the attributes structured
  pruning changed (so the skeleton can be rebuilt), and each quantized layer's metadata;
- ``plan.json``, ``config.json``, the tokenizer, and ``generation_config.json`` with the Plan's
  sampler settings (``dlmsearch generate --model DIR`` uses them as defaults).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM
from transformers.initialization import no_init_weights

from dlmsearch.compress.apply import CompressionRecord
from dlmsearch.compress.quantized_linear import QuantizedLinear
from dlmsearch.models.adapters import REMOTE_CODE_PATTERNS, DLMAdapter, RemoteCodeAdapter
from dlmsearch.models.loading import NATIVE_ADAPTERS, ModelLoadError, load_tokenizer, resolve_model_dir
from dlmsearch.models.tokenizer import CharTokenizer
from dlmsearch.plan import load_plan

COMPRESSED_FORMAT = "dlmsearch.compressed"
COMPRESSED_VERSION = 1
COMPRESSION_FILE = "compression.json"
PLAN_FILE = "plan.json"
GENERATION_FILE = "generation_config.json"
WEIGHTS_FILE = "model.safetensors"


def is_compressed_folder(path: str | Path) -> bool:
    """True when ``path`` is a folder written by :func:`save_compressed`."""
    return (Path(path) / COMPRESSION_FILE).is_file()


def save_compressed(adapter: DLMAdapter, out_dir: str | Path) -> Path:
    """Write the compressed model of ``adapter`` (after :func:`apply_plan_`) to ``out_dir``."""
    record: CompressionRecord | None = adapter.compression
    if record is None:
        raise ValueError(f"model {adapter.name!r} carries no applied Plan; call apply_plan_ first")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors, layers = _collect_tensors(adapter.model)
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": COMPRESSED_FORMAT})
    config: Any = adapter.model.config
    config.to_json_file(str(out / "config.json"))
    _copy_modelling_code(adapter, out)
    _save_tokenizer(adapter.tokenizer, out)
    record.plan.save(out / PLAN_FILE)
    (out / GENERATION_FILE).write_text(json.dumps({"dlmsearch_sampler": asdict(record.plan.sampler)}, indent=2))
    header = {"format": COMPRESSED_FORMAT, "version": COMPRESSED_VERSION, "base_model": adapter.name,
              "architecture": adapter.shape.architecture, "mask_token_id": adapter.mask_token_id,
              "quantized_layers": layers, **record.to_dict()}
    (out / COMPRESSION_FILE).write_text(json.dumps(header, indent=1))
    return out


def _collect_tensors(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    layers: dict[str, Any] = {}
    quantized_prefixes = []
    for name, module in model.named_modules():
        if isinstance(module, QuantizedLinear):
            state, metadata = module.state_tensors()
            tensors.update({f"{name}.{key}": value for key, value in state.items()})
            layers[name] = metadata
            quantized_prefixes.append(name + ".")
    for key, value in model.state_dict().items():
        if not any(key.startswith(prefix) for prefix in quantized_prefixes):
            tensors[key] = _compact(value.detach()).clone().contiguous()  # clone: tied weights must not share memory
    return tensors, layers


def _compact(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in the narrowest 16-bit float type that holds it exactly (fp32 copies of fp16 weights)."""
    if not tensor.is_floating_point() or tensor.element_size() <= 2:
        return tensor
    for dtype in (torch.float16, torch.bfloat16):
        cast = tensor.to(dtype)
        if torch.equal(cast.to(tensor.dtype), tensor):
            return cast
    return tensor


def _copy_modelling_code(adapter: DLMAdapter, out: Path) -> None:
    if not isinstance(adapter, RemoteCodeAdapter):
        return
    source = resolve_model_dir(adapter.name)
    for path in source.glob("*.py"):
        shutil.copy2(path, out / path.name)


def _save_tokenizer(tokenizer: Any, out: Path) -> None:
    if isinstance(tokenizer, CharTokenizer):
        tokenizer.save(out)
    elif tokenizer is not None:
        tokenizer.save_pretrained(out)


def load_compressed(folder: str | Path, trust_remote_code: bool = False) -> DLMAdapter:
    """Rebuild a model saved by :func:`save_compressed`; its outputs equal the saved model's."""
    path = Path(folder)
    header = _read_header(path)
    plan = load_plan(path / PLAN_FILE)
    config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
    model_type = getattr(config, "model_type", None)
    remote = model_type in REMOTE_CODE_PATTERNS
    if remote and not trust_remote_code:
        raise ModelLoadError(f"{path} brings its own modelling code (model_type={model_type!r}); "
                             "pass trust_remote_code=True (CLI: --trust-remote-code) to run it")
    with no_init_weights():
        if remote:
            model = AutoModel.from_config(config, trust_remote_code=True)
        else:
            model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    tensors = load_file(str(path / WEIGHTS_FILE))
    _rebuild_layers(model, header, tensors)
    rest = {k: v for k, v in tensors.items() if not any(k.startswith(q + ".") for q in header["quantized_layers"])}
    missing, unexpected = model.load_state_dict(rest, strict=False)
    if missing or unexpected:
        raise ModelLoadError(f"{path / WEIGHTS_FILE} does not match its model: missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]}")
    model.eval()
    tokenizer = load_tokenizer(path)
    mask_id = int(header["mask_token_id"])
    adapter: DLMAdapter
    if remote:
        adapter = RemoteCodeAdapter(model, mask_id, REMOTE_CODE_PATTERNS[str(model_type)], tokenizer, name=str(path))
    else:
        adapter = NATIVE_ADAPTERS[str(model_type)](model, mask_id, tokenizer, name=str(path))
    record = CompressionRecord(plan, {k: (int(v[0]), int(v[1])) for k, v in header["linear_shapes"].items()},
                               header["module_attributes"], list(header["quantized"]))
    adapter.compression = record
    return adapter


def _read_header(path: Path) -> dict[str, Any]:
    try:
        header = json.loads((path / COMPRESSION_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path / COMPRESSION_FILE}: unreadable ({exc})") from None
    if header.get("format") != COMPRESSED_FORMAT or header.get("version") != COMPRESSED_VERSION:
        raise ModelLoadError(f"{path / COMPRESSION_FILE}: format={header.get('format')!r} "
                             f"version={header.get('version')!r}; allowed: {COMPRESSED_FORMAT!r} version "
                             f"{COMPRESSED_VERSION}")
    return dict(header)


def _rebuild_layers(model: nn.Module, header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """Give the skeleton the saved shapes and quantized layers before the remaining tensors load."""
    for parent, attributes in header["module_attributes"].items():
        module = model.get_submodule(parent)
        for attribute, value in attributes.items():
            setattr(module, attribute, value)
    for name, (in_features, out_features) in header["linear_shapes"].items():
        metadata = header["quantized_layers"].get(name)
        if metadata is not None:
            prefix = name + "."
            layer_tensors = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            model.set_submodule(name, QuantizedLinear.from_state_tensors(layer_tensors, metadata))
            continue
        current = model.get_submodule(name)
        if (getattr(current, "in_features", None), getattr(current, "out_features", None)) != (in_features,
                                                                                               out_features):
            has_bias = getattr(current, "bias", None) is not None
            model.set_submodule(name, nn.Linear(in_features, out_features, bias=has_bias))

