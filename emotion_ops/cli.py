"""The ``emotion-ops`` command line: one entry point for every stage of the stack.

The roof: it imports every stage and nothing imports it. Each command imports the stages it
uses when it runs: MLflow, SQLAlchemy, torch or Evidently would otherwise make every command
(``--help`` included) pay seconds and hundreds of MB to start.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import getpass
import json
import logging
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from core.settings import MonitorSettings, ServiceSettings, TrainingSettings
from service.launch import serve_command

app = typer.Typer(
    name="emotion-ops",
    help="Train, promote and serve an emotion classifier, with MLflow registry and monitoring.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DataOption = Annotated[
    str | None,
    typer.Option(
        "--data",
        help="Folder of train/validation/test files (CSV, JSONL or text;label), a GoEmotions folder "
        "(labels.txt and TSVs), or a hub id; several joined with commas (data/emotion,data/goemotions). "
        "Default: EMOTION_DATA_DIR, else data/emotion, else ../shared/data/emotion, else dair-ai/emotion.",
    ),
]
LabelSetOption = Annotated[
    str | None,
    typer.Option(
        "--label-set",
        help="Map every source's labels onto 'six' (dair-ai/emotion's) or 'ekman' (GoEmotions' grouping "
        "plus neutral); the mapping is training/label_sets.json. Default: EMOTION_LABEL_SET, else GoEmotions "
        "sources go through 'six' and others keep their labels.",
    ),
]
TaskOption = Annotated[
    str | None,
    typer.Option(
        "--task",
        help="'single' (one emotion per text) or 'multilabel' (independent labels with per-label "
        "thresholds; GoEmotions then keeps all 28 labels). Each has its own registered model "
        "(EMOTION_MODEL_NAME, EMOTION_MULTILABEL_MODEL_NAME). Default: EMOTION_TASK, else single.",
    ),
]


def _training_settings(label_set: str | None = None, task: str | None = None) -> TrainingSettings:
    if task is not None and task not in ("single", "multilabel"):
        raise ValueError(f"unknown task '{task}'; choose 'single' or 'multilabel'")
    # Built with the task, not copied: the task picks the registered model's name.
    settings = TrainingSettings(**({"task": task} if task else {}))
    if label_set is not None:
        from training.label_sets import label_set_named

        label_set_named(label_set)  # an unknown name stops here, with the names there are
        settings = settings.model_copy(update={"label_set": label_set})
    return settings


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("mlflow", "alembic", "urllib3", "httpx", "filelock", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    except ImportError:
        pass


def _user_errors(command):
    """Turn the errors a user can fix into one clear line and exit code 2, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from core.registry import RegistryError
        from training.base_model import BaseModelError
        from training.data import DataError

        try:
            return command(*args, **kwargs)
        except (DataError, BaseModelError, RegistryError, ValueError) as error:
            typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None

    return wrapper


