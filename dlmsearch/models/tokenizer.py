"""Character-level tokenizer of the embedded model, saved next to its weights as JSON."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch

MASK_TOKEN = "[MASK]"
UNK_TOKEN = "[UNK]"
TOKENIZER_FILE = "tokenizer.json"


class CharTokenizer:
    """Maps characters to ids; the two special tokens follow the characters.

    Unknown characters encode to ``[UNK]`` so that any user prompt can be encoded.
    """

    def __init__(self, chars: Iterable[str]) -> None:
        self.chars: list[str] = sorted(set(chars))
        if any(len(c) != 1 for c in self.chars):
            raise ValueError("chars must be single characters")
        self._index = {c: i for i, c in enumerate(self.chars)}
        self.unk_token_id = len(self.chars)
        self.mask_token_id = len(self.chars) + 1

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """A tokenizer over every character that occurs in ``text``."""
        return cls(set(text))

    @property
    def vocab_size(self) -> int:
        """Characters plus ``[UNK]`` and ``[MASK]``."""
        return len(self.chars) + 2

    def encode(self, text: str) -> torch.Tensor:
        """1-D int64 tensor of ids for ``text``."""
        return torch.tensor([self._index.get(c, self.unk_token_id) for c in text], dtype=torch.long)

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        """Text for ``ids``; ``[MASK]`` shows as ``_`` and ``[UNK]`` as ``?``."""
        values = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        out = []
        for i in values:
            if i == self.mask_token_id:
                out.append("_")
            elif 0 <= i < len(self.chars):
                out.append(self.chars[i])
            else:
                out.append("?")
        return "".join(out)

    def save(self, folder: str | Path) -> Path:
        """Write ``tokenizer.json`` into ``folder`` and return its path."""
        path = Path(folder) / TOKENIZER_FILE
        payload = {"type": "char", "chars": "".join(self.chars), "unk_token": UNK_TOKEN,
                   "mask_token": MASK_TOKEN}
        path.write_text(json.dumps(payload, indent=1))
        return path

    @classmethod
    def load(cls, folder: str | Path) -> CharTokenizer:
        """Read ``tokenizer.json`` from ``folder``."""
        path = Path(folder) / TOKENIZER_FILE
        payload = json.loads(path.read_text())
        if payload.get("type") != "char" or not isinstance(payload.get("chars"), str):
            raise ValueError(f"{path}: not a dlmsearch character tokenizer (field 'type' must be 'char')")
        return cls(payload["chars"])
