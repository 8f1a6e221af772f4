"""The served-model holder without BentoML: alias resolution, swap, int8."""

from __future__ import annotations

import numpy as np
from mlflow import MlflowClient

from emotion_ops.settings import Settings
from service.champion import ChampionHolder
from tests.service.conftest import TINY_TRAINING
from training.pipeline import train_and_register

TEXTS = ["i feel so happy", "i am furious and mad", "i am scared", "i love and adore you"]


def test_holder_serves_the_alias_and_swaps_on_refresh(registry, tiny_base_model, tiny_data):
    settings = Settings(var_dir=registry)
    swaps = []
    holder = ChampionHolder(
        settings, on_swap=lambda old, new: swaps.append((old and old.version, new.version))
    )
    first = holder.current
    assert first.describe()["labels"] == ["anger", "fear", "joy", "love", "sadness", "surprise"]
    assert holder.refresh() is False  # alias unchanged: nothing reloaded

    outcome = train_and_register(
        settings, TINY_TRAINING, str(tiny_data), str(tiny_base_model), with_baseline=False, progress=False
    )
    MlflowClient(settings.tracking_uri).set_registered_model_alias(
        settings.model_name, "champion", outcome.model_version
    )
    assert holder.refresh() is True
    assert holder.current.version == outcome.model_version
    assert swaps == [(None, first.version), (first.version, outcome.model_version)]
    # A request that took the old model before the swap still completes on it.
    assert [p.emotion for p in first.predictor.predict(TEXTS)] == ["joy", "anger", "fear", "love"]


def test_int8_model_keeps_the_predictions(registry):
    fp32 = ChampionHolder(Settings(var_dir=registry, runtime="torch", quantize=False)).current
    int8 = ChampionHolder(Settings(var_dir=registry, runtime="torch", quantize=True)).current
    assert int8.quantized and int8.describe()["quantized"] is True
    full = fp32.predictor.predict_proba(TEXTS)
    quantized = int8.predictor.predict_proba(TEXTS)
    assert np.allclose(quantized.sum(axis=1), 1.0, atol=1e-5)
    assert (quantized.argmax(axis=1) == full.argmax(axis=1)).all()


# Mixed lengths, so batches are padded and the mask's path through the exported graph counts.
MIXED = [*TEXTS, "i feel so very happy and glad and cheerful today and i really am", "sad"]


def test_onnx_runtime_gives_the_torch_probabilities(registry):
    torch_model = ChampionHolder(Settings(var_dir=registry, runtime="torch", quantize=False)).current
    onnx_model = ChampionHolder(Settings(var_dir=registry, runtime="onnx", quantize=False)).current
    assert onnx_model.describe()["runtime"] == "onnx" and torch_model.describe()["runtime"] == "torch"
    expected = torch_model.predictor.predict_proba(MIXED)
    assert np.allclose(onnx_model.predictor.predict_proba(MIXED), expected, atol=1e-5)
    # One text at a time (no padding at all) gives the same numbers as the padded batches.
    one_by_one = np.vstack([onnx_model.predictor.predict_proba([text]) for text in MIXED])
    assert np.allclose(one_by_one, expected, atol=1e-5)

    int8 = ChampionHolder(Settings(var_dir=registry, runtime="onnx", quantize=True)).current
    quantized = int8.predictor.predict_proba(MIXED)
    assert np.allclose(quantized.sum(axis=1), 1.0, atol=1e-5)
    assert (quantized.argmax(axis=1) == expected.argmax(axis=1)).all()


def test_onnx_export_happens_once_per_version(registry):
    settings = Settings(var_dir=registry, runtime="onnx", quantize=False)
    exported = ChampionHolder(settings).current.predictor.model.path
    assert exported.is_file() and exported.parent.name == "onnx"
    first_write = exported.stat().st_mtime_ns
    again = ChampionHolder(settings).current.predictor.model.path
    assert again == exported and exported.stat().st_mtime_ns == first_write
