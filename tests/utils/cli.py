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


def help_texts(width: int = 120) -> str:
    """Every command's ``--help``, group by group, at a fixed width and without colour."""
    import typer

    def paths(command, prefix: tuple[str, ...] = ()):
        yield prefix
        for name in sorted(getattr(command, "commands", {})):
            yield from paths(command.commands[name], (*prefix, name))

    env = {"COLUMNS": str(width), "TERM": "dumb", "NO_COLOR": "1"}
    pages = []
    for path in paths(typer.main.get_command(app)):
        result = CliRunner().invoke(app, [*path, "--help"], env=env, color=False)
        assert result.exit_code == 0, result.output
        pages.append(f"$ emotion-ops {' '.join(path)} --help\n{result.output}")
    return "\n".join(pages)
