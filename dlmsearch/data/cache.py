"""Where dlmsearch keeps its caches (dense references, sensitivity tables, measured profiles)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Folder of dlmsearch's caches (``$DLMSEARCH_CACHE``, default ``~/.cache/dlmsearch``; an empty value
    means the default, not the current folder)."""
    return Path(os.environ.get("DLMSEARCH_CACHE") or Path.home() / ".cache" / "dlmsearch")
