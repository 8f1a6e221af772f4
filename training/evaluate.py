"""Classification metrics and the confusion-matrix figure, shared by every model we compare.

Multi-label models are scored on their decided label sets: ``accuracy`` is then the share of
texts whose whole set is right (exact match), beside micro- and macro-F1 over the labels; their
per-label decision thresholds are tuned here, on validation, for each label's F1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)


@dataclass(frozen=True)
class Evaluation:
    labels: tuple[str, ...]
    accuracy: float
    macro_f1: float
    per_class: dict[str, dict[str, float]]  # label → precision, recall, f1, support
    confusion: list[list[int]]  # rows: true label, columns: predicted label (single-label only)
    micro_f1: float | None = None  # multi-label models
    task: str = "single"

    def metrics(self, prefix: str) -> dict[str, float]:
        """Flat metric names for MLflow, e.g. ``test_macro_f1``, ``test_f1_joy``."""
        flat = {f"{prefix}accuracy": self.accuracy, f"{prefix}macro_f1": self.macro_f1}
        if self.micro_f1 is not None:
            flat[f"{prefix}micro_f1"] = self.micro_f1
        for label, scores in self.per_class.items():
            for name in ("precision", "recall", "f1"):
                flat[f"{prefix}{name}_{label}"] = scores[name]
        return flat

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate(
    true_ids: list[int] | np.ndarray, predicted_ids: list[int] | np.ndarray, labels: tuple[str, ...]
) -> Evaluation:
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix."""
    label_ids = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(
        true_ids, predicted_ids, labels=label_ids, zero_division=0
    )
    per_class = _per_class(labels, precision, recall, f1, support)
    return Evaluation(
        labels=tuple(labels),
        accuracy=float(accuracy_score(true_ids, predicted_ids)),
        macro_f1=float(f1_score(true_ids, predicted_ids, labels=label_ids, average="macro", zero_division=0)),
        per_class=per_class,
        confusion=confusion_matrix(true_ids, predicted_ids, labels=label_ids).tolist(),
    )


def _per_class(labels, precision, recall, f1, support) -> dict[str, dict[str, float]]:
    return {
        label: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, label in enumerate(labels)
    }


# Tuned only where validation holds this many texts with the label; else the fixed low one.
MIN_POSITIVES_TO_TUNE = 10
FALLBACK_THRESHOLD = 0.1
THRESHOLD_GRID = np.round(np.arange(0.02, 0.96, 0.02), 2)


def evaluate_multilabel(true: np.ndarray, predicted: np.ndarray, labels: tuple[str, ...]) -> Evaluation:
    """Exact-match accuracy, micro- and macro-F1 and per-label precision/recall/F1 of 0/1 matrices."""
    true, predicted = np.asarray(true, dtype=int), np.asarray(predicted, dtype=int)
    precision, recall, f1, support = precision_recall_fscore_support(true, predicted, zero_division=0)
    return Evaluation(
        labels=tuple(labels),
        accuracy=float((true == predicted).all(axis=1).mean()) if len(true) else 0.0,
        macro_f1=float(f1_score(true, predicted, average="macro", zero_division=0)),
        per_class=_per_class(labels, precision, recall, f1, support),
        confusion=[],
        micro_f1=float(f1_score(true, predicted, average="micro", zero_division=0)),
        task="multilabel",
    )


def tune_thresholds(true: np.ndarray, probabilities: np.ndarray, labels: tuple[str, ...]) -> dict[str, float]:
    """Per label, the threshold on the grid with the best F1 on these rows; a label with fewer
    than ``MIN_POSITIVES_TO_TUNE`` positives gets ``FALLBACK_THRESHOLD`` (a tuned one would fit noise)."""
    true = np.asarray(true) > 0.5
    thresholds = {}
    for index, label in enumerate(labels):
        positives = int(true[:, index].sum())
        if positives < MIN_POSITIVES_TO_TUNE:
            thresholds[label] = FALLBACK_THRESHOLD
            continue
        over = probabilities[:, index][:, None] >= THRESHOLD_GRID[None, :]  # rows by grid
        hits = (over & true[:, index][:, None]).sum(axis=0)
        f1 = 2 * hits / np.maximum(over.sum(axis=0) + positives, 1)
        thresholds[label] = float(THRESHOLD_GRID[int(f1.argmax())])
    return thresholds


def score_on(predictor, dataset, split: str) -> tuple[Evaluation, np.ndarray]:
    """``predictor``'s evaluation on ``split`` and its predictions in the dataset's label order
    (label ids for a single-label model, a 0/1 matrix for a multi-label one). Labels are matched
    by name; a predicted label the data does not know counts as a miss (-1), never as another."""
    probabilities = predictor.predict_proba(dataset.texts(split))
    order = [predictor.labels.index(label) for label in dataset.labels] if dataset.multilabel else None
    if dataset.multilabel:
        decided = predictor.decisions(probabilities)[:, order].astype(int)
        return evaluate_multilabel(dataset.label_matrix(split), decided, dataset.labels), decided
    label2id = dataset.label2id
    predicted_ids = np.array([label2id.get(predictor.labels[i], -1) for i in probabilities.argmax(axis=1)])
    return evaluate(dataset.label_ids(split), predicted_ids, dataset.labels), predicted_ids


def plot_confusion_matrix(evaluation: Evaluation, path: Path, title: str) -> Path:
    """Save the confusion matrix, with counts and row-normalised shading, as a PNG (a
    multi-label model has none: its per-label F1 instead)."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on servers or CI
    import matplotlib.pyplot as plt

    if evaluation.task == "multilabel":
        return _plot_label_f1(evaluation, path, title, plt)

    counts = np.array(evaluation.confusion)
    row_share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    figure, axes = plt.subplots(figsize=(6.5, 5.5))
    image = axes.imshow(row_share, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(evaluation.labels))
    axes.set_xticks(ticks, evaluation.labels, rotation=45, ha="right")
    axes.set_yticks(ticks, evaluation.labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(f"{title}\naccuracy {evaluation.accuracy:.3f} · macro-F1 {evaluation.macro_f1:.3f}")
    for row in ticks:
        for column in ticks:
            colour = "white" if row_share[row, column] > 0.5 else "black"
            axes.text(column, row, counts[row, column], ha="center", va="center", color=colour, fontsize=8)
    figure.colorbar(image, ax=axes, label="share of true label")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _plot_label_f1(evaluation: Evaluation, path: Path, title: str, plt) -> Path:
    names = list(evaluation.labels)
    scores = [evaluation.per_class[name]["f1"] for name in names]
    figure, axes = plt.subplots(figsize=(7, max(4, 0.25 * len(names))))
    axes.barh(names, scores, color="tab:blue")
    axes.invert_yaxis()
    axes.set_xlim(0, 1)
    axes.set_xlabel("F1")
    axes.set_title(
        f"{title}\nmicro-F1 {evaluation.micro_f1:.3f} · macro-F1 {evaluation.macro_f1:.3f} "
        f"· exact match {evaluation.accuracy:.3f}"
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
