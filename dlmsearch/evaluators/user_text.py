"""Users' own text for the evaluators: text files and prompt lists, encoded by the model's tokenizer."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from dlmsearch.models.adapters import DLMAdapter


def read_text_ids(adapter: DLMAdapter, files: Sequence[str | Path], field: str) -> torch.Tensor:
    """The UTF-8 text of ``files`` (joined by newlines) as 1-D token ids.

    ``field`` names the setting the files came from in the error raised for a missing file or for
    files that hold no text.
    """
    missing = [str(f) for f in files if not Path(f).is_file()]
    if missing:
        raise FileNotFoundError(f"{field}: {missing} not found; allowed: existing text files")
    text = "\n".join(Path(f).read_text(encoding="utf-8", errors="replace") for f in files)
    ids = adapter.encode(text)
    if ids.numel() == 0:
        raise ValueError(f"{field}: {[str(f) for f in files]} hold no text; allowed: non-empty text files")
    return ids


def read_prompts(path: str | Path, field: str) -> list[str]:
    """The non-empty lines of the prompt file ``path`` (a line's ``\\n`` escapes become newlines)."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{field}: {str(path)!r} not found; allowed: a text file with one prompt per line")
    prompts = [line.replace("\\n", "\n") for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"{field}: {str(path)!r} holds no prompt; allowed: a text file with one prompt per line")
    return prompts
