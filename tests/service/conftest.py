"""A tiny model trained and promoted in a temp MLflow registry, served by the real bentoml."""

from __future__ import annotations

from pathlib import Path

import pytest

from emotion_ops.settings import Settings
from tests.utils.server import running_service
from training.pipeline import train_and_register
from training.promote import promote
from training.train import TrainingConfig

# max_length stays under the tiny model's 64 positions; long texts get truncated.
TINY_TRAINING = TrainingConfig(
    epochs=15, learning_rate=1e-2, batch_size=16, patience=100, seed=1, max_length=32
)


@pytest.fixture(scope="module")
def registry(tmp_path_factory, tiny_base_model, tiny_data) -> Path:
    """A var/ dir whose registry has version 1 of the tiny model as champion."""
    var_dir = tmp_path_factory.mktemp("service") / "var"
    settings = Settings(var_dir=var_dir, promotion_floor=0.0)
    train_and_register(
        settings, TINY_TRAINING, str(tiny_data), str(tiny_base_model), with_baseline=False, progress=False
    )
    assert promote(settings, str(tiny_data)).decision.passed
    return var_dir


# Feedback needs a key (labels train models), so the test services run with one, as
# production does.
API_KEY = "test-key-0123456789"
HEADERS = {"x-api-key": API_KEY}


def service_env(var_dir: Path, **extra: str) -> dict[str, str]:
    # One worker: each worker re-resolves the alias on its own clock, and the swap tests check
    # that no request after the swap gets the old model, which holds per worker.
    return {
        "EMOTION_VAR_DIR": str(var_dir),
        "EMOTION_REFRESH_SECONDS": "1",
        "EMOTION_WORKERS": "1",
        "EMOTION_API_KEY": API_KEY,
        **extra,
    }


@pytest.fixture(scope="module")
def service_url(registry, tmp_path_factory):
    with running_service(service_env(registry), tmp_path_factory.mktemp("logs") / "serve.log") as url:
        yield url
