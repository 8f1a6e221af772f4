"""The retrain policy: a pure function from the drift verdict, live accuracy and labels to a decision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from monitoring.policy import RetrainPolicy, retrain_decision

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
POLICY = RetrainPolicy(accuracy_floor=0.85, min_new_labels=200, cooldown=timedelta(hours=24))


@pytest.mark.parametrize(
    ("drift", "accuracy", "labels", "last", "retrain", "reason"),
    [
        (True, None, 500, None, True, "dataset drift detected; 500 new labelled rows"),
        (False, 0.80, 500, None, True, "live accuracy 0.8000 is below the floor 0.8500"),
        (True, 0.80, 500, None, True, "dataset drift detected and live accuracy 0.8000"),
        (False, 0.90, 500, None, False, "no drift, live accuracy 0.9000 clears the floor"),
        (False, None, 500, None, False, "no drift"),
        (None, None, 500, None, False, "no verdict: not enough data"),
        (True, None, 199, None, False, "only 199 new labelled rows (need 200)"),
        (True, None, 500, NOW - timedelta(hours=23), False, "cooldown lasts until 2026-11-22T13:00:00"),
        (True, None, 500, NOW - timedelta(hours=24), True, "dataset drift detected"),
        (None, 0.5, 500, None, True, "live accuracy 0.5000 is below the floor"),
    ],
)
def test_retrain_decision(drift, accuracy, labels, last, retrain, reason):
    decision = retrain_decision(POLICY, drift, accuracy, labels, last, NOW)
    assert decision.retrain is retrain
    assert reason in decision.reason


def test_a_handful_of_labels_cannot_set_live_accuracy():
    policy = RetrainPolicy(accuracy_floor=0.85, min_new_labels=1, min_accuracy_labels=50)
    few = retrain_decision(policy, False, 0.0, 500, None, NOW, labelled_rows=1)
    assert few.retrain is False and "1 labelled rows in the window (need 50)" in few.reason
    enough = retrain_decision(policy, False, 0.5, 500, None, NOW, labelled_rows=50)
    assert enough.retrain is True