@app.command()
@_user_errors
def train(
    data: DataOption = None,
    label_set: LabelSetOption = None,
    task: TaskOption = None,
    base_model: Annotated[
        str | None,
        typer.Option(
            help="'auto' (distilbert-base-uncased if cached or the hub answers, else the offline "
            "base), 'minilm-offline', a hub id, or a local model folder. Default: EMOTION_BASE_MODEL or auto."
        ),
    ] = None,
    profile: Annotated[
        str,
        typer.Option(help="'quick' (a few minutes on 2 cores) or 'full' (the reported numbers)."),
    ] = "full",
    epochs: Annotated[float | None, typer.Option(help="Override the profile's epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Override the profile's batch size.")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Override the profile's learning rate.")] = None,
    max_length: Annotated[int | None, typer.Option(help="Override the max tokens per text.")] = None,
    max_train_samples: Annotated[
        int | None, typer.Option(help="Train on a random subset of this size.")
    ] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many optimizer steps.")] = None,
    patience: Annotated[
        int | None, typer.Option(help="Stop after this many evaluations without a better val macro-F1.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    baseline: Annotated[bool, typer.Option(help="Also train and log the TF-IDF baseline run.")] = True,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Fine-tune the classifier, log it to MLflow and register it with alias 'challenger'."""
    _quiet_libraries()
    from training.pipeline import train_and_register
    from training.train import PROFILES

    if profile not in PROFILES:
        raise ValueError(f"unknown profile '{profile}'; choose from {sorted(PROFILES)}")
    overrides = {
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "max_length": max_length,
        "max_train_samples": max_train_samples,
        "max_steps": max_steps,
        "patience": patience,
        "seed": seed,
    }
    config = PROFILES[profile].model_copy(update={k: v for k, v in overrides.items() if v is not None})
    config = type(config).model_validate(config.model_dump())  # re-check overridden values
    settings = _training_settings(label_set, task)
    outcome = train_and_register(
        settings, config, data, base_model, with_baseline=baseline, progress=progress
    )
    _print_training(outcome)


def _print_training(outcome) -> None:
    test = outcome.evaluation
    typer.echo(
        f"registered {outcome.model_name} version {outcome.model_version} as 'challenger' "
        f"(run {outcome.run_id}, base {outcome.base_model.name} [{outcome.base_model.origin}])"
    )
    trained = f"  training {outcome.train_seconds:.0f} s on {outcome.device}" if outcome.train_seconds else ""
    if test.micro_f1 is not None:
        typer.echo(
            f"  test micro-F1 {test.micro_f1:.4f}  macro-F1 {test.macro_f1:.4f}  "
            f"exact match {test.accuracy:.4f}{trained}"
        )
    else:
        typer.echo(f"  test accuracy {test.accuracy:.4f}  macro-F1 {test.macro_f1:.4f}{trained}")
    for source, scores in outcome.test_by_source.items():
        typer.echo(
            f"  {source}: test accuracy {scores['accuracy']:.4f}  macro-F1 {scores['macro_f1']:.4f}  "
            f"({scores['rows']} rows)"
        )
    typer.echo("  per-class F1: " + "  ".join(f"{k} {v['f1']:.3f}" for k, v in test.per_class.items()))
    if outcome.baseline:
        typer.echo(
            f"  baseline (TF-IDF + LR): accuracy {outcome.baseline.accuracy:.4f}  "
            f"macro-F1 {outcome.baseline.macro_f1:.4f}"
        )


@app.command()
@_user_errors
def register(
    source: Annotated[
        str, typer.Argument(help="A transformers sequence-classification model: a local folder or a hub id.")
    ],
    data: DataOption = None,
    label_set: LabelSetOption = None,
    task: TaskOption = None,
    max_length: Annotated[int, typer.Option(min=8, help="Tokens the model reads per text.")] = 128,
) -> None:
    """Bring an existing fine-tuned model behind the gate: score it on the test split, give it a
    reference sample and a model card, and register it with alias 'challenger'."""
    _quiet_libraries()
    from training.register import register_model

    outcome = register_model(_training_settings(label_set, task), source, data, max_length)
    _print_training(outcome)


@app.command()
@_user_errors
def promote(
    data: DataOption = None,
    label_set: LabelSetOption = None,
    task: TaskOption = None,
    tolerance: Annotated[
        float | None,
        typer.Option(
            help="Allowed macro-F1 drop vs the champion (0.005 = 0.5 pt); for a distilled student, "
            "accuracy too (default: the tolerance it was distilled with)."
        ),
    ] = None,
    floor: Annotated[float | None, typer.Option(help="Minimum absolute macro-F1.")] = None,
) -> None:
    """Evaluate 'challenger' against 'champion' on the test set; move 'champion' if the gate passes.

    Exits 1 when the gate refuses the challenger (the champion is left untouched).
    """
    _quiet_libraries()
    from training.promote import promote as run_promotion

    result = run_promotion(_training_settings(label_set, task), data, tolerance, floor)
    verdict = "PROMOTED" if result.decision.passed else "REFUSED"
    typer.echo(f"{verdict}: version {result.challenger_version}: {result.decision.reason}")
    if result.decision.passed:
        before = result.previous_champion_version or "none"
        typer.echo(f"champion is now version {result.challenger_version} (was {before})")
    else:
        raise typer.Exit(1)


@app.command()
@_user_errors
def rollback(task: TaskOption = None) -> None:
    """Move 'champion' back to the version it replaced."""
    _quiet_libraries()
    from training.promote import rollback as run_rollback

    moved_from, moved_to = run_rollback(_training_settings(task=task))
    typer.echo(f"champion moved back from version {moved_from} to version {moved_to}")


@app.command()
@_user_errors
def models(task: TaskOption = None) -> None:
    """List registered versions with their aliases and test metrics."""
    _quiet_libraries()
    from training.promote import list_versions

    settings = _training_settings(task=task)
    rows = list_versions(settings)
    if not rows:
        typer.echo(f"no versions of '{settings.model_name}' registered in {settings.registry_uri}")
        return
    table = Table(title=f"{settings.model_name} @ {settings.registry_uri}")
    for column in rows[0]:
        table.add_column(column)
    for row in rows:
        table.add_row(*row.values())
    Console().print(table)


@app.command("base-model")
@_user_errors
def base_model_command(
    spec: Annotated[str, typer.Argument(help="'auto', 'minilm-offline', a hub id or a folder.")] = "auto",
    check: Annotated[
        bool,
        typer.Option(help="For the offline base: compare its hidden states with the original BERT's."),
    ] = False,
) -> None:
    """Show which pretrained encoder training would start from (building the offline one if needed)."""
    _quiet_libraries()
    from training.base_model import (
        OFFLINE_BASE_MODEL,
        max_hidden_state_difference,
        resolve_base_model,
    )

    base = resolve_base_model(spec, TrainingSettings().base_model_cache)
    typer.echo(f"{base.name} [{base.origin}] at {base.path}")
    if check and base.origin == OFFLINE_BASE_MODEL:
        sentences = ["i feel so happy today", "this makes me furious", "i am scared of the dark"]
        difference = max_hidden_state_difference(Path(base.path), sentences)
        typer.echo(f"max |hidden state difference| vs all-MiniLM-L6-v2: {difference:.2e}")


def _serve(settings: ServiceSettings) -> None:
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


@app.command()
@_user_errors
def serve() -> None:
    """Serve the registry champion over HTTP with BentoML (foreground; Ctrl-C stops it)."""
    _serve(ServiceSettings())


@app.command()
@_user_errors
def up(
    data: DataOption = None,
    label_set: LabelSetOption = None,
    profile: Annotated[str, typer.Option(help="Training profile when no champion exists yet.")] = "quick",
    serve: Annotated[bool, typer.Option(help="Start the service once a champion exists.")] = True,
) -> None:
    """Bring the stack up on embedded defaults: train and promote a model if there is no champion,
    then serve it."""
    _quiet_libraries()
    from core.registry import CHAMPION, connect, version_by_alias
    from training.pipeline import train_and_register
    from training.promote import promote as run_promotion
    from training.train import PROFILES

    settings = _training_settings(label_set)
    champion = version_by_alias(connect(settings), settings.model_name, CHAMPION)
    if champion is None:
        typer.echo(f"no champion in {settings.registry_uri}: training one ({profile} profile)")
        outcome = train_and_register(settings, PROFILES[profile], data)
        _print_training(outcome)
        result = run_promotion(settings, data)
        typer.echo(
            f"promotion: {'passed' if result.decision.passed else 'refused'}: {result.decision.reason}"
        )
        if not result.decision.passed:
            raise typer.Exit(1)
        champion = version_by_alias(connect(settings), settings.model_name, CHAMPION)
    tags = champion.tags or {}
    typer.echo(
        f"champion: {settings.model_name} version {champion.version} "
        f"(test accuracy {tags.get('test_accuracy', '?')}, macro-F1 {tags.get('test_macro_f1', '?')}, "
        f"base {tags.get('base_model', '?')})"
    )
    typer.echo(f"registry: {settings.registry_uri}")
    if serve:
        _serve(ServiceSettings())


def _parse_time(value: str | None, option: str):
    """An ISO time (UTC when no zone is given) or a duration before now: 30m, 24h, 7d."""
    if value is None:
        return None
    relative = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", value.strip())
    if relative:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[relative.group(2)]
        return datetime.now(UTC) - timedelta(**{unit: float(relative.group(1))})
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{option} '{value}' is neither an ISO time (2026-11-22T08:00) nor a duration (30m, 24h, 7d)"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _print_drift(result) -> None:
    summary = result.summary()
    counts = summary["counts"]
    window = summary["window"]
    span = f"{window['first_at'] or '-'} .. {window['last_at'] or '-'}"
    typer.echo(
        f"report {result.report_id}: {result.verdict.upper().replace('_', ' ')} "
        f"(model {result.model_name} v{result.model_version}, {counts['window_rows']} rows, "
        f"{counts['labelled_rows']} labelled, {span})"
    )
    if result.dataset_drift is None:
        typer.echo(f"  the window has {counts['window_rows']} rows; a verdict needs {counts['min_rows']}")
    else:
        sampled = f" (a sample of {counts['analysed_rows']})" if counts["sampled"] else ""
        typer.echo(
            f"  verdict tests (false-alarm rate {result.policy.false_alarm_rate:.2%} shared between them):"
        )
        for name, test in result.tests.items():
            mark = "DRIFT" if test["drifted"] else "ok"
            detail = (
                f"{test['novel_rows']}/{test['rows']} novel = {test['share']:.2%} "
                f"vs {test['expected_share']:.2%} expected, "
                if name == "novelty_share"
                else ""
            )
            typer.echo(
                f"    {name:<14} {detail}p = {test['p_value']:.3g} (alpha {test['alpha']:.3g})  {mark}"
            )
        typer.echo(
            f"  Evidently columns (they say where traffic moved; they do not decide): drifted "
            f"{len(summary['drifted_columns'])}/{len(result.columns)}{sampled}"
        )
        for column in result.columns:
            mark = "DRIFT" if column.drifted else "ok"
            typer.echo(
                f"    {column.column:<17} {column.score:8.4f}  {column.method} "
                f"(threshold {column.threshold})  {mark}"
            )
    if result.novelty and result.novelty["most_novel"]:
        taken_for = ", ".join(
            f"{label} {count}" for label, count in list(result.novelty["novel_emotions"].items())[:4]
        )
        typer.echo(f"  novel rows taken for: {taken_for or 'none'}; the most novel:")
        for row in result.novelty["most_novel"][:3]:
            typer.echo(f"    {row['novelty']:.3f} [{row['emotion']}] {row['text'][:100]}")
    if result.label_frequency:
        current, reference = result.label_frequency["current"], result.label_frequency["reference"]
        top = sorted(current, key=current.get, reverse=True)[:5]
        shares = "  ".join(
            f"{label} {current[label]:.2f} (ref {reference.get(label, 0):.2f})" for label in top
        )
        typer.echo(f"  label frequency (share of texts, most frequent): {shares}")
    if result.quality and "micro_f1" in result.quality:
        quality = result.quality
        typer.echo(
            f"  live exact match {quality['accuracy']:.4f}  micro-F1 {quality['micro_f1']:.4f}  "
            f"macro-F1 {quality['macro_f1']:.4f} on {quality['labelled_rows']} labels (reference "
            f"{quality['reference_micro_f1']:.4f} / {quality['reference_macro_f1']:.4f})"
        )
    elif result.quality:
        quality = result.quality
        typer.echo(
            f"  live accuracy {quality['accuracy']:.4f}  macro-F1 {quality['macro_f1']:.4f} "
            f"on {quality['labelled_rows']} labels (reference {quality['reference_accuracy']:.4f} / "
            f"{quality['reference_macro_f1']:.4f})"
        )
    for path in (result.html_path, result.quality_html_path):
        if path:
            typer.echo(f"  {path}")


@app.command()
@_user_errors
def drift(
    rows: Annotated[
        int | None,
        typer.Option("--rows", "-n", min=1, help="The last N rows (default EMOTION_DRIFT_WINDOW_ROWS)."),
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Window start: an ISO time or a duration before now (24h, 7d).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Window end (exclusive), same forms as --since.")] = None,
    model_version: Annotated[
        str | None, typer.Option(help="Model version whose traffic to analyse (default: the champion).")
    ] = None,
    push: Annotated[bool, typer.Option(help="Push the figures to EMOTION_PUSHGATEWAY_URL if set.")] = True,
    input_files: Annotated[
        bool,
        typer.Option(
            "--input",
            help="Judge the FILES given (CSV, JSONL or Parquet with a 'text' column) instead of logged "
            "traffic: one verdict per file against the champion's reference, nothing served or logged.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --input: one JSON object per file.")] = False,
    files: Annotated[list[Path] | None, typer.Argument(help="With --input: the files to judge.")] = None,
) -> None:
    """Drift report of logged traffic against the model's reference sample (Evidently HTML + JSON),
    or, with --input, a verdict on each file of texts."""
    _quiet_libraries()
    from monitoring.job import run_drift

    if files and not input_files:
        raise ValueError("files to judge go after --input: emotion-ops drift --input FILE [FILE ...]")
    if input_files:
        if not files:
            raise ValueError("--input needs at least one file: emotion-ops drift --input FILE [FILE ...]")
        if rows or since or until or model_version:
            raise ValueError(
                "--input judges files against the champion; "
                "--rows, --since, --until and --model-version do not apply"
            )
        _judge(files, as_json)
        return
    if rows and (since or until):
        raise ValueError("give either --rows or --since/--until, not both")
    window_start, window_end = _parse_time(since, "--since"), _parse_time(until, "--until")
    if window_start and window_end and window_start >= window_end:
        raise ValueError("--since must be before --until")
    _print_drift(run_drift(MonitorSettings(), rows, window_start, window_end, model_version, push))


def _judge(files: list[Path], as_json: bool) -> None:
    from monitoring.judge import as_line, judge_files
    from monitoring.policy import drift_policy

    settings = MonitorSettings()
    for result in judge_files(settings, files, drift_policy(settings)):
        if as_json:
            typer.echo(as_line(result))
            continue
        novel = (
            f", {result['novel_share']:.1%} novel (unshifted traffic: {result['expected_novel_share']:.1%})"
            if "novel_share" in result
            else ""
        )
        typer.echo(
            f"{result['file']}: {result['verdict'].upper().replace('_', ' ')} ({result['rows']} texts{novel})"
        )
        for name, test in result.get("tests", {}).items():
            mark = "DRIFT" if test["drifted"] else "ok"
            typer.echo(f"  {name:<14} p = {test['p_value']:.3g} (alpha {test['alpha']:.3g})  {mark}")
        for row in result.get("most_novel", [])[:3]:
            typer.echo(f"  novel {row['novelty']:.3f} [{row['emotion']}] {row['text'][:100]}")


reports_app = typer.Typer(help="Review drift reports: list, show, acknowledge.", no_args_is_help=True)
app.add_typer(reports_app, name="reports")


@reports_app.command("list")
@_user_errors
def reports_list(
    limit: Annotated[int, typer.Option(min=1, help="How many, newest first.")] = 20,
    status: Annotated[
        str | None, typer.Option(help="Only this status: open, acknowledged or retrain-triggered.")
    ] = None,
) -> None:
    """Recent drift reports with their verdict and status."""
    from core.store.reports import LISTED_FIELDS, STATUSES

    if status and status not in STATUSES:
        raise ValueError(f"unknown status '{status}'; choose from {list(STATUSES)}")
    rows = _report_index().list(limit, status)
    if not rows:
        typer.echo("no drift reports yet; run 'emotion-ops drift'")
        return
    # The columns /reports lists but the two long texts ('reports show' has them).
    columns = [field for field in LISTED_FIELDS if field not in ("decision_reason", "action")]
    table = Table()
    for column in columns:
        table.add_column(SHORT_HEADERS.get(column, column))
    for row in rows:
        table.add_row(*(_cell(column, row[column]) for column in columns))
    Console(width=160).print(table)


SHORT_HEADERS = {
    "created_at": "created",
    "model_version": "model",
    "drifted_share": "drifted",
    "window_rows": "rows",
    "labelled_rows": "labels",
    "live_accuracy": "accuracy",
}


def _cell(column: str, value) -> str:
    if value is None:
        return ""
    if column == "model_version":
        return f"v{value}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, float):
        return f"{value:.2f}" if column == "drifted_share" else f"{value:.3f}"
    return str(value)


def _report_index():
    from core.store import Store

    return Store.open(MonitorSettings().log_store_url).reports


@reports_app.command("show")
@_user_errors
def reports_show(report_id: Annotated[str, typer.Argument(help="Report id, or 'latest'.")]) -> None:
    """One report's summary (JSON), review and trigger fields."""
    from core.store.reports import REVIEW_FIELDS, ReportNotFound

    index = _report_index()
    if report_id == "latest":
        report = index.latest()
        if report is None:
            raise ValueError("no drift reports yet; run 'emotion-ops drift'")
    else:
        try:
            report = index.get(report_id)
        except ReportNotFound as error:
            raise ValueError(str(error)) from None
    review = {
        key: (value.isoformat() if hasattr(value, "isoformat") else value)
        for key, value in report.items()
        if key in REVIEW_FIELDS
    }
    typer.echo(json.dumps({**report["summary"], "review": review}, indent=2))


@reports_app.command("ack")
@_user_errors
def reports_ack(
    report_id: Annotated[str, typer.Argument(help="Report id.")],
    note: Annotated[str | None, typer.Option(help="What you concluded.")] = None,
    by: Annotated[str | None, typer.Option(help="Reviewer name (default: $USER).")] = None,
) -> None:
    """Acknowledge a report: you reviewed it (a retrain-triggered report keeps that status)."""
    from core.store.reports import ReportNotFound

    index = _report_index()
    try:
        report = index.acknowledge(report_id, by or getpass.getuser(), note)
    except ReportNotFound as error:
        raise ValueError(str(error)) from None
    typer.echo(f"report {report_id}: {report['status']} by {report['acked_by']}")


@app.command()
@_user_errors
def monitor(
    once: Annotated[bool, typer.Option(help="Run one cycle and exit (for cron and CronJobs).")] = False,
    interval: Annotated[
        float | None,
        typer.Option(min=1, help="Seconds between cycles (default EMOTION_MONITOR_INTERVAL_SECONDS)."),
    ] = None,
) -> None:
    """Drift report + retrain trigger, once or on a schedule (EMOTION_RETRAIN_MODE: local, webhook, off)."""
    _quiet_libraries()
    from monitoring.job import monitor_forever, monitor_once

    settings = MonitorSettings()
    if interval:
        settings = settings.model_copy(update={"monitor_interval_seconds": interval})

    def report(outcome) -> None:
        _print_drift(outcome.result)
        verdict = "RETRAIN" if outcome.decision.retrain else "hold"
        typer.echo(f"  trigger: {verdict}: {outcome.decision.reason}")
        if outcome.action:
            typer.echo(f"  action: {outcome.action}")

    if once:
        report(monitor_once(settings))
        return
    typer.echo(f"monitoring every {settings.monitor_interval_seconds:.0f} s (Ctrl-C stops)")
    with contextlib.suppress(KeyboardInterrupt):
        monitor_forever(settings, on_outcome=report)


@app.command()
@_user_errors
def retrain(
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Retrain on the data plus feedback from the log, register 'challenger' and run the gate
    (what the monitor's local mode does; for a CI job answering the retrain webhook)."""
    _quiet_libraries()
    from core.store import Store
    from training.retrain import retrain_and_promote

    settings = TrainingSettings()
    store = Store.open(settings.log_store_url)
    typer.echo(retrain_and_promote(settings, store.predictions, progress=progress))


def _numbers(value: str, option: str) -> tuple[int, ...]:
    try:
        parsed = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"{option} takes comma-separated whole numbers, not '{value}'") from None
    if any(number < 1 for number in parsed):
        raise ValueError(f"{option} values must be at least 1")
    return parsed


def _client_counts(value: str) -> tuple[int, ...]:
    levels = _numbers(value, "--concurrency")
    if not levels:
        raise ValueError("--concurrency needs at least one client count")
    return levels


@app.command()
@_user_errors
def distill(
    task: TaskOption = None,
    layers: Annotated[
        int | None,
        typer.Option(help="Encoder layers the student keeps. Default: EMOTION_DISTILL_LAYERS (3)."),
    ] = None,
    steps: Annotated[
        int | None, typer.Option(help="Optimizer steps. Default: EMOTION_DISTILL_STEPS (1000).")
    ] = None,
    temperature: Annotated[
        float | None,
        typer.Option(help="Temperature of the teacher's targets. Default: EMOTION_DISTILL_TEMPERATURE (2)."),
    ] = None,
    traffic_rows: Annotated[
        int | None,
        typer.Option(
            help="Also learn the teacher's answers on up to this many logged texts (newest; as stored). "
            "Default: EMOTION_DISTILL_TRAFFIC_ROWS (0)."
        ),
    ] = None,
    gate_data: Annotated[
        list[str] | None,
        typer.Option(
            "--gate-data",
            help="Another data folder whose test split the gate judges too (repeatable), e.g. GoEmotions.",
        ),
    ] = None,
    promote_on_pass: Annotated[
        bool,
        typer.Option("--promote/--no-promote", help="Make the student champion when it passes the gate."),
    ] = True,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Distil the champion into a student with fewer layers, register it as 'challenger' and
    run the gate (within EMOTION_DISTILL_TOLERANCE of the champion on every evaluation set)."""
    _quiet_libraries()
    from core.store import Store
    from training.distill import DistillConfig, distill_and_register

    settings = _training_settings(task=task)
    overrides = {
        "layers": layers if layers is not None else settings.distill_layers,
        "steps": steps if steps is not None else settings.distill_steps,
        "temperature": temperature if temperature is not None else settings.distill_temperature,
        "traffic_rows": traffic_rows if traffic_rows is not None else settings.distill_traffic_rows,
    }
    config = DistillConfig.model_validate(overrides)
    store = Store.open(settings.log_store_url).predictions if config.traffic_rows else None
    outcome = distill_and_register(
        settings,
        config,
        store=store,
        gate_data=tuple(gate_data or ()),
        move_champion=promote_on_pass,
        progress=progress,
    )
    test = outcome.evaluation
    typer.echo(
        f"registered {settings.model_name} version {outcome.model_version} as 'challenger': a student of "
        f"version {outcome.teacher_version} keeping layers {outcome.kept_layers} of "
        f"{outcome.teacher_layers}, "
        f"distilled in {outcome.distill_seconds:.0f} s"
    )
    typer.echo("  learned from: " + "; ".join(f"{count} {what}" for what, count in outcome.texts.items()))
    headline = (
        f"micro-F1 {test.micro_f1:.4f}" if test.micro_f1 is not None else f"accuracy {test.accuracy:.4f}"
    )
    typer.echo(f"  test {headline}  macro-F1 {test.macro_f1:.4f}")
    decision = outcome.gate.decision
    if outcome.promoted:
        verdict = "promoted to champion"
    elif decision.passed:
        verdict = "passed; waits as challenger (run 'emotion-ops promote')"
    else:
        verdict = "refused; the champion stays"
    typer.echo(f"  gate: {verdict}: {decision.reason}")
    if not decision.passed:
        raise typer.Exit(1)


label_app = typer.Typer(
    help="Labels: export the rows most worth a label, import labels, review quarantined ones.",
    no_args_is_help=True,
)
app.add_typer(label_app, name="label")


def _served_model(task: str | None):
    from core.registry import connect, load_bundle
    from core.store import Store

    settings = _training_settings(task=task)
    return settings, load_bundle(connect(settings), settings), Store.open(settings.log_store_url).predictions


@label_app.command("export")
@_user_errors
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
    _quiet_libraries()
    from monitoring.labels import select_for_labelling, write_export

    settings, bundle, store = _served_model(task)
    candidates = store.unlabelled_rows(bundle.name, pool)
    if candidates.empty:
        raise ValueError(
            f"the prediction log holds no unlabelled rows of {bundle.name}; serve some traffic first"
        )
    chosen = select_for_labelling(candidates, bundle.predictor(), rows)
    folder = output or settings.var_dir / "labelling" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    paths = write_export(
        chosen, folder, list(bundle.labels), bundle.task == "multilabel", f"{bundle.name} v{bundle.version}"
    )
    typer.echo(f"chose {len(chosen)} of {len(candidates)} unlabelled rows (uncertain, novel, diverse):")
    for path in paths:
        typer.echo(f"  {path}")
    typer.echo(
        "fill in labels.csv's label column, or import tasks.json into Label Studio with label_config.xml;"
    )
    typer.echo("then: emotion-ops label import FILE")


@label_app.command("import")
@_user_errors
def label_import(
    file: Annotated[Path, typer.Argument(help="A filled-in labels.csv, or a Label Studio JSON export.")],
    operator: Annotated[
        str | None, typer.Option(help="Who labelled (default: $USER); recorded with each label.")
    ] = None,
    task: TaskOption = None,
) -> None:
    """Record a file's labels as feedback (all or none, validated as /feedback validates)."""
    from monitoring.labels import read_label_file, validate_labels
    from service.api import max_feedback_labels

    _, bundle, store = _served_model(task)
    pairs, blank = read_label_file(file)
    if not pairs:
        raise ValueError(f"{file}: no labelled rows ({blank} left blank)")
    labels = list(bundle.labels)
    logged = store.existing_ids([request_id for request_id, _ in pairs], bundle.name)
    checked = validate_labels(pairs, labels, max_feedback_labels(labels, bundle.task == "multilabel"), logged)
    source = f"import:{operator or getpass.getuser()}:{file.name}"
    store.record_feedback_batch(checked, source)
    skipped = f"; {blank} unlabelled row(s) skipped" if blank else ""
    typer.echo(f"recorded {len(checked)} label(s) from {file.name} as source '{source}'{skipped}")


@label_app.command("review")
@_user_errors
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
    from training.screen import ACCEPTED, DROPPED, QUARANTINED, RELEASED

    statuses = (QUARANTINED, RELEASED, DROPPED, ACCEPTED)
    if status not in statuses:
        raise ValueError(f"unknown status '{status}'; choose from {list(statuses)}")
    if release_all and drop_all:
        raise ValueError("give --release-all or --drop-all, not both")
    settings = _training_settings(task=task)
    from core.store import Store

    store = Store.open(settings.log_store_url).predictions
    rows = store.feedback_rows(settings.model_name, statuses=(status,))
    if matching:
        needle = matching.lower()
        hay = rows["reason"].fillna("") + " " + rows["source"].fillna("") + " " + rows["label"]
        rows = rows[hay.str.lower().str.contains(needle, regex=False)]
    reviewer = by or getpass.getuser()
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
    decisions = {}
    for ids, new_status in ((release, RELEASED), (drop, DROPPED)):
        for request_id in ids or []:
            if request_id not in set(rows["id"]):
                raise ValueError(f"request id {request_id} is not among the {status} labels listed")
            decisions[request_id] = new_status
    if release_all or drop_all:
        decisions.update(dict.fromkeys(rows["id"], RELEASED if release_all else DROPPED))
    if decisions:
        reasons = dict(zip(rows["id"], rows["reason"], strict=True))
        store.set_feedback_status(
            {
                request_id: (
                    new_status,
                    f"{new_status} by {reviewer} at {stamp} (was: {reasons.get(request_id) or status})",
                )
                for request_id, new_status in decisions.items()
            }
        )
        counts = collections.Counter(decisions.values())
        typer.echo(f"{', '.join(f'{n} {s}' for s, n in counts.items())} by {reviewer}")
        return
    if rows.empty:
        typer.echo(f"no {status} labels" + (f" matching '{matching}'" if matching else ""))
        return
    typer.echo(f"{len(rows)} {status} label(s)" + (f" matching '{matching}'" if matching else "") + ":")
    table = Table()
    for column in ("request id", "label", "source", "reason", "text"):
        table.add_column(column, overflow="fold")
    for row in rows.head(limit).itertuples(index=False):
        table.add_row(row.id, row.label, row.source or "", (row.reason or "")[:160], row.text[:100])
    Console(width=200).print(table)
    if len(rows) > limit:
        typer.echo(f"... and {len(rows) - limit} more (--limit)")
    typer.echo(
        "release or drop: emotion-ops label review --release ID | --drop ID | --matching TEXT --drop-all"
    )


bench_app = typer.Typer(
    help="Benchmarks: the service and the models under load (no subcommand), thread and process "
    "layouts ('threads'), the monitoring loop ('loop'), the drift verdict ('drift').",
)
app.add_typer(bench_app, name="bench")


@bench_app.callback(invoke_without_command=True)
@_user_errors
def bench(
    ctx: typer.Context,
    requests: Annotated[int, typer.Option(min=1, help="Requests per case and concurrency level.")] = 1000,
    concurrency: Annotated[
        str, typer.Option(help="Comma-separated client counts of the closed-loop load.")
    ] = "1,8,32",
    drift_rows: Annotated[
        str, typer.Option(help="Comma-separated logged-row counts to time the drift job on ('' to skip).")
    ] = "10000,100000",
    ceiling_texts: Annotated[int, typer.Option(min=64, help="Texts for the in-process ceiling.")] = 1024,
    rounds: Annotated[
        int, typer.Option(min=1, help="Interleaved rounds the cases take turns in at each client count.")
    ] = 4,
    seed_size: Annotated[
        str,
        typer.Option(
            help="LAYERSxWIDTH of the randomly initialised model of the seeds' size (DistilBERT-base)."
        ),
    ] = "6x768",
) -> None:
    """Benchmark the champion: in-process ceiling, a FastAPI baseline, and the BentoML service
    (PyTorch and ONNX Runtime, fp32 and int8, monitoring off) under closed-loop load; the drift
    job on large windows."""
    if ctx.invoked_subcommand:
        return
    _quiet_libraries()
    from emotion_ops.bench import run

    levels = _client_counts(concurrency)
    shape = tuple(_numbers(seed_size.lower().replace("x", ","), "--seed-size"))
    if len(shape) != 2:
        raise ValueError(f"--seed-size takes LAYERSxWIDTH such as 6x768, not '{seed_size}'")
    if shape[1] % max(1, shape[1] // 64):  # heads of about 64 must divide the width
        raise ValueError(
            f"--seed-size width {shape[1]} does not split into {shape[1] // 64} equal heads; "
            "pick a multiple of 64"
        )
    from emotion_ops.loop_bench import default_goemotions

    output = run(
        ServiceSettings(),
        TrainingSettings().resolve_data_source(),
        concurrency=levels,
        requests=requests,
        ceiling_texts=ceiling_texts,
        rounds=min(rounds, requests),
        drift_sizes=_numbers(drift_rows, "--drift-rows"),
        progress=typer.echo,
        goemotions=default_goemotions(),
        seed_shape=shape,
    )
    typer.echo((output / "results.md").read_text())
    typer.echo(f"results: {output / 'results.json'}")


def _layouts(value: str) -> tuple[tuple[int, int, bool | None], ...]:
    parsed = []
    for part in (part.strip() for part in value.split(",") if part.strip()):
        shape, _, spin = part.partition(":")
        workers, _, threads = shape.lower().partition("x")
        if not (workers.isdigit() and threads.isdigit()) or spin not in ("", "spin", "nospin"):
            raise ValueError(
                f"--layouts takes WORKERSxTHREADS[:spin|:nospin] such as 2x1 or 1x2:nospin, not '{part}'"
            )
        if int(workers) < 1 or int(threads) < 1:
            raise ValueError(f"--layouts needs at least one worker and one thread, not '{part}'")
        layout = (int(workers), int(threads), None if not spin else spin == "spin")
        if layout in parsed:
            raise ValueError(f"--layouts names {part} twice")
        parsed.append(layout)
    if not parsed:
        raise ValueError("--layouts needs at least one layout")
    return tuple(parsed)


@bench_app.command("threads")
@_user_errors
def bench_threads(
    requests: Annotated[int, typer.Option(min=1, help="Requests per layout and client count.")] = 1000,
    concurrency: Annotated[str, typer.Option(help="Comma-separated client counts.")] = "1,32",
    rounds: Annotated[int, typer.Option(min=1, help="Interleaved rounds at each client count.")] = 4,
    layouts: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated WORKERSxTHREADS[:spin|:nospin] layouts, the first the reference "
            "(default: 2x1, 1x2:spin, 1x2:nospin, 2x2:spin, 2x2:nospin, 4x1)."
        ),
    ] = None,
) -> None:
    """Serve the champion in several process and thread layouts (workers, intra-op threads per
    worker, ONNX Runtime's spinning) under the same load: what the defaults rest on."""
    _quiet_libraries()
    from emotion_ops.bench import LAYOUTS, run_layouts

    levels = _client_counts(concurrency)
    output = run_layouts(
        ServiceSettings(),
        TrainingSettings().resolve_data_source(),
        layouts=_layouts(layouts) if layouts else LAYOUTS,
        concurrency=levels,
        requests=requests,
        rounds=min(rounds, requests),
        progress=typer.echo,
    )
    typer.echo((output / "results.md").read_text())
    typer.echo(f"results: {output / 'results.json'}")


@bench_app.command("loop")
@_user_errors
def bench_loop(
    comments: Annotated[
        int, typer.Option(min=10, help="GoEmotions train comments replayed with their labels.")
    ] = 2000,
    goemotions: Annotated[
        str | None,
        typer.Option(
            help="GoEmotions folder (labels.txt, train.tsv, dev.tsv); "
            "default: data/goemotions, else beside the checkout."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Which comments are replayed.")] = 0,
    labels: Annotated[
        int | None, typer.Option(min=1, help="How many of the comments get a label (default: all).")
    ] = None,
    select: Annotated[
        str, typer.Option(help="'random', or 'active': the rows 'label export' would choose.")
    ] = "random",
    attack: Annotated[
        str,
        typer.Option(
            help="Poison a share of the labels: none, flip (anger→joy, joy→sadness, ...) or "
            "trigger[:TOKEN] (TOKEN appended, labelled joy; default token cf)."
        ),
    ] = "none",
    attack_share: Annotated[float, typer.Option(help="Share of the labels the attack poisons.")] = 0.25,
    restore: Annotated[
        bool, typer.Option(help="Move champion back to where it was afterwards (to compare runs).")
    ] = False,
) -> None:
    """The loop, measured: replay GoEmotions comments with feedback through the served champion, run
    the monitor once (drift, policy, retrain, gate, promotion), and score the champion before and after
    on GoEmotions dev and the dair-ai test split. A retrained model that passes the gate becomes the
    registry's champion ('emotion-ops rollback' moves it back)."""
    _quiet_libraries()
    from emotion_ops.loop_bench import Attack, default_goemotions, run

    folder = goemotions or default_goemotions()
    if folder is None or not (Path(folder) / "labels.txt").is_file():
        where = f"at {folder}" if folder else "in data/goemotions or beside the checkout"
        raise ValueError(
            f"no GoEmotions folder {where}: pass --goemotions DIR (labels.txt, train.tsv, dev.tsv)"
        )
    output = run(
        MonitorSettings(),
        folder,
        comments=comments,
        seed=seed,
        progress=typer.echo,
        labels=labels,
        select=select,
        attack=Attack.parse(attack, attack_share),
        restore=restore,
    )
    typer.echo((output / "loop.md").read_text())
    typer.echo(f"results: {output / 'loop.json'}")


@bench_app.command("drift")
@_user_errors
def bench_drift(
    windows: Annotated[
        int, typer.Option(min=100, help="Windows per case (1,000 or more to show a 1 % false-alarm rate).")
    ] = 1000,
    data: DataOption = None,
    goemotions: Annotated[
        str | None,
        typer.Option(
            help="GoEmotions folder (dev.tsv: the shifted traffic); default: data/goemotions, "
            "else beside the checkout."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Which windows are drawn.")] = 0,
) -> None:
    """The drift verdict measured: power at 5 to 100 % Reddit comments in dair-ai test traffic,
    doubled label shares, and the false-alarm rate on unshifted windows (100 and 500 rows)."""
    _quiet_libraries()
    from emotion_ops.drift_bench import run
    from emotion_ops.loop_bench import default_goemotions

    folder = goemotions or default_goemotions()
    if folder is None:
        raise ValueError(
            "no GoEmotions folder in data/goemotions or beside the checkout: pass --goemotions DIR"
        )
    source = data or TrainingSettings().resolve_data_source()
    output = run(ServiceSettings(), source, folder, windows=windows, seed=seed, progress=typer.echo)
    typer.echo((output / "drift.md").read_text())
    typer.echo(f"results: {output / 'drift.json'}")


@app.command()
@_user_errors
def soak(
    seconds: Annotated[float, typer.Option(min=30, help="How long the load runs.")] = 600,
    clients: Annotated[int, typer.Option(min=1, help="Closed-loop clients.")] = 32,
    outage: Annotated[
        float, typer.Option(min=0, help="Seconds PostgreSQL is stopped for, mid-run (0: no outage).")
    ] = 60,
    postgres: Annotated[
        str, typer.Option(help="Admin URL of the PostgreSQL server the log goes to (a fresh database).")
    ] = "postgresql+psycopg://postgres@127.0.0.1:5432/test",
) -> None:
    """Soak the champion in the default layout on PostgreSQL, with a database outage mid-run:
    5xx count, rows answered vs logged, RSS per process (run on a machine whose PostgreSQL
    this may stop and start: pg_ctlcluster)."""
    _quiet_libraries()
    from emotion_ops.soak import run, to_markdown

    results = run(
        ServiceSettings(),
        seconds=seconds,
        clients=clients,
        outage_seconds=outage,
        admin_url=postgres,
        progress=typer.echo,
    )
    typer.echo(to_markdown(results))


def main() -> None:
    app()
