"""Character tokenizer: round trip, special tokens, persistence."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlmsearch.models.tokenizer import CharTokenizer


def test_round_trip_and_special_ids(tmp_path: Path) -> None:
    tok = CharTokenizer.from_text("abc ABC.\n")
    assert tok.vocab_size == 11 and tok.mask_token_id == 10 and tok.unk_token_id == 9
    assert tok.decode(tok.encode("cab. A")) == "cab. A"
    assert tok.decode(tok.encode("xyz")) == "???"
    assert tok.decode([tok.mask_token_id]) == "_"
    tok.save(tmp_path)
    loaded = CharTokenizer.load(tmp_path)
    assert loaded.chars == tok.chars and loaded.mask_token_id == tok.mask_token_id


def test_foreign_tokenizer_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text('{"type": "bpe"}')
    with pytest.raises(ValueError, match="not a dlmsearch character tokenizer"):
        CharTokenizer.load(tmp_path)
