"""Training commands: train, register, promote, rollback, models, base-model, distill. Each is a
thin layer over one function of ``training`` (and says what it did)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from core.settings import TrainingSettings
from emotion_ops.commands.common import (
    DataOption,
    LabelSetOption,
    TaskOption,
    quiet_libraries,
    training_settings,
    user_errors,
)

if TYPE_CHECKING:
    from training.pipeline import TrainingOutcome


@user_errors
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
    quiet_libraries()
    from training.pipeline import train_and_register
    from training.train import TrainingConfig

    config = TrainingConfig.from_profile(
        profile,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        max_length=max_length,
        max_train_samples=max_train_samples,
        max_steps=max_steps,
        patience=patience,
        seed=seed,
    )
    settings = training_settings(label_set, task)
    outcome = train_and_register(
        settings, config, data, base_model, with_baseline=baseline, progress=progress
    )
    print_training(outcome)


def print_training(outcome: TrainingOutcome) -> None:
    """What a registration says: the version, its test scores, per source and per class."""
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


@user_errors
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
    quiet_libraries()
    from training.register import register_model

    outcome = register_model(training_settings(label_set, task), source, data, max_length)
    print_training(outcome)


@user_errors
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
    approve: Annotated[
        bool,
        typer.Option(
            help="Approve a challenger whose gate passed and waits for review (as the console's "
            "Promote does): move 'champion' without rerunning the gate."
        ),
    ] = False,
    by: Annotated[str | None, typer.Option(help="Who approves, with --approve (default: $USER).")] = None,
) -> None:
    """Evaluate 'challenger' against 'champion' on the test set; move 'champion' if the gate passes.

    Exits 1 when the gate refuses the challenger (the champion is left untouched).
    """
    quiet_libraries()
    if approve:
        import getpass

        from core.registry import approve_challenger, connect
        from core.store import Store

        settings = training_settings(label_set, task)
        # The shadow's bar: these settings' and whatever the gate recorded on the version (the
        # store is opened only when one is asked).
        check = settings.shadow_requirement().check_for(
            lambda: Store.open(settings.log_store_url).shadow, settings.model_name
        )
        approved, before = approve_challenger(
            connect(settings), settings.model_name, by or getpass.getuser(), check
        )
        typer.echo(f"APPROVED: champion is now version {approved} (was {before or 'none'})")
        return
    from training.promote import promote as run_promotion

    result = run_promotion(training_settings(label_set, task), data, tolerance, floor)
    verdict = "PROMOTED" if result.decision.passed else "REFUSED"
    if result.awaiting_review:
        verdict = "PASSED, AWAITING REVIEW"
    typer.echo(f"{verdict}: version {result.challenger_version}: {result.decision.reason}")
    if result.awaiting_review:
        typer.echo(
            "approve it in the console, or with 'emotion-ops promote --approve', once the shadow allows"
        )
    elif result.decision.passed:
        before = result.previous_champion_version or "none"
        typer.echo(f"champion is now version {result.challenger_version} (was {before})")
    else:
        raise typer.Exit(1)


@user_errors
def rollback(task: TaskOption = None) -> None:
    """Move 'champion' back to the version it replaced."""
    quiet_libraries()
    from training.promote import rollback as run_rollback

    moved_from, moved_to = run_rollback(training_settings(task=task))
    typer.echo(f"champion moved back from version {moved_from} to version {moved_to}")


@user_errors
def models(task: TaskOption = None) -> None:
    """List registered versions with their aliases and test metrics."""
    quiet_libraries()
    from training.promote import list_versions

    settings = training_settings(task=task)
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


@user_errors
def base_model_command(
    spec: Annotated[str, typer.Argument(help="'auto', 'minilm-offline', a hub id or a folder.")] = "auto",
    check: Annotated[
        bool,
        typer.Option(help="For the offline base: compare its hidden states with the original BERT's."),
    ] = False,
) -> None:
    """Show which pretrained encoder training would start from (building the offline one if needed)."""
    quiet_libraries()
    from training.base_model import OFFLINE_BASE_MODEL, max_hidden_state_difference, resolve_base_model

    base = resolve_base_model(spec, TrainingSettings().base_model_cache)
    typer.echo(f"{base.name} [{base.origin}] at {base.path}")
    if check and base.origin == OFFLINE_BASE_MODEL:
        difference = max_hidden_state_difference(Path(base.path))
        typer.echo(f"max |hidden state difference| vs all-MiniLM-L6-v2: {difference:.2e}")


@user_errors
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
    quiet_libraries()
    from core.store import Store
    from training.distill import DistillConfig, distill_and_register

    settings = training_settings(task=task)
    config = DistillConfig.from_settings(
        settings, layers=layers, steps=steps, temperature=temperature, traffic_rows=traffic_rows
    )
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
