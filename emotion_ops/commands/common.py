"""What every command shares: the options several take, settings built from them, quiet
libraries, and the errors a user can fix turned into one clear line."""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.markup import escape

from core.settings import TrainingSettings
from core.text import for_terminal

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

P = ParamSpec("P")
R = TypeVar("R")


def training_settings(label_set: str | None = None, task: str | None = None) -> TrainingSettings:
    """The environment's training settings with ``--task`` and ``--label-set`` applied."""
    if task is not None and task not in ("single", "multilabel"):
        raise ValueError(f"unknown task '{task}'; choose 'single' or 'multilabel'")
    # Built with the task, not copied: the task picks the registered model's name.
    chosen: dict[str, Any] = {"task": task} if task else {}
    settings = TrainingSettings(**chosen)
    if label_set is not None:
        from training.label_sets import label_set_named

        label_set_named(label_set)  # an unknown name stops here, with the names there are
        settings = settings.model_copy(update={"label_set": label_set})
    return settings


def quiet_libraries() -> None:
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


def user_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn the errors a user can fix into one clear line and exit code 2, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        from core.registry import RegistryError
        from core.store import ReportNotFound
        from training.base_model import BaseModelError
        from training.data import DataError

        try:
            return command(*args, **kwargs)
        except (DataError, BaseModelError, RegistryError, ReportNotFound, ValueError) as error:
            typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None

    return wrapper


def parse_time(value: str | None, option: str) -> datetime | None:
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


def whole_numbers(value: str, option: str) -> tuple[int, ...]:
    """Comma-separated whole numbers of at least 1 ('' gives none)."""
    try:
        parsed = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"{option} takes comma-separated whole numbers, not '{value}'") from None
    if any(number < 1 for number in parsed):
        raise ValueError(f"{option} values must be at least 1")
    return parsed


def shown(value: object, limit: int | None = None) -> str:
    """A stored value (a logged text, a label, a reason) as a rich table cell: its control
    characters shown, not run, and its square brackets as text, not markup."""
    text = for_terminal("" if value is None else str(value))
    return escape(text[:limit] if limit else text)
