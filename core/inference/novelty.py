"""How unlike the model's own training data a text is, from the model's own representation.

A text's features are the mean over the model's hidden states (the embedding layer's output and
every transformer layer's) of each one's mean over the text's tokens (``layer_mean``): the
forward computes every layer anyway, so they cost no second pass. Its novelty is its Mahalanobis
distance to the nearest class centre of the index rows (training texts kept with the model
artifact, each in the class the model gives it), with one covariance shared by the classes and
features cut to unit length first.

Why these, measured in ``emotion-ops bench drift`` (docs/performance.md): fine-tuning pulls the
last layer's embeddings into class clusters, where a Reddit comment the model takes for joy sits
as near the joy cluster as a dair-ai text; the earlier layers still keep what kind of text it is
(Uppaal et al. 2023; Chen et al. 2022 on averaging layers). The distance to the nearest class
centre under the shared covariance measures how far a text is off the directions the training
texts vary in. The earlier score, the mean cosine distance to the ``k`` nearest index rows, stays
available as ``method="knn"`` (on the same features: the served features are the layer mean
whatever the score); the bench's grid measures it on the last layer too.

A text is *novel* when it scores over the threshold, which is set on calibration rows
(validation texts, not in the index) so that a known share of texts like the training data
scores over it: with ``n`` calibration rows the threshold is the score that exactly
``m = ceil(n * share) - 1`` of them exceed, and then an unshifted text is novel with probability
at most ``(m + 1) / (n + 1)`` (exchangeability, as in conformal prediction). That probability,
``expected_share``, is what the drift verdict tests a window's share of novel texts against.

The index is built by the runtime and precision that serve the model (ONNX int8 and PyTorch
fp32 place texts slightly differently), once per model version, runtime, precision and method,
and cached beside the downloaded version.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MAHALANOBIS = "mahalanobis"
KNN = "knn"
METHODS = (MAHALANOBIS, KNN)
DEFAULT_METHOD = MAHALANOBIS
DEFAULT_NEIGHBOURS = 10  # knn only
DEFAULT_INDEX_ROWS = 3000
DEFAULT_CALIBRATION_ROWS = 2000
# Of unshifted texts called novel. Measured (docs/performance.md): with the layer mean and the
# Mahalanobis score, 1 % caught a 5 % mix of Reddit comments in 98 % of 500-row windows; the
# share test's power grows with how many shifted texts cross the line against how many
# unshifted ones do, and at 1 % two in three Reddit comments do.
DEFAULT_NOVEL_SHARE = 0.01

# Features = every hidden state, the embedding layer's output (index 0: the tokens and their
# positions, before any context) with the transformer layers': in the grid it caught a 10 % mix
# in 86.8 % of 100-row windows against 83.8 % without it.
FIRST_POOLED_LAYER = 0
# What the features are: the model card says it, and a graph or index cached for other features
# is not reused (both file names carry the tag).
REPRESENTATION = (
    "mean over every hidden state (embeddings and layers) of its mean over the tokens"
    if FIRST_POOLED_LAYER == 0
    else f"mean over the hidden states from {FIRST_POOLED_LAYER} on of each one's mean over the tokens"
)
POOLING_TAG = f"layers{FIRST_POOLED_LAYER}"


def layer_mean(hidden_states: Sequence[Any], attention_mask: Any) -> np.ndarray:
    """Each text's features: the mean over ``hidden_states[FIRST_POOLED_LAYER:]`` of each one's
    mean over the text's tokens (padding left out). NumPy in and out, so a caller on ONNX
    Runtime never starts torch's thread pool; the export computes the same in its graph."""
    layers = hidden_states[FIRST_POOLED_LAYER:]
    assert len(layers), "no hidden state to pool"
    total = np.asarray(layers[0], dtype=np.float32)
    for layer in layers[1:]:
        total = total + np.asarray(layer, dtype=np.float32)
    return token_mean(total / len(layers), attention_mask)


def token_mean(hidden: Any, attention_mask: Any) -> np.ndarray:
    """Each text's mean of ``hidden`` (texts x tokens x features) over its own tokens."""
    mask = np.asarray(attention_mask, dtype=np.float32)[:, :, None]
    values = np.asarray(hidden, dtype=np.float32)
    return np.asarray((values * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1.0))


