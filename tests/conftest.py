"""Shared fixtures: an isolated var/ and MLflow registry per test, tiny data and a tiny model, a
registry with a tiny champion, a real Pushgateway."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from core.settings import TrainingSettings
from tests.utils.binaries import running_pushgateway
from tests.utils.factories import TINY_TRAINING, make_tiny_base_model, write_tiny_dataset
from training.pipeline import train_and_register
from training.promote import promote

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every setting at a fresh temp var/ with its own SQLite registry."""
    for name in list(os.environ):
        if name.startswith(("EMOTION_", "MLFLOW_")):
            monkeypatch.delenv(name)
    var_dir = tmp_path / "var"
    monkeypatch.setenv("EMOTION_VAR_DIR", str(var_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # so no .env or data/ of the checkout leaks in
    return var_dir


@pytest.fixture(scope="session")
def tiny_base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_base_model(tmp_path_factory.mktemp("tiny-base"))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny-data"))


@pytest.fixture(scope="session")
def emotion_data_dir() -> Path:
    path = SHARED_DATA / "emotion"
    if not path.is_dir():
        pytest.skip("the real dataset is not beside this checkout (../shared/data/emotion)")
    return path


@pytest.fixture(scope="session")
def pushgateway_url(tmp_path_factory: pytest.TempPathFactory):
    """A real Pushgateway (Debian's prometheus-pushgateway) on a free loopback port."""
    with running_pushgateway(tmp_path_factory.mktemp("pushgateway")) as url:
        yield url


@pytest.fixture(scope="module")
def registry(tmp_path_factory, tiny_base_model, tiny_data) -> Path:
    """A var/ dir whose registry has version 1 of the tiny model as champion."""
    var_dir = tmp_path_factory.mktemp("registry") / "var"
    settings = TrainingSettings(var_dir=var_dir, promotion_floor=0.0)
    train_and_register(
        settings, TINY_TRAINING, str(tiny_data), str(tiny_base_model), with_baseline=False, progress=False
    )
    assert promote(settings, str(tiny_data)).decision.passed
    return var_dir


@pytest.fixture
def registry_copy(registry, isolated_env, tiny_data, monkeypatch, tmp_path) -> Path:
    """A copy of ``registry``'s var/ (so a test may write its log) as the environment's, with the
    tiny data as the data a retrain reads."""
    copy = tmp_path / "var-copy"
    shutil.copytree(registry, copy)
    monkeypatch.setenv("EMOTION_VAR_DIR", str(copy))
    monkeypatch.setenv("EMOTION_DATA_DIR", str(tiny_data))
    return copy
