"""Reference outputs of the dense model, computed once and cached on disk.

The proxy compares every compressed model with the dense one at the same masked states, so the
dense log-probabilities are a fixed input. They are stored as safetensors under the cache folder
(``$DLMSEARCH_CACHE`` or ``~/.cache/dlmsearch``), keyed by a hash of the model's weights and of
everything that defines the states (data, seeds, lengths), so a change to any of them recomputes.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from dlmsearch.data.cache import cache_dir
from dlmsearch.models.adapters import DLMAdapter


def model_digest(adapter: DLMAdapter) -> str:
    """SHA-256 over the architecture fingerprint and every parameter's bytes (stable across processes)."""
    digest = hashlib.sha256(adapter.shape.fingerprint.encode())
    for name, tensor in sorted(adapter.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cache_key(model: str, spec: dict[str, Any]) -> str:
    """Key of a cached result: the model digest plus the JSON of what defines the computation."""
    payload = json.dumps({"model": model, **spec}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def cached_tensors(kind: str, key: str, compute: Any) -> dict[str, torch.Tensor]:
    """Tensors stored under ``kind/key``; ``compute()`` makes (and stores) them the first time."""
    path = cache_dir() / kind / f"{key}.safetensors"
    if path.is_file():
        return load_file(str(path))
    tensors: dict[str, torch.Tensor] = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial")  # one per process: workers may race on a key
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(partial))
    partial.replace(path)  # atomic: a killed run never leaves a truncated cache entry
    return tensors
