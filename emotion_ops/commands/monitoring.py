"""Monitoring commands: drift (a window of logged traffic, or files), reports (list, show,
acknowledge), monitor (the drift job and retrain trigger), retrain. Each is a thin layer over
one function of ``monitoring``, ``training`` or the store's report index."""

from __future__ import annotations

import contextlib
import getpass
import json
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from core.settings import MonitorSettings, TrainingSettings
from core.text import for_terminal
from emotion_ops.commands.common import parse_time, quiet_libraries, shown, user_errors


def print_drift(result) -> None:
    """A drift result as the terminal shows it: the verdict, each test, the columns, the most
    novel rows, label shares and live quality."""
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
    estimated = (result.novelty or {}).get("estimated_share")
    if estimated is not None:
        typer.echo(
            f"  about {estimated['estimate']:.1%} ({estimated['low']:.1%} to {estimated['high']:.1%}) "
            "of this window is unlike anything the model knows"
        )
    if result.estimated_accuracy is not None:
        parts = result.estimated_accuracy
        split = ", ".join(
            f"{name} {parts[name]['estimate']:.1%} on {parts[name]['rows']}"
            for name in ("familiar", "novel")
            if parts.get(name)
        )
        whole = parts["all"]
        typer.echo(
            f"  accuracy estimated without labels (ATC): {whole['estimate']:.1%} "
            f"({whole['low']:.1%} to {whole['high']:.1%}){f'; {split}' if split else ''}"
        )
    if result.novelty and result.novelty["most_novel"]:
        taken_for = ", ".join(
            f"{label} {count}" for label, count in list(result.novelty["novel_emotions"].items())[:4]
        )
        typer.echo(f"  novel rows taken for: {taken_for or 'none'}; the most novel:")
        for row in result.novelty["most_novel"][:3]:
            typer.echo(
                f"    {row['novelty']:.3f} [{for_terminal(row['emotion'])}] {for_terminal(row['text'][:100])}"
            )
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


@user_errors
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
    quiet_libraries()
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
    window_start, window_end = parse_time(since, "--since"), parse_time(until, "--until")
    if window_start and window_end and window_start >= window_end:
        raise ValueError("--since must be before --until")
    print_drift(run_drift(MonitorSettings(), rows, window_start, window_end, model_version, push))


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
            said, text = for_terminal(row["emotion"]), for_terminal(row["text"][:100])
            typer.echo(f"  novel {row['novelty']:.3f} [{said}] {text}")


reports_app = typer.Typer(help="Review drift reports: list, show, acknowledge.", no_args_is_help=True)


@reports_app.command("list")
@user_errors
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
    return shown(value)


def _report_index():
    from core.store import Store

    return Store.open(MonitorSettings().log_store_url).reports


@reports_app.command("show")
@user_errors
def reports_show(report_id: Annotated[str, typer.Argument(help="Report id, or 'latest'.")]) -> None:
    """One report's summary (JSON), review and trigger fields."""
    from core.store.reports import reviewed

    typer.echo(json.dumps(reviewed(_report_index().named(report_id)), indent=2))


@reports_app.command("ack")
@user_errors
def reports_ack(
    report_id: Annotated[str, typer.Argument(help="Report id.")],
    note: Annotated[str | None, typer.Option(help="What you concluded.")] = None,
    by: Annotated[str | None, typer.Option(help="Reviewer name (default: $USER).")] = None,
) -> None:
    """Acknowledge a report: you reviewed it (a retrain-triggered report keeps that status)."""
    report = _report_index().acknowledge(report_id, by or getpass.getuser(), note)
    typer.echo(f"report {report_id}: {report['status']} by {report['acked_by']}")


@user_errors
def monitor(
    once: Annotated[bool, typer.Option(help="Run one cycle and exit (for cron and CronJobs).")] = False,
    interval: Annotated[
        float | None,
        typer.Option(min=1, help="Seconds between cycles (default EMOTION_MONITOR_INTERVAL_SECONDS)."),
    ] = None,
) -> None:
    """Drift report + retrain trigger, once or on a schedule (EMOTION_RETRAIN_MODE: local, webhook, off)."""
    quiet_libraries()
    from monitoring.job import monitor_forever, monitor_once

    settings = MonitorSettings()
    if interval:
        settings = settings.model_copy(update={"monitor_interval_seconds": interval})

    def report(outcome) -> None:
        print_drift(outcome.result)
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


@user_errors
def retrain(
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Retrain on the data plus feedback from the log, register 'challenger' and run the gate
    (what the monitor's local mode does; for a CI job answering the retrain webhook)."""
    quiet_libraries()
    from core.store import Store
    from training.retrain import retrain_and_promote

    settings = TrainingSettings()
    store = Store.open(settings.log_store_url)
    typer.echo(retrain_and_promote(settings, store.predictions, progress=progress))
