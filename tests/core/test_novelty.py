"""Novelty scores from the model's own representation: the index, its calibrated threshold, and
the same scores on every runtime and precision that serves the model."""

from __future__ import annotations

import numpy as np
import pytest

from core.inference.novelty import NoveltyIndex, unit
from core.inference.runtime import load_predictor


def test_the_threshold_leaves_the_stated_share_of_calibration_rows_over_it():
    rng = np.random.default_rng(0)
    # Known texts point into one orthant; new ones, the shifted kind, the opposite way.
    index, calibration = np.abs(rng.normal(size=(300, 8))), np.abs(rng.normal(size=(1000, 8)))
    novelty = NoveltyIndex.calibrated(index, calibration, neighbours=5, novel_share=0.01)
    over = int((novelty.score(calibration) > novelty.threshold).sum())
    assert over == 9  # ceil(1000 * 0.01) - 1: the conformal bound is then 10 / 1001
    assert novelty.expected_share == pytest.approx(10 / 1001)
    # Exchangeable new rows are novel at about that rate; a shifted cloud far more often.
    fresh = np.abs(rng.normal(size=(20_000, 8)))
    assert (novelty.score(fresh) > novelty.threshold).mean() == pytest.approx(0.01, abs=0.006)
    shifted = -np.abs(rng.normal(size=(2000, 8)))
    assert (novelty.score(shifted) > novelty.threshold).mean() > 0.9


def test_scores_are_the_mean_cosine_distance_to_the_nearest_rows():
    index = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    novelty = NoveltyIndex(unit(index), neighbours=2, threshold=0.5, expected_share=0.01, calibration_rows=1)
    # Nearest two of (1, 1)/sqrt(2): both at cosine 0.707.
    assert novelty.score(np.array([[2.0, 2.0]]))[0] == pytest.approx(1 - np.sqrt(0.5), abs=1e-6)
    assert novelty.score(np.array([[3.0, 0.0]]))[0] == pytest.approx(0.5, abs=1e-6)  # (0 + 1) / 2


def test_an_index_saves_and_loads_whole(tmp_path):
    rng = np.random.default_rng(1)
    novelty = NoveltyIndex.calibrated(rng.normal(size=(50, 4)), rng.normal(size=(100, 4)))
    novelty.save(tmp_path / "novelty.npz")
    loaded = NoveltyIndex.load(tmp_path / "novelty.npz")
    assert loaded.describe() == novelty.describe()
    # Unrounded: a loaded index calls exactly the rows novel that the one that built it did.
    assert loaded.threshold == novelty.threshold and loaded.expected_share == novelty.expected_share
    assert np.array_equal(loaded.embeddings, novelty.embeddings)


def test_the_share_of_calibration_rows_is_counted_exactly():
    rng = np.random.default_rng(2)
    novelty = NoveltyIndex.calibrated(rng.normal(size=(50, 4)), rng.normal(size=(100, 4)), novel_share=0.07)
    assert novelty.expected_share == pytest.approx(7 / 101)  # 100 * 0.07 is 7.000000000000001 in floats


@pytest.mark.parametrize(("runtime", "quantize"), [("torch", True), ("onnx", False), ("onnx", True)])
def test_every_runtime_embeds_as_pytorch_does(registry_model_dir, tmp_path, runtime, quantize):
    texts = ["i feel so happy today", "scared", "i love and adore this so very much today"]
    reference = load_predictor(registry_model_dir, max_length=32).embed(texts)
    other = load_predictor(
        registry_model_dir, runtime=runtime, quantize=quantize, cache_dir=tmp_path / "onnx", max_length=32
    ).embed(texts)
    similarity = (unit(reference) * unit(other)).sum(axis=1)
    assert similarity.min() > (0.99 if quantize else 0.9999)


@pytest.fixture(scope="module")
def registry_model_dir(registry):
    from core.registry import connect, load_bundle
    from core.settings import CoreSettings

    settings = CoreSettings(var_dir=registry)
    return load_bundle(connect(settings), settings).model_dir
