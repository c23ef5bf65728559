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
