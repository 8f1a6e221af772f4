"""The label rules, each in one place: which labels a multi-label answer decides, how a set of
labels is stored, and what one feedback may give. The service, the store, training and
monitoring all call these; none restates them.

NumPy only (no torch): the store and the drift job read it too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt

# A multi-label model that brings no thresholds of its own: the sigmoid's even odds.
DEFAULT_THRESHOLD = 0.5
# The stored label columns (an emotion; feedback, a multi-label one joined by commas) hold this
# many characters: the schema declares it, the API document and the service's checks follow it.
LABEL_CHARS = 100


def joined_labels(labels: Iterable[str]) -> str:
    """A multi-label answer as one stored value: unique labels, sorted, joined by commas."""
    return ",".join(sorted(set(labels)))


def decide(
    probabilities: npt.NDArray[np.floating], thresholds: npt.NDArray[np.floating]
) -> npt.NDArray[np.bool_]:
    """Multi-label decisions (rows by labels, bool): every label at or over its threshold, and the
    most probable one where none is, so every text gets at least one label (GoEmotions gives
    each comment at least one, neutral included)."""
    chosen = probabilities >= thresholds
    none = ~chosen.any(axis=1)
    chosen[np.flatnonzero(none), probabilities[none].argmax(axis=1)] = True
    return chosen


def thresholds_for(labels: Sequence[str], by_label: Mapping[str, float]) -> npt.NDArray[np.float32]:
    """Each label's threshold in ``labels``' order (``DEFAULT_THRESHOLD`` where none is given)."""
    return np.array([float(by_label.get(label, DEFAULT_THRESHOLD)) for label in labels], dtype=np.float32)


def decided_label_sets(
    probabilities: npt.NDArray[np.floating], labels: Sequence[str], thresholds: Mapping[str, float]
) -> list[str]:
    """Each row's decided labels (``decide``), stored alike (``joined_labels``)."""
    names = np.array(labels)
    return [joined_labels(names[row]) for row in decide(probabilities, thresholds_for(labels, thresholds))]


def decided_labels(probabilities: Mapping[str, float], thresholds: Mapping[str, float]) -> str:
    """One logged row's decided labels (its probabilities by label), stored alike."""
    labels = list(probabilities)
    matrix = np.fromiter(probabilities.values(), dtype=np.float64, count=len(labels))[None, :]
    return decided_label_sets(matrix, labels, thresholds)[0]


@dataclass(frozen=True)
class FeedbackRule:
    """What one feedback may give for a model with these labels: known labels only, and one for
    a single-label model; as many as always fit the stored column joined for a multi-label one.
    ``/feedback`` and ``emotion-ops label import`` both judge by it."""

    labels: tuple[str, ...]
    multilabel: bool

    @cached_property
    def max_labels(self) -> int:
        """The most labels one feedback may give (the longest labels first, so that any choice
        of that many fits ``LABEL_CHARS`` joined): the API document's ``maxItems`` too."""
        if not self.multilabel:
            return 1
        used, count = -1, 0
        for label in sorted(self.labels, key=len, reverse=True):
            used += len(label) + 1
            if used > LABEL_CHARS:
                break
            count += 1
        return max(count, 1)

    def unknown(self, given: Iterable[str]) -> list[str]:
        """The labels given that the model does not know, in the order given."""
        return [label for label in given if label not in self.labels]

    def too_many(self, given: Sequence[str]) -> bool:
        return len(given) > self.max_labels


# A feedback label's state: the screen accepts or quarantines it; an operator releases or drops it.
ACCEPTED, QUARANTINED, RELEASED, DROPPED = "accepted", "quarantined", "released", "dropped"
# The states a reviewer lists, the first the default; the type is what the console's query takes.
ReviewStatus = Literal["quarantined", "released", "dropped", "accepted"]
REVIEW_STATUSES: tuple[str, ...] = get_args(ReviewStatus)
