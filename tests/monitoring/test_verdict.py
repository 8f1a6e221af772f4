"""The drift verdict's tests: the novelty share against the model's calibration and each
predicted label's share against the reference's, sharing one false-alarm budget."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from core.store import TrafficWindow
from monitoring.drift import (
    VERDICT_DRIFT,
    VERDICT_NO_DRIFT,
    DriftPolicy,
    analyse,
    atc_threshold,
    estimated_novel_share,
    label_mix_test,
    novelty_test,
    sample_window,
    verdict_tests,
)

REFERENCE = pd.DataFrame(
    {
        "text": ["i feel fine"] * 1000,
        "label": ["joy"] * 1000,
        "emotion": ["joy"] * 500 + ["sadness"] * 300 + ["anger"] * 140 + ["love"] * 60,
        "confidence": [0.9] * 1000,
    }
)
REFERENCE_MIX = Counter(REFERENCE["emotion"])


def rows(
    mix: dict[str, int], novel: int = 0, scored: bool = True, start: datetime | None = None
) -> list[tuple]:
    start = start or datetime(2026, 12, 1, tzinfo=UTC)
    emotions = [emotion for emotion, count in mix.items() for _ in range(count)]
    return [
        (
            start - timedelta(seconds=index),
            f"text {index}",
            emotion,
            0.8,
            None,
            (0.9 if index < novel else 0.1) if scored else None,
            (index < novel) if scored else None,
        )
        for index, emotion in enumerate(emotions)
    ]


def test_the_reference_mix_itself_does_not_move_and_a_doubled_label_does():
    same = label_mix_test(
        Counter({"joy": 250, "sadness": 150, "anger": 70, "love": 30}), REFERENCE_MIX, 0.005
    )
    assert not same["drifted"] and same["p_value"] == pytest.approx(1.0)
    doubled = label_mix_test(
        Counter({"joy": 210, "sadness": 120, "anger": 140, "love": 30}), REFERENCE_MIX, 0.005
    )
    assert doubled["drifted"] and doubled["most_moved"] == "anger"
    assert doubled["share"] == 0.28 and doubled["reference_share"] == 0.14


def test_the_novelty_share_is_tested_against_what_unshifted_traffic_gives():
    assert not novelty_test(500, 12, 0.02, 0.005)["drifted"]  # 2.4 % where 2 % is expected
    shifted = novelty_test(500, 40, 0.02, 0.005)
    assert shifted["drifted"] and shifted["share"] == 0.08 and shifted["p_value"] < 1e-6


def test_the_tests_share_the_false_alarm_budget():
    policy = DriftPolicy(min_rows=100, false_alarm_rate=0.01)
    scored = sample_window(rows({"joy": 100, "sadness": 60, "anger": 28, "love": 12}, novel=4), 10)
    both = verdict_tests(scored, REFERENCE, 0.02, policy)
    assert set(both) == {"label_mix", "novelty_share"}
    assert {test["alpha"] for test in both.values()} == {0.005}
    # Rows without scores (a model without an index): the label test alone, with the whole budget.
    unscored = sample_window(rows({"joy": 100, "sadness": 60, "anger": 28, "love": 12}, scored=False), 10)
    alone = verdict_tests(unscored, REFERENCE, 0.02, policy)
    assert set(alone) == {"label_mix"} and alone["label_mix"]["alpha"] == 0.01


def test_the_window_keeps_the_most_novel_rows_and_how_they_are_labelled():
    window = sample_window(rows({"anger": 30, "joy": 170}, novel=25), 50, shown=5)
    assert window.scored_rows == 200 and window.novel_rows == 25
    assert window.novel_emotions == Counter({"anger": 25})
    assert len(window.most_novel) == 5 and all(score == 0.9 for score, _, _ in window.most_novel)


def test_a_small_novel_mix_is_called_drift_and_the_report_says_what_moved(tmp_path):
    policy = DriftPolicy(min_rows=100)
    mix = {"joy": 250, "sadness": 150, "anger": 70, "love": 30}
    shifted = analyse(
        rows(mix, novel=40), TrafficWindow("1", rows=500), REFERENCE, ("anger", "joy", "love", "sadness"),
        "m", policy, tmp_path, expected_novel_share=0.02, recent_novelty=[{"report_id": "r0", "share": 0.02}],
    )  # fmt: skip
    assert shifted.verdict == VERDICT_DRIFT and shifted.tests["novelty_share"]["drifted"]
    assert not shifted.tests["label_mix"]["drifted"]
    summary = shifted.summary()
    assert summary["novelty"]["share"] == 0.08 and summary["novelty"]["expected_share"] == 0.02
    assert len(summary["novelty"]["most_novel"]) == policy.novel_rows_shown
    assert summary["novelty"]["recent_shares"] == [{"report_id": "r0", "share": 0.02}]

    calm = analyse(
        rows(mix, novel=8), TrafficWindow("2", rows=500), REFERENCE, ("anger", "joy", "love", "sadness"),
        "m", policy, tmp_path, expected_novel_share=0.02,
    )  # fmt: skip
    assert calm.verdict == VERDICT_NO_DRIFT


def test_the_novel_share_is_estimated_net_of_what_unshifted_traffic_gives():
    shifted = estimated_novel_share(500, 40, 0.02)
    assert shifted["estimate"] == pytest.approx((0.08 - 0.02) / 0.98, abs=1e-4)
    assert 0 < shifted["low"] < shifted["estimate"] < shifted["high"] < 0.12
    # Fewer novel rows than unshifted traffic gives: none, not a negative share.
    calm = estimated_novel_share(500, 5, 0.02)
    assert calm["estimate"] == 0 and calm["low"] == 0 and calm["high"] > 0


def test_accuracy_is_estimated_from_confidence_for_the_familiar_and_novel_rows_apart(tmp_path):
    # The reference: confidences 0.001 .. 1.0, right on 800 of 1,000, so ATC's threshold leaves
    # 800 rows over it.
    confidences = [(index + 1) / 1000 for index in range(1000)]
    reference = pd.DataFrame(
        {
            "text": ["t"] * 1000,
            "label": ["joy"] * 1000,
            "emotion": ["sadness"] * 200 + ["joy"] * 800,
            "confidence": confidences,
        }
    )
    threshold = atc_threshold(reference)
    assert sum(c > threshold for c in confidences) == 800
    start = datetime(2026, 12, 1, tzinfo=UTC)
    # 400 familiar rows, 300 of them confident; 100 novel rows, 20 of them confident.
    window_rows = [(start, f"t{i}", "joy", 0.9 if i < 300 else 0.1, None, 0.1, False) for i in range(400)] + [
        (start, f"n{i}", "joy", 0.9 if i < 20 else 0.1, None, 0.9, True) for i in range(100)
    ]
    # 50 confident rows without a novelty score (logged with scoring off): neither part's.
    window_rows += [(start, f"u{i}", "joy", 0.9, None, None, None) for i in range(50)]
    result = analyse(
        window_rows, TrafficWindow("1", rows=550), reference, ("joy", "sadness"), "m",
        DriftPolicy(min_rows=100), tmp_path, expected_novel_share=0.02,
    )  # fmt: skip
    estimate = result.summary()["estimated_accuracy"]
    assert estimate["method"] == "ATC" and estimate["threshold"] == pytest.approx(threshold)
    assert estimate["all"]["estimate"] == round(370 / 550, 4) and estimate["all"]["rows"] == 550
    assert estimate["all"]["low"] < estimate["all"]["estimate"] < estimate["all"]["high"]
    assert estimate["familiar"]["estimate"] == 0.75 and estimate["familiar"]["rows"] == 400
    assert estimate["novel"]["estimate"] == 0.2 and estimate["novel"]["rows"] == 100
