"""Run the real ``emotion-ops`` CLI in-process, against whatever registry the environment names."""

from __future__ import annotations

from mlflow import MlflowClient
from typer.testing import CliRunner

from core.settings import CoreSettings
from emotion_ops.cli import app


def cli(*args: str, env: dict[str, str] | None = None):
    """Invoke a command (``env``: extra environment for it); any exception other than the CLI's
    own exit fails the test."""
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def registry_client() -> MlflowClient:
    settings = CoreSettings()
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri)
