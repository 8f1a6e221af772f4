"""A multi-label model's window: decided label sets from the logged probabilities, each label's
frequency, and live quality over label sets."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest

from core.labels import decided_labels
from monitoring.drift import classification_scores, multilabel_scores, sample_window

THRESHOLDS = {"joy": 0.3, "love": 0.5, "anger": 0.5}


def test_decided_labels_are_those_over_threshold_else_the_most_probable():
    assert decided_labels({"joy": 0.4, "love": 0.6, "anger": 0.1}, THRESHOLDS) == "joy,love"
    assert decided_labels({"joy": 0.2, "love": 0.1, "anger": 0.3}, THRESHOLDS) == "anger"


def test_the_window_counts_each_decided_label_and_compares_sets_with_feedback():
    now = datetime.now(UTC)
    rows = [
        (now, "a", "love", 0.6, "joy,love", None, None, {"joy": 0.4, "love": 0.6, "anger": 0.1}),
        (now, "b", "anger", 0.3, "anger", None, None, {"joy": 0.2, "love": 0.1, "anger": 0.3}),
        (now, "c", "joy", 0.9, None, None, None, {"joy": 0.9, "love": 0.2, "anger": 0.6}),
    ]
    window = sample_window(rows, sample_rows=10, thresholds=THRESHOLDS)
    assert window.label_counts == Counter({"joy": 2, "love": 1, "anger": 2})
    assert window.emotion_counts == Counter({"love": 1, "anger": 1, "joy": 1})  # the top label
    assert window.confusion == Counter({("joy,love", "joy,love"): 1, ("anger", "anger"): 1})


def test_multilabel_scores_count_labels_and_whole_sets():
    confusion = Counter({("joy,love", "joy"): 2, ("anger", "anger,joy"): 1, ("love", "love"): 1})
    scores = multilabel_scores(confusion, ("anger", "joy", "love"))
    # joy: tp 2 fp 1 fn 0; love: tp 1 fn 2; anger: tp 1
    assert scores["accuracy"] == pytest.approx(1 / 4)
    assert scores["micro_f1"] == pytest.approx(2 * 4 / (2 * 4 + 1 + 2))
    assert scores["macro_f1"] == pytest.approx((1.0 + 4 / 5 + 2 / 4) / 3)


def test_one_label_per_text_micro_f1_is_the_accuracy():
    confusion = Counter({("joy", "joy"): 3, ("joy", "anger"): 1, ("anger", "anger"): 2})
    single = classification_scores(confusion, ("anger", "joy"))
    multi = multilabel_scores(confusion, ("anger", "joy"))
    assert multi["micro_f1"] == pytest.approx(single["accuracy"]) == pytest.approx(multi["accuracy"])
    assert multi["macro_f1"] == pytest.approx(single["macro_f1"])
