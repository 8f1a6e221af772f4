"""The tiny champion (``registry``, tests/conftest.py) served by the real bentoml."""

from __future__ import annotations

import pytest

from tests.utils.server import running_service, service_env


@pytest.fixture(scope="module")
def service_url(registry, tmp_path_factory):
    with running_service(service_env(registry), tmp_path_factory.mktemp("logs") / "serve.log") as url:
        yield url
