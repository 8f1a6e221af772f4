"""How unlike the model's own training data a text is, from the model's own representation.

Each text's novelty is the mean cosine distance of its embedding (the mean-pooled last hidden
state, which every forward computes anyway) to its ``k`` nearest neighbours among the index
rows: training texts kept with the model artifact. A text is *novel* when it scores over the
threshold, which is set on calibration rows (validation texts, not in the index) so that a known
share of texts like the training data scores over it: with ``n`` calibration rows the threshold
is the score that exactly ``m = ceil(n * share) - 1`` of them exceed, and then an unshifted text
is novel with probability at most ``(m + 1) / (n + 1)`` (exchangeability, as in conformal
prediction). That probability, ``expected_share``, is what the drift verdict tests a window's
share of novel texts against.

The index is embedded by the runtime and precision that serve the model (ONNX int8 and PyTorch
fp32 place texts slightly differently), once per model version, runtime and precision, and
cached beside the downloaded version.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_NEIGHBOURS = 10
DEFAULT_INDEX_ROWS = 3000
DEFAULT_CALIBRATION_ROWS = 1000
# Of unshifted texts called novel. Measured (docs/performance.md): at 2 % the verdict caught a 5 %
# mix of Reddit comments in 89.9 % of 500-row windows, at 1 % in 88.5 % (a simulation on the same
# scores put 5 % at 59 %): the rarer the novel texts, the fewer shifted rows cross the line, and
# the commoner, the more unshifted ones do.
DEFAULT_NOVEL_SHARE = 0.02


@dataclass(frozen=True)
class NoveltyIndex:
    embeddings: np.ndarray  # index rows, unit length, float32
    neighbours: int
    threshold: float
    expected_share: float  # chance that an unshifted text scores over the threshold
    calibration_rows: int

    def score(self, pooled: np.ndarray) -> np.ndarray:
        """Mean cosine distance of each row of ``pooled`` to its nearest index rows."""
        if not len(pooled):
            return np.zeros(0, dtype=np.float32)
        similarity = unit(pooled) @ self.embeddings.T  # rows by index rows
        k = min(self.neighbours, similarity.shape[1])
        nearest = np.partition(similarity, similarity.shape[1] - k, axis=1)[:, -k:]
        return np.asarray(1.0 - nearest.mean(axis=1), dtype=np.float32)

    @classmethod
    def calibrated(
        cls,
        index: np.ndarray,
        calibration: np.ndarray,
        neighbours: int = DEFAULT_NEIGHBOURS,
        novel_share: float = DEFAULT_NOVEL_SHARE,
    ) -> NoveltyIndex:
        """The index over ``index`` embeddings with its threshold set on ``calibration`` ones."""
        draft = cls(unit(index), neighbours, math.inf, 1.0, len(calibration))
        scores = np.sort(draft.score(calibration))
        # Rounded first: 100 * 0.07 is 7.000000000000001 in floating point, and ceil would give 8.
        above = max(math.ceil(round(len(scores) * novel_share, 9)) - 1, 0)  # calibration rows over it
        threshold = float(scores[len(scores) - above - 1]) if len(scores) else math.inf
        return cls(draft.embeddings, neighbours, threshold, (above + 1) / (len(scores) + 1), len(scores))

    def describe(self) -> dict[str, Any]:
        return {
            "neighbours": self.neighbours,
            "index_rows": len(self.embeddings),
            "calibration_rows": self.calibration_rows,
            "threshold": round(self.threshold, 6),
            "expected_share": round(self.expected_share, 6),
        }

    def save(self, path: Path) -> None:
        partial = path.with_suffix(".partial.npz")
        # Unrounded: a threshold rounded down would let the calibration row at it count as over.
        meta = {**self.describe(), "threshold": self.threshold, "expected_share": self.expected_share}
        np.savez(partial, embeddings=self.embeddings, meta=json.dumps(meta))
        partial.rename(path)

    @classmethod
    def load(cls, path: Path) -> NoveltyIndex:
        with np.load(path) as saved:
            meta = json.loads(str(saved["meta"]))
            return cls(
                saved["embeddings"],
                meta["neighbours"],
                meta["threshold"],
                meta["expected_share"],
                meta["calibration_rows"],
            )


def unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return np.asarray(vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12))


def cached_index(
    embed: Callable[[list[str]], np.ndarray],
    index_texts: list[str],
    calibration_texts: list[str],
    path: Path,
    neighbours: int = DEFAULT_NEIGHBOURS,
    novel_share: float = DEFAULT_NOVEL_SHARE,
) -> NoveltyIndex:
    """The index ``embed`` makes of these texts, built once and kept at ``path`` (a file lock:
    workers starting together build it once)."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if path.is_file():
            return NoveltyIndex.load(path)
        novelty = NoveltyIndex.calibrated(
            embed(index_texts), embed(calibration_texts), neighbours=neighbours, novel_share=novel_share
        )
        novelty.save(path)
        return novelty
