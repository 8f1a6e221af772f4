"""Novelty scores from the model's own representation: the index, its calibrated threshold, and
the same scores on every runtime and precision that serves the model."""

from __future__ import annotations

import numpy as np
import pytest

from core.inference.novelty import (
    FIRST_POOLED_LAYER,
    KNN,
    MAHALANOBIS,
    NoveltyIndex,
    expected_share,
    layer_mean,
    unit,
)
from core.inference.runtime import load_predictor


@pytest.mark.parametrize("method", [MAHALANOBIS, KNN])
def test_the_threshold_leaves_the_stated_share_of_calibration_rows_over_it(method):
    rng = np.random.default_rng(0)
    # Known texts point into one orthant; new ones, the shifted kind, the opposite way.
    index, calibration = np.abs(rng.normal(size=(300, 8))), np.abs(rng.normal(size=(1000, 8)))
    classes = (index[:, 0] > index[:, 1]).astype(int)
    novelty = NoveltyIndex.calibrated(
        index, calibration, classes, method=method, neighbours=5, novel_share=0.01
    )
    over = int((novelty.score(calibration) > novelty.threshold).sum())
    assert over == 9  # ceil(1000 * 0.01) - 1: the conformal bound is then 10 / 1001
    assert novelty.expected_share == pytest.approx(10 / 1001)
    # Exchangeable new rows are novel at about that rate; a shifted cloud far more often.
    fresh = np.abs(rng.normal(size=(20_000, 8)))
    assert (novelty.score(fresh) > novelty.threshold).mean() == pytest.approx(0.01, abs=0.006)
    shifted = -np.abs(rng.normal(size=(2000, 8)))
    assert (novelty.score(shifted) > novelty.threshold).mean() > 0.9


def test_knn_scores_are_the_mean_cosine_distance_to_the_nearest_rows():
    index = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    novelty = NoveltyIndex(
        KNN, {"embeddings": unit(index)}, 0.5, 0.01, calibration_rows=1, index_rows=3, neighbours=2
    )
    # Nearest two of (1, 1)/sqrt(2): both at cosine 0.707.
    assert novelty.score(np.array([[2.0, 2.0]]))[0] == pytest.approx(1 - np.sqrt(0.5), abs=1e-6)
    assert novelty.score(np.array([[3.0, 0.0]]))[0] == pytest.approx(0.5, abs=1e-6)  # (0 + 1) / 2


def test_mahalanobis_scores_are_the_distance_to_the_nearest_class_centre_under_the_shared_covariance():
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(3)
    index = rng.normal(size=(400, 5)) + np.repeat([[3, 0, 0, 0, 0], [0, 3, 0, 0, 0]], 200, axis=0)
    classes = np.repeat([0, 1], 200)
    novelty = NoveltyIndex.calibrated(index, index[:10], classes, method=MAHALANOBIS)
    rows = unit(index)
    centres = np.stack([rows[classes == c].mean(0) for c in (0, 1)])
    precision = np.linalg.inv(LedoitWolf(assume_centered=True).fit(rows - centres[classes]).covariance_)
    probe = rng.normal(size=(7, 5))
    unit_probe = unit(probe)
    expected = np.sqrt(
        np.min([np.einsum("ij,jk,ik->i", unit_probe - c, precision, unit_probe - c) for c in centres], axis=0)
    )
    assert np.allclose(novelty.score(probe), expected, rtol=1e-4)
    assert novelty.describe()["classes"] == 2


@pytest.mark.parametrize("method", [MAHALANOBIS, KNN])
def test_an_index_saves_and_loads_whole(tmp_path, method):
    rng = np.random.default_rng(1)
    novelty = NoveltyIndex.calibrated(rng.normal(size=(50, 4)), rng.normal(size=(100, 4)), method=method)
    novelty.save(tmp_path / "novelty.npz")
    loaded = NoveltyIndex.load(tmp_path / "novelty.npz")
    assert loaded.describe() == novelty.describe()
    # Unrounded: a loaded index calls exactly the rows novel that the one that built it did.
    assert loaded.threshold == novelty.threshold and loaded.expected_share == novelty.expected_share
    probe = rng.normal(size=(20, 4))
    assert np.array_equal(loaded.score(probe), novelty.score(probe))


def test_an_unknown_method_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown novelty method 'lof'"):
        NoveltyIndex.calibrated(np.ones((3, 2)), np.ones((3, 2)), method="lof")


def test_the_features_are_the_mean_of_the_hidden_states_over_each_texts_own_tokens():
    embeddings = np.array([[[1.0, 1.0], [3.0, 3.0], [50.0, 50.0]], [[2.0, 0.0], [0.0, 2.0], [4.0, 4.0]]])
    layers = [embeddings, embeddings + 2.0, embeddings + 4.0]
    mask = np.array([[1, 1, 0], [1, 1, 1]])  # the first text's third token is padding
    features = layer_mean(layers, mask)
    # Token means of the first text: 2, 4, 6 per hidden state; of the second: 2, 4, 6.
    kept = np.array([2.0, 4.0, 6.0])[FIRST_POOLED_LAYER:].mean()
    assert np.allclose(features, [[kept, kept], [kept, kept]])


def test_the_share_of_calibration_rows_is_counted_exactly():
    rng = np.random.default_rng(2)
    novelty = NoveltyIndex.calibrated(rng.normal(size=(50, 4)), rng.normal(size=(100, 4)), novel_share=0.07)
    assert novelty.expected_share == pytest.approx(7 / 101)  # 100 * 0.07 is 7.000000000000001 in floats
    assert expected_share(100, 0.07) == novelty.expected_share  # what the drift job tests against


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


def test_a_version_registered_with_the_last_layer_index_gets_todays_score_and_share(tmp_path):
    import json

    from core.artifact import MODEL_CARD, ModelBundle
    from core.inference.novelty import DEFAULT_METHOD, DEFAULT_NOVEL_SHARE

    (tmp_path / "artifacts").mkdir()
    old = {"neighbours": 10, "novel_share": 0.02, "calibration_rows": 1000, "expected_share": 20 / 1001,
           "representation": "mean-pooled last hidden state, cosine distance"}  # fmt: skip
    (tmp_path / "artifacts" / MODEL_CARD).write_text(json.dumps({"novelty": old}))
    bundle = ModelBundle(name="m", version="1", local_dir=tmp_path)
    # Its texts are re-indexed the way the service scores now, and the drift job tests against
    # the share that index really has, not the card's 2 %.
    assert bundle._novelty_options()["method"] == DEFAULT_METHOD
    assert bundle._novelty_options()["novel_share"] == DEFAULT_NOVEL_SHARE
    assert bundle.expected_novel_share == pytest.approx(10 / 1001)
