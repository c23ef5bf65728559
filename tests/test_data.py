"""The shipped corpus and its deterministic split by play."""

from __future__ import annotations

import pytest

from dlmsearch.data import CALIBRATION_TEXTS, EVALUATION_TEXTS, load_split, load_texts, split_names


def test_corpus_holds_the_shakespeare_texts() -> None:
    texts = load_texts()
    assert len(texts) == 42
    assert texts["hamlet"].startswith("HAMLET, PRINCE OF DENMARK")
    assert sum(len(t) for t in texts.values()) > 4_500_000


def test_splits_are_disjoint_and_cover_the_corpus() -> None:
    train, calib, evaluation = (set(split_names(s)) for s in ("train", "calibration", "evaluation"))
    assert calib == set(CALIBRATION_TEXTS) and evaluation == set(EVALUATION_TEXTS)
    assert not (train & calib or train & evaluation or calib & evaluation)
    assert train | calib | evaluation == set(load_texts())


def test_held_out_text_is_not_in_training_text() -> None:
    train = load_split("train")
    assert "To be, or not to be" not in train
    assert "To be, or not to be" in load_split("evaluation")


def test_unknown_split_is_explained() -> None:
    with pytest.raises(ValueError, match="split='test'.*allowed: train, calibration, evaluation"):
        split_names("test")
