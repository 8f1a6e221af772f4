"""Classification metrics and the confusion-matrix figure, shared by every model we compare."""

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
    confusion: list[list[int]]  # rows: true label, columns: predicted label

    def metrics(self, prefix: str) -> dict[str, float]:
        """Flat metric names for MLflow, e.g. ``test_macro_f1``, ``test_f1_joy``."""
        flat = {f"{prefix}accuracy": self.accuracy, f"{prefix}macro_f1": self.macro_f1}
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
    per_class = {
        label: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, label in enumerate(labels)
    }
    return Evaluation(
        labels=tuple(labels),
        accuracy=float(accuracy_score(true_ids, predicted_ids)),
        macro_f1=float(f1_score(true_ids, predicted_ids, labels=label_ids, average="macro", zero_division=0)),
        per_class=per_class,
        confusion=confusion_matrix(true_ids, predicted_ids, labels=label_ids).tolist(),
    )


def plot_confusion_matrix(evaluation: Evaluation, path: Path, title: str) -> Path:
    """Save the confusion matrix, with counts and row-normalised shading, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on servers or CI
    import matplotlib.pyplot as plt

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