@dataclass(frozen=True)
class NoveltyIndex:
    """A fitted novelty score and its calibrated threshold.

    ``arrays`` by ``method``: ``mahalanobis``: ``whitening`` (a Cholesky factor of the shared
    precision matrix) and ``centres`` (the class centres, whitened); ``knn``: ``embeddings``
    (the index rows, unit length)."""

    method: str
    arrays: dict[str, np.ndarray] = field(repr=False)
    threshold: float
    expected_share: float  # chance that an unshifted text scores over the threshold
    calibration_rows: int
    index_rows: int
    neighbours: int = DEFAULT_NEIGHBOURS

    def score(self, features: np.ndarray) -> np.ndarray:
        """Each row's novelty: higher is less like the index rows."""
        if not len(features):
            return np.zeros(0, dtype=np.float32)
        rows = unit(features)
        if self.method == KNN:
            similarity = rows @ self.arrays["embeddings"].T  # rows by index rows
            k = min(self.neighbours, similarity.shape[1])
            nearest = np.partition(similarity, similarity.shape[1] - k, axis=1)[:, -k:]
            return np.asarray(1.0 - nearest.mean(axis=1), dtype=np.float32)
        whitened = rows @ self.arrays["whitening"]
        # The differences themselves, not |z|^2 - 2 z.c + |c|^2: whitened norms run into the
        # tens, and float32 loses the small distances to the expansion's cancellation.
        differences = whitened[:, None, :] - self.arrays["centres"][None, :, :]
        return np.asarray(np.sqrt((differences * differences).sum(axis=2).min(axis=1)), dtype=np.float32)

    @classmethod
    def calibrated(
        cls,
        index: np.ndarray,
        calibration: np.ndarray,
        index_classes: np.ndarray | None = None,
        method: str = DEFAULT_METHOD,
        neighbours: int = DEFAULT_NEIGHBOURS,
        novel_share: float = DEFAULT_NOVEL_SHARE,
    ) -> NoveltyIndex:
        """The score fitted on ``index`` features (``index_classes``: each row's class, for
        Mahalanobis) with its threshold set on ``calibration`` features."""
        if method == KNN:
            arrays = {"embeddings": unit(index)}
        elif method == MAHALANOBIS:
            classes = np.zeros(len(index), dtype=int) if index_classes is None else np.asarray(index_classes)
            arrays = _mahalanobis_arrays(unit(index), classes)
        else:
            raise ValueError(f"unknown novelty method '{method}'; expected one of {', '.join(METHODS)}")
        draft = cls(method, arrays, math.inf, 1.0, len(calibration), len(index), neighbours)
        scores = np.sort(draft.score(calibration))
        above = rows_over_threshold(len(scores), novel_share)
        threshold = float(scores[len(scores) - above - 1]) if len(scores) else math.inf
        return cls(
            method,
            arrays,
            threshold,
            expected_share(len(scores), novel_share),
            len(scores),
            len(index),
            neighbours,
        )

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {
            "method": self.method,
            "index_rows": self.index_rows,
            "calibration_rows": self.calibration_rows,
            "threshold": round(self.threshold, 6),
            "expected_share": round(self.expected_share, 6),
        }
        if self.method == KNN:
            described["neighbours"] = self.neighbours
        else:
            described["classes"] = len(self.arrays["centres"])
        return described

    def save(self, path: Path) -> None:
        partial = path.with_suffix(".partial.npz")
        # Unrounded: a threshold rounded down would let the calibration row at it count as over.
        meta = {
            **self.describe(),
            "threshold": self.threshold,
            "expected_share": self.expected_share,
            "neighbours": self.neighbours,
        }
        arrays: dict[str, Any] = {"meta": json.dumps(meta), **self.arrays}
        np.savez(partial, **arrays)
        partial.rename(path)

    @classmethod
    def load(cls, path: Path) -> NoveltyIndex:
        with np.load(path) as saved:
            meta = json.loads(str(saved["meta"]))
            arrays = {name: saved[name] for name in saved.files if name != "meta"}
        return cls(
            meta["method"],
            arrays,
            meta["threshold"],
            meta["expected_share"],
            meta["calibration_rows"],
            meta["index_rows"],
            meta["neighbours"],
        )


def rows_over_threshold(calibration_rows: int, novel_share: float) -> int:
    """How many calibration rows score over the threshold: ``ceil(n * share) - 1``."""
    # Rounded first: 100 * 0.07 is 7.000000000000001 in floating point, and ceil would give 8.
    return max(math.ceil(round(calibration_rows * novel_share, 9)) - 1, 0)


def expected_share(calibration_rows: int, novel_share: float) -> float:
    """The chance an unshifted text is novel, ``(m + 1) / (n + 1)``: a function of the
    calibration's size and the share alone, the same on every runtime that recalibrates."""
    return (rows_over_threshold(calibration_rows, novel_share) + 1) / (calibration_rows + 1)


def _mahalanobis_arrays(rows: np.ndarray, classes: np.ndarray) -> dict[str, np.ndarray]:
    """Class centres and the within-class covariance they share (Ledoit-Wolf shrinkage: 3,000
    rows of 384 features leave the plain estimate's smallest directions mostly noise, and the
    precision matrix magnifies exactly those), whitened so a distance is a plain norm."""
    from sklearn.covariance import LedoitWolf

    names = np.unique(classes)
    centres = np.stack([rows[classes == name].mean(axis=0) for name in names])
    residuals = rows - centres[np.searchsorted(names, classes)]
    covariance = LedoitWolf(assume_centered=True).fit(residuals).covariance_
    # precision = L L^T, so (x - c)^T precision (x - c) = |(x - c) L|^2.
    whitening = np.linalg.cholesky(np.linalg.inv(covariance)).astype(np.float32)
    return {"whitening": whitening, "centres": (centres @ whitening).astype(np.float32)}


def unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return np.asarray(vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12))


def cached_index(
    features_and_classes: Callable[[list[str]], tuple[np.ndarray, np.ndarray]],
    index_texts: list[str],
    calibration_texts: list[str],
    path: Path,
    method: str = DEFAULT_METHOD,
    neighbours: int = DEFAULT_NEIGHBOURS,
    novel_share: float = DEFAULT_NOVEL_SHARE,
) -> NoveltyIndex:
    """The index built from these texts (``features_and_classes``: each text's features and the
    class the model gives it), built once and kept at ``path`` (a file lock: workers starting
    together build it once)."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if path.is_file():
            return NoveltyIndex.load(path)
        index, classes = features_and_classes(index_texts)
        calibration, _ = features_and_classes(calibration_texts)
        novelty = NoveltyIndex.calibrated(
            index, calibration, classes, method=method, neighbours=neighbours, novel_share=novel_share
        )
        novelty.save(path)
        return novelty
