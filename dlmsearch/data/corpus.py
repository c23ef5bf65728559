"""Access to the vendored Shakespeare corpus, split by play.

Splitting by whole play (not by offset) keeps the evaluation text out of training entirely:
characters, names and scenes of a held-out play are never seen by the model.
"""

from __future__ import annotations

import functools
import json
import lzma
from importlib import resources

CORPUS_FILE = "shakespeare_gut.json.xz"

#: Held-out plays: evaluation figures (NELBO, infill accuracy, full evaluator) use these only.
EVALUATION_TEXTS: tuple[str, ...] = ("hamlet", "macbeth", "tempest", "twelfth_night")
#: Calibration plays: pruning / quantization calibration and the proxy evaluator's masked states.
CALIBRATION_TEXTS: tuple[str, ...] = ("julius_caesar", "romeo_and_juliet")
SPLITS: tuple[str, ...] = ("train", "calibration", "evaluation")


@functools.cache
def load_texts() -> dict[str, str]:
    """Return every shipped text keyed by its name (e.g. ``"hamlet"``), sorted by name."""
    raw = resources.files("dlmsearch.data").joinpath(CORPUS_FILE).read_bytes()
    texts: dict[str, str] = json.loads(lzma.decompress(raw))
    return dict(sorted(texts.items()))


def split_names(split: str) -> tuple[str, ...]:
    """Names of the texts in ``split`` (one of :data:`SPLITS`), in sorted order."""
    if split == "evaluation":
        return EVALUATION_TEXTS
    if split == "calibration":
        return CALIBRATION_TEXTS
    if split == "train":
        held_out = set(EVALUATION_TEXTS) | set(CALIBRATION_TEXTS)
        return tuple(name for name in load_texts() if name not in held_out)
    raise ValueError(f"split={split!r} is not a known split; allowed: {', '.join(SPLITS)}")


def load_split(split: str) -> str:
    """The texts of ``split`` joined by blank lines, in the order of :func:`split_names`."""
    texts = load_texts()
    return "\n\n".join(texts[name] for name in split_names(split))
