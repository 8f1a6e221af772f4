"""The label rules (core/labels.py) that the service, the store, training and monitoring share."""

from __future__ import annotations

import numpy as np

from core.labels import LABEL_CHARS, FeedbackRule, decide, decided_label_sets, decided_labels, joined_labels
from tests.utils.factories import GOEMOTIONS_LABELS


def test_one_rule_decides_a_matrix_and_a_logged_row_alike():
    labels = ["anger", "joy", "love"]
    probabilities = np.array([[0.2, 0.7, 0.55], [0.3, 0.2, 0.1], [0.5, 0.5, 0.0]])
    thresholds = {"joy": 0.5, "love": 0.6}  # anger: the default 0.5
    matrix = decide(probabilities, np.array([0.5, 0.5, 0.6]))
    assert matrix.tolist() == [[False, True, False], [True, False, False], [True, True, False]]
    by_row = [decided_labels(dict(zip(labels, row, strict=True)), thresholds) for row in probabilities]
    assert by_row == decided_label_sets(probabilities, labels, thresholds) == ["joy", "anger", "anger,joy"]


def test_a_stored_label_set_is_unique_and_sorted():
    assert joined_labels(["love", "joy", "love"]) == "joy,love"


def test_feedback_may_give_as_many_labels_as_always_fit_the_column():
    single = FeedbackRule(("anger", "joy"), multilabel=False)
    assert single.max_labels == 1 and single.too_many(["joy", "joy"]) and not single.too_many(["joy"])
    assert single.unknown(["joy", "glee", "anger", "meh"]) == ["glee", "meh"]
    rule = FeedbackRule(GOEMOTIONS_LABELS, multilabel=True)
    longest = sorted(GOEMOTIONS_LABELS, key=len, reverse=True)
    assert len(joined_labels(longest[: rule.max_labels])) <= LABEL_CHARS
    assert len(joined_labels(longest[: rule.max_labels + 1])) > LABEL_CHARS
