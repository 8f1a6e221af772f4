"""Run the real ``emotion-ops`` CLI in-process, against whatever registry the environment names."""

from __future__ import annotations

import traceback

from mlflow import MlflowClient
from typer.testing import CliRunner

from core.settings import CoreSettings
from emotion_ops.cli import app


def cli(*args: str, env: dict[str, str] | None = None):
    """Invoke a command (``env``: extra environment for it); any exception other than the CLI's
    own exit fails the test."""
    result = CliRunner().invoke(app, list(args), env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        trace = "".join(traceback.format_exception(result.exception))
        raise AssertionError(f"{args} raised:\n{trace}\noutput:\n{result.output}")
    return result


def registry_client() -> MlflowClient:
    settings = CoreSettings()
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri)
