"""Serving commands: serve (the champion over HTTP) and up (the quick start: a champion if
there is none, then serve it)."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from core.settings import ServiceSettings
from emotion_ops.commands.common import (
    DataOption,
    LabelSetOption,
    quiet_libraries,
    training_settings,
    user_errors,
)
from emotion_ops.commands.training import print_training
from service.launch import serve_command


def exec_service(settings: ServiceSettings) -> None:
    """Become ``bentoml serve`` with these settings (never returns)."""
    settings.check_serving_security()
    command, env = serve_command(settings)
    typer.echo(
        f"serving on http://{settings.host}:{settings.port} (page: /ui, API docs: /, metrics: /metrics)"
    )
    # exec, not a child process: BentoML's arbiter then is this process (PID 1 in a container)
    # and gets SIGTERM itself; it stops accepting, lets in-flight requests finish and runs the
    # shutdown hooks that flush the prediction log.
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], command, env)


@user_errors
def serve() -> None:
    """Serve the registry champion over HTTP with BentoML (foreground; Ctrl-C stops it)."""
    exec_service(ServiceSettings())


@user_errors
def up(
    data: DataOption = None,
    label_set: LabelSetOption = None,
    profile: Annotated[str, typer.Option(help="Training profile when no champion exists yet.")] = "quick",
    serve: Annotated[bool, typer.Option(help="Start the service once a champion exists.")] = True,
) -> None:
    """Bring the stack up on embedded defaults: train and promote a model if there is no champion,
    then serve it."""
    quiet_libraries()
    from core.registry import CHAMPION, RegistryError, connect, version_by_alias
    from training.pipeline import train_first_champion

    settings = training_settings(label_set)
    champion = version_by_alias(connect(settings), settings.model_name, CHAMPION)
    if champion is None:
        typer.echo(f"no champion in {settings.registry_uri}: training one ({profile} profile)")
        outcome, result = train_first_champion(settings, profile, data)
        print_training(outcome)
        typer.echo(
            f"promotion: {'passed' if result.decision.passed else 'refused'}: {result.decision.reason}"
        )
        if not result.decision.passed:
            raise typer.Exit(1)
        champion = version_by_alias(connect(settings), settings.model_name, CHAMPION)
        if champion is None:
            raise RegistryError(f"version {result.challenger_version} passed the gate but is not champion")
    tags = champion.tags or {}
    typer.echo(
        f"champion: {settings.model_name} version {champion.version} "
        f"(test accuracy {tags.get('test_accuracy', '?')}, macro-F1 {tags.get('test_macro_f1', '?')}, "
        f"base {tags.get('base_model', '?')})"
    )
    typer.echo(f"registry: {settings.registry_uri}")
    if serve:
        exec_service(ServiceSettings())
