"""Every public subpackage imports on its own in a fresh interpreter (no import circle hides behind an
import order that the tests happen to follow)."""

from __future__ import annotations

import subprocess
import sys

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
