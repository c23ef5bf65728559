"""Checkpoints never unpickle: a planted malicious pickle is refused with no side effect, and the
package's source holds no unsafe load."""

from __future__ import annotations

import ast
import os
import pickle
from pathlib import Path

import pytest

from dlmsearch.models.loading import load_model

PACKAGE = Path(__file__).resolve().parents[1] / "dlmsearch"


class _Payload:
    """Unpickling this creates a file: the side effect a malicious checkpoint would have."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_checkpoint_is_refused_without_side_effect(tmp_path: Path) -> None:
    folder = tmp_path / "evil"
    load_model()  # the real model loads
    embedded = PACKAGE / "models" / "embedded" / "shakespeare-char"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json"):
        if (embedded / name).exists():
            (folder / name).write_bytes((embedded / name).read_bytes())
    marker = tmp_path / "pwned"
    with open(folder / "pytorch_model.bin", "wb") as handle:
        pickle.dump({"model.embed_tokens.weight": _Payload(marker)}, handle)
    with pytest.raises(Exception, match="safetensors"):  # refused: only safetensors weights load
        load_model(folder)
    assert not marker.exists()


def _calls(tree: ast.AST) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)]


def _name(func: ast.expr) -> str:
    if isinstance(func, ast.Attribute):
        return f"{_name(func.value)}.{func.attr}"
    return func.id if isinstance(func, ast.Name) else ""


def test_no_unsafe_deserialisation_in_the_package() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for call in _calls(ast.parse(path.read_text())):
            name = _name(call.func)
            if name.endswith("torch.load"):
                safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                           for k in call.keywords)
                if not safe:
                    offenders.append(f"{path}:{call.lineno} {name} without weights_only=True")
            if name in ("pickle.load", "pickle.loads", "dill.load", "joblib.load", "cloudpickle.load"):
                offenders.append(f"{path}:{call.lineno} {name}")
    assert not offenders, offenders


def _header_file(path: Path, header: dict[str, object], payload: bytes) -> None:
    import json
    import struct

    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + payload)


@pytest.mark.parametrize("case", ["length_beyond_file", "overlapping_offsets", "shape_dtype_mismatch", "huge_header"])
def test_hostile_safetensors_headers_are_rejected_quickly(tmp_path: Path, case: str) -> None:
    import resource
    import struct
    import time

    from dlmsearch.compress.persist import WEIGHTS_FILE

    folder = tmp_path / "model"
    folder.mkdir()
    embedded = PACKAGE / "models" / "embedded" / "shakespeare-char"
    for name in ("config.json", "tokenizer.json"):
        (folder / name).write_bytes((embedded / name).read_bytes())
    weights = folder / WEIGHTS_FILE
    if case == "length_beyond_file":
        _header_file(weights, {"a": {"dtype": "F32", "shape": [1 << 30], "data_offsets": [0, 4 << 30]}}, b"\0" * 16)
    elif case == "overlapping_offsets":
        _header_file(weights, {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                               "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}, b"\0" * 24)
    elif case == "shape_dtype_mismatch":
        _header_file(weights, {"a": {"dtype": "F32", "shape": [100], "data_offsets": [0, 16]}}, b"\0" * 16)
    else:
        weights.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    with pytest.raises(Exception, match="deserializing header"):  # safetensors refuses before reading data
        load_model(folder)
    assert time.monotonic() - start < 10
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 512 * 1024  # KiB: no huge allocation
