"""The shipped corpus and its deterministic train / calibration / evaluation splits."""

from dlmsearch.data.corpus import (
    CALIBRATION_TEXTS,
    EVALUATION_TEXTS,
    SPLITS,
    load_split,
    load_texts,
    split_names,
)

__all__ = [
    "CALIBRATION_TEXTS",
    "EVALUATION_TEXTS",
    "SPLITS",
    "load_split",
    "load_texts",
    "split_names",
]
