"""Every public subpackage imports on its own in a fresh interpreter (no import circle hides behind an
import order that the tests happen to follow)."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

SUBPACKAGES = ("plan", "models", "compress", "spaces", "evaluators", "cost_models", "search", "reports", "cli")


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_subpackage_imports_alone(name: str) -> None:
    done = subprocess.run([sys.executable, "-c", f"import dlmsearch.{name}"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_search_space_imports_first() -> None:
    """What a new user types first (it used to fail with a circular ImportError)."""
    done = subprocess.run([sys.executable, "-c", "from dlmsearch.spaces import SearchSpace"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_plan_imports_without_torch_or_transformers() -> None:
    code = ("import sys, dlmsearch.plan; heavy = sorted(m for m in ('torch', 'transformers') if m in sys.modules); "
            "print(','.join(heavy))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == ""


@pytest.mark.parametrize("package", ["dlmsearch", "dlmsearch.models"])
def test_lazy_package_names_all_resolve(package: str) -> None:
    module = importlib.import_module(package)
    assert sorted(module.__all__) == sorted(module._HOME_OF)
    for name in module.__all__:
        assert getattr(module, name) is not None
    with pytest.raises(AttributeError, match="no attribute"):
        module.no_such_name  # noqa: B018


#: Layers, lowest first: a module may import its own subpackage and any lower layer, nothing above
#: and no sibling of its own layer (ARCHITECTURE.md's data flow).
LAYERS = {"data": 0, "models": 1, "plan": 2, "compress": 3, "evaluators": 4, "spaces": 4, "cost_models": 4,
          "search": 5, "reports": 6, "cli": 7}
#: Arrows that run up on purpose, each imported inside the one function that needs it:
ALLOWED_UPWARD = {
    # load_model(folder) is the one seam for compressed folders: it hands them to compress.persist
    ("dlmsearch/models/loading.py", "dlmsearch.compress.persist"),
    # run_study writes the run folder's report when its trials are done (write_outputs=True)
    ("dlmsearch/search/runner.py", "dlmsearch.reports.study_report"),
}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
    return [name for name in found if name.startswith("dlmsearch.")]


def test_imports_follow_the_layers() -> None:
    root = Path(__file__).resolve().parents[1]
    wrong = []
    for path in sorted((root / "dlmsearch").rglob("*.py")):
        relative = path.relative_to(root)
        layer = relative.with_suffix("").parts[1]
        if layer == "__init__":
            continue
        assert layer in LAYERS, f"{relative}: a new subpackage needs its place in LAYERS"
        for module in _imports(path):
            target = module.split(".")[1]
            if target == layer:
                continue
            upward = LAYERS[target] >= LAYERS[layer]
            if upward and (str(relative), module) not in ALLOWED_UPWARD:
                wrong.append(f"{relative} imports {module} ({layer} -> {target})")
    assert not wrong, "\n".join(wrong)
