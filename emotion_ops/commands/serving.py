"""Serving commands: serve (the champion over HTTP) and up (the quick start: a champion if
there is none, then serve it)."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer

from core.settings import ServiceSettings
from emotion_ops.commands.common import (
    DataOption,
    LabelSetOption,
    TaskOption,
    quiet_libraries,
    shown,
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


@user_errors
def shadow(
    task: TaskOption = None,
    most: Annotated[
        int, typer.Option(min=1, max=100, help="How many of the most different texts to show.")
    ] = 10,
) -> None:
    """The waiting challenger's shadow: its answers on sampled live traffic against the
    champion's (agreement, per-label divergence, the texts where they differ most, latency,
    accuracy on labels) and whether the gate's shadow requirement allows approval."""
    quiet_libraries()
    from rich.console import Console
    from rich.table import Table

    from core.registry import connect, version_rows
    from core.store import Store
    from service.console import shadow_view

    if task is not None and task not in ("single", "multilabel"):
        raise ValueError(f"unknown task '{task}'; choose 'single' or 'multilabel'")
    chosen: dict[str, Any] = {"task": task} if task else {}
    settings = ServiceSettings(**chosen)
    versions = version_rows(connect(settings), settings.model_name)
    shadow_log = Store.open(settings.log_store_url).shadow
    view = shadow_view(versions, shadow_log, settings.model_name, settings.shadow_requirement(), most)
    if view["waiting"] is None and view["refused"]:
        typer.echo(
            f"challenger v{view['refused']} was refused by the gate; the shadow scores only a waiting one"
        )
        return
    if view["waiting"] is None:
        typer.echo(
            f"no challenger waits for {settings.model_name} (champion: v{view['champion_version'] or 'none'})"
        )
        return
    champion = view["champion_version"] or "none"
    typer.echo(
        f"challenger v{view['waiting']} ({view['decision']}) against champion v{champion}: "
        f"{view['rows']} live texts scored in the shadow"
    )
    if not view["rows"]:
        typer.echo(
            f"  none yet: the service scores EMOTION_SHADOW_SHARE={settings.shadow_share} of logged traffic"
        )
    else:
        latency = view["latency_ms"]
        typer.echo(f"  agreement with the champion: {view['agreement']:.1%}")
        timing = f"p50 {latency['p50']:.2f} ms, p95 {latency['p95']:.2f} ms"
        typer.echo(f"  challenger time per text, at idle priority: {timing}")
        if view["labelled"]:
            typer.echo(
                f"  on {view['labelled']} labelled texts: challenger {view['challenger_accuracy']:.1%}, "
                f"champion {view['champion_accuracy']:.1%}"
            )
        else:
            typer.echo("  no labels have arrived for these texts yet")
        console = Console(width=160)
        labels = Table(title="per label")
        for column in ("label", "champion", "challenger", "champion only", "challenger only"):
            labels.add_column(column)
        for row in view["labels"]:
            shares = f"{row['champion_share']:.1%}", f"{row['challenger_share']:.1%}"
            only = str(row["champion_only"]), str(row["challenger_only"])
            labels.add_row(shown(row["label"]), *shares, *only)
        console.print(labels)
        differ = Table(title="where they differ most")
        for column in ("text", "champion", "challenger", "distance"):
            differ.add_column(column)
        for row in view["most_different"]:
            text = shown(row["text"], 120) if row["text"] is not None else "(not in the log)"
            differ.add_row(text, shown(row["champion"]), shown(row["challenger"]), f"{row['distance']:.2f}")
        console.print(differ)
    verdict = "allows approval" if view["allows"] else f"does not allow approval yet: {view['shortfall']}"
    asked = view["requirement"]
    if asked["min_agreement"] is None and asked["min_accuracy"] is None:
        verdict = (
            "asks nothing of the shadow (EMOTION_SHADOW_MIN_AGREEMENT, EMOTION_SHADOW_MIN_ACCURACY unset)"
        )
    typer.echo(f"the gate {verdict}")
