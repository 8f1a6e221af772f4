"""Labels where they teach most: choosing logged rows for a human to label, and taking the
labels back.

``select_for_labelling`` picks the unlabelled logged rows most worth a label: the ones the champion is
least sure of and that are least like its training texts, spread over the traffic rather than N
near-copies (the most informative rows are pre-selected, then clustered on the champion's own
text representation, weighted by how informative they are, and the row nearest each cluster's
centre is taken). They are written as CSV and as Label Studio tasks (with the champion's answer
as a pre-annotation) plus the labelling interface for the project.

``import_label_file`` reads a filled-in CSV or a Label Studio export (JSON with annotations, or
JSON-MIN) and records every label as feedback in one transaction, with the rule ``/feedback``
applies (``core.labels.FeedbackRule``): unknown request ids, unknown labels, too many labels, a
request id twice, are all refused with the rows named, and nothing is recorded.

``export_for_labelling`` and ``import_label_file`` are what ``emotion-ops label export|import``
run; ``label review`` and the console share ``core.store.review``.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from xml.sax.saxutils import quoteattr

import numpy as np
import pandas as pd

from core.labels import FeedbackRule, joined_labels
from core.text import for_spreadsheet

if TYPE_CHECKING:
    from core.artifact import ModelBundle
    from core.store import PredictionStore

# From this many most-informative rows per chosen one the diverse ones are picked.
PRESELECT_FACTOR = 10
# The newest unlabelled rows export chooses from.
DEFAULT_POOL_ROWS = 20_000
FROM_NAME, TO_NAME = "emotion", "text"
CSV_COLUMNS = ["request_id", "text", "predicted", "confidence", "novelty", "label"]
# The screen statuses a reviewer lists, the first the default.


class LabelFileError(ValueError):
    """A label file that cannot be imported; the message names the rows."""


def informativeness(
    probabilities: np.ndarray,
    novelty: np.ndarray | None,
    multilabel: bool,
    versions: np.ndarray | None = None,
) -> np.ndarray:
    """How much a label on each row would teach, in [0, 1]: uncertainty (single-label: one minus
    the margin between the two likeliest labels; multi-label: how close the least decided label
    is to 0.5), averaged by rank with novelty where the rows have it. Novelty is ranked within
    each model version (``versions``): each version's index scores on its own scale (a version
    registered with the last layer's cosine distance scores under 2, today's Mahalanobis
    distance in the tens)."""
    if multilabel:
        uncertainty = 1 - np.abs(2 * probabilities - 1).min(axis=1)
    else:
        top = np.sort(probabilities, axis=1)
        uncertainty = 1 - (top[:, -1] - top[:, -2]) if probabilities.shape[1] > 1 else 1 - top[:, -1]
    score = pd.Series(uncertainty).rank(pct=True).to_numpy()
    if novelty is not None and not np.isnan(novelty).all():
        filled = pd.Series(np.nan_to_num(novelty, nan=np.nanmin(novelty)))
        groups = pd.Series(np.zeros(len(filled)) if versions is None else np.asarray(versions, dtype=str))
        novel = filled.groupby(groups.to_numpy()).rank(pct=True).to_numpy()
        score = (score + novel) / 2
    return score


def choose_rows(embeddings: np.ndarray, scores: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """Indices of ``count`` rows that are informative and unlike each other (weighted k-means
    over the most informative ``PRESELECT_FACTOR * count``; the row nearest each centre)."""
    from sklearn.cluster import KMeans

    if count >= len(scores):
        return np.argsort(-scores)
    shortlist = np.argsort(-scores)[: min(len(scores), PRESELECT_FACTOR * count)]
    points = embeddings[shortlist]
    points = points / np.maximum(np.linalg.norm(points, axis=1, keepdims=True), 1e-12)
    clusters = KMeans(n_clusters=count, n_init=1, random_state=seed).fit(
        points, sample_weight=scores[shortlist]
    )
    distances = np.linalg.norm(points - clusters.cluster_centers_[clusters.labels_], axis=1)
    nearest = []
    for cluster in range(count):
        members = np.flatnonzero(clusters.labels_ == cluster)
        if len(members):
            nearest.append(shortlist[members[distances[members].argmin()]])
    chosen = np.array(nearest)
    return chosen[np.argsort(-scores[chosen])]


def select_for_labelling(pool: pd.DataFrame, predictor, count: int, seed: int = 0) -> pd.DataFrame:
    """The ``count`` rows of ``pool`` (``PredictionStore.unlabelled_rows``) most worth a label,
    with the champion's answer, confidence, novelty and informativeness."""
    if pool.empty:
        return pool.assign(predicted=[], informativeness=[])
    probabilities, embeddings = predictor.proba_and_embed(pool["text"].tolist())
    novelty = pool["novelty"].to_numpy(dtype=float) if "novelty" in pool else None
    versions = pool["model_version"].to_numpy() if "model_version" in pool else None
    scores = informativeness(probabilities, novelty, predictor.multilabel, versions)
    chosen = choose_rows(embeddings, scores, count, seed)
    decided = predictor.decisions(probabilities[chosen])
    labels = np.array(predictor.labels)
    rows = pool.iloc[chosen].reset_index(drop=True)
    return rows.assign(
        predicted=[joined_labels(labels[row]) for row in decided],
        confidence=probabilities[chosen].max(axis=1).round(4),
        informativeness=scores[chosen].round(4),
    )


