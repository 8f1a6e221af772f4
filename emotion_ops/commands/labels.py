"""Label commands: export the logged rows most worth a label, import labels, review the
quarantined ones. Each is a thin layer over one function of ``monitoring.labels`` or
``core.store.review`` (which the console shares)."""

from __future__ import annotations

import getpass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from core.settings import TrainingSettings
from emotion_ops.commands.common import TaskOption, quiet_libraries, shown, training_settings, user_errors

if TYPE_CHECKING:
    from core.artifact import ModelBundle
    from core.store import PredictionStore


label_app = typer.Typer(
    help="Labels: export the rows most worth a label, import labels, review quarantined ones.",
    no_args_is_help=True,
)


def _store(settings: TrainingSettings) -> PredictionStore:
    from core.store import Store

    return Store.open(settings.log_store_url).predictions


def _served_model(task: str | None) -> tuple[TrainingSettings, ModelBundle, PredictionStore]:
    from core.registry import connect, load_bundle

    settings = training_settings(task=task)
    return settings, load_bundle(connect(settings), settings), _store(settings)


@label_app.command("export")
@user_errors
def label_export(
    rows: Annotated[int, typer.Option("--rows", min=1, max=10_000, help="How many rows to label.")] = 200,
    output: Annotated[
        Path | None, typer.Option(help="Folder for labels.csv, tasks.json, label_config.xml.")
    ] = None,
    pool: Annotated[
        int, typer.Option(min=1, help="Choose among this many newest unlabelled logged rows.")
    ] = 20_000,
    task: TaskOption = None,
) -> None:
    """Write the logged rows most worth a human label (uncertain, novel, unlike each other) as
    CSV and as Label Studio tasks; label them, then 'emotion-ops label import FILE'."""
    quiet_libraries()
    from monitoring.labels import export_for_labelling

    settings, bundle, store = _served_model(task)
    folder = output or settings.var_dir / "labelling" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    export = export_for_labelling(bundle, store, rows, folder, pool)
    typer.echo(f"chose {export.chosen} of {export.candidates} unlabelled rows (uncertain, novel, diverse):")
    for path in export.paths:
        typer.echo(f"  {path}")
    typer.echo(
        "fill in labels.csv's label column, or import tasks.json into Label Studio with label_config.xml;"
    )
    typer.echo("then: emotion-ops label import FILE")


@label_app.command("import")
@user_errors
def label_import(
    file: Annotated[Path, typer.Argument(help="A filled-in labels.csv, or a Label Studio JSON export.")],
    operator: Annotated[
        str | None, typer.Option(help="Who labelled (default: $USER); recorded with each label.")
    ] = None,
    task: TaskOption = None,
) -> None:
    """Record a file's labels as feedback (all or none, validated as /feedback validates)."""
    from monitoring.labels import import_label_file

    _, bundle, store = _served_model(task)
    done = import_label_file(bundle, store, file, operator or getpass.getuser())
    skipped = f"; {done.blank} unlabelled row(s) skipped" if done.blank else ""
    typer.echo(f"recorded {done.recorded} label(s) from {file.name} as source '{done.source}'{skipped}")


@label_app.command("review")
@user_errors
def label_review(
    status: Annotated[
        str, typer.Option(help="Rows in this state: quarantined, released, dropped, accepted.")
    ] = "quarantined",
    matching: Annotated[
        str | None, typer.Option(help="Only rows whose reason, source or label contains this.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Most rows listed.")] = 50,
    release: Annotated[
        list[str] | None, typer.Option(help="Release this request id (it may train). Repeatable.")
    ] = None,
    drop: Annotated[
        list[str] | None, typer.Option(help="Drop this request id (it never trains). Repeatable.")
    ] = None,
    release_all: Annotated[
        bool,
        typer.Option(help="Release every row in the state that --matching matches, not only those shown."),
    ] = False,
    drop_all: Annotated[
        bool, typer.Option(help="Drop every row in the state that --matching matches, not only those shown.")
    ] = False,
    by: Annotated[str | None, typer.Option(help="Reviewer name (default: $USER).")] = None,
    task: TaskOption = None,
) -> None:
    """List the labels the screen quarantined (with why), and release or drop them."""
    from core.store.review import review_labels

    settings = training_settings(task=task)
    reviewer = by or getpass.getuser()
    store = _store(settings)
    review = review_labels(
        store,
        settings.model_name,
        reviewer,
        status,
        matching,
        release=release or (),
        drop=drop or (),
        release_all=release_all,
        drop_all=drop_all,
    )
    if review.settled:
        typer.echo(f"{', '.join(f'{n} {s}' for s, n in review.settled.items())} by {reviewer}")
        return
    rows = review.rows
    if rows.empty:
        typer.echo(f"no {status} labels" + (f" matching '{matching}'" if matching else ""))
        return
    typer.echo(f"{len(rows)} {status} label(s)" + (f" matching '{matching}'" if matching else "") + ":")
    table = Table()
    for column in ("request id", "label", "source", "reason", "text"):
        table.add_column(column, overflow="fold")
    for row in rows.head(limit).itertuples(index=False):
        table.add_row(
            shown(row.id), shown(row.label), shown(row.source), shown(row.reason, 160), shown(row.text, 100)
        )
    Console(width=200).print(table)
    if len(rows) > limit:
        typer.echo(f"... and {len(rows) - limit} more (--limit)")
    typer.echo(
        "release or drop: emotion-ops label review --release ID | --drop ID | --matching TEXT --drop-all"
    )
    # Each source's volume (what its quota counts): a key that floods labels shows here.
    volume = store.volume_by_source(datetime.now(UTC) - timedelta(hours=1))
    if volume:
        given = ", ".join(f"{shown(source)} {total} ({hour} in the last hour)" for source, (total, hour) in
                          sorted(volume.items(), key=lambda item: -item[1][0]))  # fmt: skip
        typer.echo(f"labels given by source: {given}")
