"""Every bench script's dlmsearch imports resolve (a removed or renamed name fails here, not in a rerun)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.parametrize("script", sorted(BENCH.glob("*.py")), ids=lambda p: p.name)
def test_bench_script_imports_resolve(script: Path) -> None:
    tree = ast.parse(script.read_text())
    missing = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("dlmsearch"):
            module = importlib.import_module(node.module or "")
            missing.extend(f"{node.module}.{alias.name}" for alias in node.names if not hasattr(module, alias.name))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("dlmsearch"):
                    importlib.import_module(alias.name)
    assert not missing, f"{script.name} imports names that do not exist: {missing}"