def label_config(labels: list[str], multilabel: bool) -> str:
    """The Label Studio labelling interface for these labels (one choice, or several)."""
    choice = "multiple" if multilabel else "single"
    options = "\n".join(f"    <Choice value={quoteattr(label)}/>" for label in labels)
    return (
        "<View>\n"
        f'  <Text name="{TO_NAME}" value="$text"/>\n'
        f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="{choice}" showInLine="true">\n'
        f"{options}\n"
        "  </Choices>\n"
        "</View>\n"
    )


def write_export(
    rows: pd.DataFrame, folder: Path, labels: list[str], multilabel: bool, model: str
) -> tuple[Path, Path, Path]:
    """``labels.csv`` (fill in ``label``), ``tasks.json`` (Label Studio tasks with the champion's
    answer pre-annotated) and ``label_config.xml`` (the project's labelling interface)."""
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, tasks_path, config_path = (
        folder / "labels.csv",
        folder / "tasks.json",
        folder / "label_config.xml",
    )
    # Opened in a spreadsheet, a text starting "=" would run as a formula: such cells get a
    # leading apostrophe (the import reads only request_id and label, never the text back).
    table = pd.DataFrame(
        {
            "request_id": rows["id"],
            "text": rows["text"].map(for_spreadsheet),
            "predicted": rows["predicted"],
            "confidence": rows["confidence"],
            "novelty": rows["novelty"],
            "label": "",
        }
    )
    table.to_csv(csv_path, index=False, quoting=csv.QUOTE_NONNUMERIC)
    tasks = [
        {
            "data": {"text": row.text, "request_id": row.id},
            "predictions": [
                {
                    "model_version": model,
                    "score": float(row.confidence),
                    "result": [
                        {
                            "from_name": FROM_NAME,
                            "to_name": TO_NAME,
                            "type": "choices",
                            "value": {"choices": row.predicted.split(",")},
                        }
                    ],
                }
            ],
        }
        for row in rows.itertuples(index=False)
    ]
    tasks_path.write_text(json.dumps(tasks, indent=1, ensure_ascii=False))
    config_path.write_text(label_config(labels, multilabel))
    return csv_path, tasks_path, config_path


def read_label_file(path: Path) -> tuple[list[tuple[str, list[str]]], int]:
    """(request id, labels) pairs from a filled-in CSV or a Label Studio export, and how many
    rows were left unlabelled (skipped). Raises ``LabelFileError`` on a file it cannot read."""
    if not path.is_file():
        raise LabelFileError(f"{path}: no such file")
    if path.suffix.lower() == ".csv":
        return _read_csv(path)
    if path.suffix.lower() == ".json":
        return _read_label_studio(path)
    raise LabelFileError(f"{path}: give a .csv (request_id,label) or a Label Studio .json export")


def _read_csv(path: Path) -> tuple[list[tuple[str, list[str]]], int]:
    try:
        # utf-8-sig: a CSV saved by a spreadsheet starts with a byte-order mark.
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as error:
        raise LabelFileError(f"{path}: not a readable CSV ({error})") from None
    label_column = "label" if "label" in frame else "labels" if "labels" in frame else None
    if "request_id" not in frame or label_column is None:
        raise LabelFileError(f"{path}: needs the columns request_id and label (has {list(frame.columns)})")
    pairs, blank = [], 0
    for request_id, label in zip(frame["request_id"], frame[label_column], strict=True):
        given = _unique(part.strip() for part in label.split(","))
        if not given:
            blank += 1
            continue
        pairs.append((request_id.strip(), given))
    return pairs, blank


def _read_label_studio(path: Path) -> tuple[list[tuple[str, list[str]]], int]:
    try:
        tasks = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise LabelFileError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(tasks, list):
        raise LabelFileError(f"{path}: a Label Studio export is a JSON list of tasks")
    pairs, blank = [], 0
    for number, task in enumerate(tasks, 1):
        try:
            request_id, given = _task_labels(task)
        except (AttributeError, TypeError):
            raise LabelFileError(
                f"{path}: task {number} is not a Label Studio task (an object with data and annotations)"
            ) from None
        if not request_id:
            raise LabelFileError(f"{path}: task {number} has no data.request_id (export it from tasks.json)")
        if not given:
            blank += 1
            continue
        pairs.append((str(request_id), _unique(str(label) for label in given)))
    return pairs, blank


