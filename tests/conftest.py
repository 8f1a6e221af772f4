"""Shared fixtures: an isolated var/ and MLflow registry per test, tiny data and a tiny model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.utils.binaries import running_pushgateway
from tests.utils.factories import make_tiny_base_model, write_tiny_dataset

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