def _task_labels(task: dict) -> tuple[str | None, list[str]]:
    """A task's request id and chosen labels; AttributeError or TypeError when it is no task."""
    if "annotations" in task or "data" in task:  # the full JSON export
        request_id = (task.get("data") or {}).get("request_id")
        given = _annotated_choices(task.get("annotations") or [])
    else:  # JSON-MIN: the task's data with each control's value under its name
        request_id = task.get("request_id")
        value = task.get(FROM_NAME)
        given = value.get("choices", []) if isinstance(value, dict) else [value] if value else []
    if isinstance(given, str):
        given = [given]
    return request_id, list(given)


def _annotated_choices(annotations: list[dict]) -> list[str]:
    # The newest annotation that was not skipped decides.
    done = [a for a in annotations if isinstance(a, dict) and not a.get("was_cancelled")]
    done.sort(key=lambda a: str(a.get("updated_at") or a.get("created_at") or ""))
    for annotation in reversed(done):
        for result in annotation.get("result") or []:
            if result.get("from_name") == FROM_NAME and result.get("type") == "choices":
                return list(result["value"]["choices"])
    return []


def validate_labels(
    pairs: list[tuple[str, list[str]]], rule: FeedbackRule, logged: set[str]
) -> list[tuple[str, str]]:
    """Every pair checked as ``/feedback`` checks one (``rule``); (request id, stored label)
    pairs, or a ``LabelFileError`` that names every problem (at most ten of each kind)."""
    labels, max_labels = list(rule.labels), rule.max_labels
    problems = []
    ids = [request_id for request_id, _ in pairs]
    repeated = sorted(request_id for request_id, count in Counter(ids).items() if count > 1)
    if repeated:
        problems.append(f"{len(repeated)} request id(s) given twice: {repeated[:10]}")
    unknown_ids = [request_id for request_id in dict.fromkeys(ids) if request_id not in logged]
    if unknown_ids:
        problems.append(
            f"{len(unknown_ids)} request id(s) not in the served model's prediction log: {unknown_ids[:10]}"
        )
    unknown = sorted({label for _, given in pairs for label in rule.unknown(given)})
    if unknown:
        problems.append(f"unknown label(s) {unknown[:10]}; expected one of {labels}")
    too_many = [request_id for request_id, given in pairs if rule.too_many(given)]
    if too_many:
        problems.append(f"{len(too_many)} row(s) with more than {max_labels} label(s): {too_many[:10]}")
    if problems:
        raise LabelFileError("nothing imported: " + "; ".join(problems))
    return [(request_id, joined_labels(given)) for request_id, given in pairs]


def _unique(labels: Iterable[str]) -> list[str]:
    """The labels of one row, blanks dropped, each once, in the order given."""
    return list(dict.fromkeys(label for label in labels if label))


@dataclass(frozen=True)
class LabelExport:
    chosen: int
    candidates: int
    paths: tuple[Path, Path, Path]


def export_for_labelling(
    bundle: ModelBundle, store: PredictionStore, rows: int, folder: Path, pool: int = DEFAULT_POOL_ROWS
) -> LabelExport:
    """The ``rows`` of the newest ``pool`` unlabelled logged rows of ``bundle`` most worth a
    label (``select_for_labelling``), written to ``folder`` (``write_export``)."""
    candidates = store.unlabelled_rows(bundle.name, pool)
    if candidates.empty:
        raise ValueError(
            f"the prediction log holds no unlabelled rows of {bundle.name}; serve some traffic first"
        )
    chosen = select_for_labelling(candidates, bundle.predictor(), rows)
    paths = write_export(
        chosen, folder, list(bundle.labels), bundle.task == "multilabel", f"{bundle.name} v{bundle.version}"
    )
    return LabelExport(len(chosen), len(candidates), paths)


@dataclass(frozen=True)
class LabelImport:
    recorded: int
    blank: int
    source: str


def import_label_file(bundle: ModelBundle, store: PredictionStore, path: Path, operator: str) -> LabelImport:
    """Record ``path``'s labels (``read_label_file``) as feedback on ``bundle``'s logged rows,
    all or none, as source ``import:<operator>:<file name>``."""
    pairs, blank = read_label_file(path)
    if not pairs:
        raise LabelFileError(f"{path}: no labelled rows ({blank} left blank)")
    logged = store.existing_ids([request_id for request_id, _ in pairs], bundle.name)
    rule = FeedbackRule(tuple(bundle.labels), bundle.task == "multilabel")
    checked = validate_labels(pairs, rule, logged)
    source = f"import:{operator}:{path.name}"
    store.record_feedback_batch(checked, source)
    return LabelImport(len(checked), blank, source)
