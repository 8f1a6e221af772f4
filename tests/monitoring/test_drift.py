"""Drift reports on real traffic: the dair-ai/emotion test split (no drift), anger-and-fear-only
texts and Reddit comments (drift), a window too small to judge; the figures in a real Pushgateway.

The predictions come from a real classifier trained here on the real training split (the TF-IDF
baseline, which trains in seconds); the drift job only sees texts, labels and confidences.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.metrics import accuracy_score, f1_score

from core.store import ReportIndex, Store, TrafficWindow
from core.store.reports import STATUS_ACKNOWLEDGED
from monitoring.drift import (
    EMOTION,
    VERDICT_DRIFT,
    VERDICT_NO_DRIFT,
    VERDICT_NOT_ENOUGH_DATA,
    DriftPolicy,
    analyse,
    classification_scores,
    js_distance,
    sample_text_chars,
    sample_window,
)
from monitoring.push import push_drift_metrics
from tests.conftest import SHARED_DATA
from tests.utils.factories import logged_row
from training.baseline import train_baseline
from training.data import load_emotion_dataset

MODEL = "emotion-classifier"


@pytest.fixture(scope="module")
def traffic(emotion_data_dir, tmp_path_factory):
    """A log store holding four windows, one model version each, and the reference sample."""
    goemotions = SHARED_DATA / "goemotions" / "dev.tsv"
    if not goemotions.is_file():
        pytest.skip("the GoEmotions data is not beside this checkout (../shared/data/goemotions)")
    data = load_emotion_dataset(emotion_data_dir)
    classifier = train_baseline(data, seed=0)

    def predicted(texts: list[str], labels: list[str | None]) -> pd.DataFrame:
        probabilities = classifier.predict_proba(texts)
        return pd.DataFrame(
            {
                "text": texts,
                "label": labels,
                "emotion": [data.labels[i] for i in probabilities.argmax(axis=1)],
                "confidence": probabilities.max(axis=1),
            }
        )

    validation = data.splits["validation"].sample(2000, random_state=0)
    reference = predicted(validation["text"].tolist(), validation["label"].tolist())
    test = data.splits["test"].sample(700, random_state=1)
    train = data.splits["train"]
    angry_or_afraid = train[train["label"].isin(["anger", "fear"])].sample(500, random_state=1)
    reddit = pd.read_csv(goemotions, sep="\t", header=None, names=["text", "labels", "id"]).sample(
        500, random_state=1
    )
    windows = {
        "unshifted": predicted(test["text"].tolist()[:500], test["label"].tolist()[:500]),
        "anger-fear": predicted(angry_or_afraid["text"].tolist(), [None] * 500),
        "reddit": predicted(reddit["text"].tolist(), [None] * 500),
        "small": predicted(test["text"].tolist()[:40], [None] * 40),
        "unshifted-200": predicted(test["text"].tolist()[-200:], [None] * 200),
        "anger-fear-200": predicted(angry_or_afraid["text"].tolist()[:200], [None] * 200),
    }
    store = Store.connect(f"sqlite:///{tmp_path_factory.mktemp('log') / 'predictions.db'}").predictions
    store.create_schema()
    start = datetime.now(UTC) - timedelta(hours=1)
    for version, frame in windows.items():
        store.insert_many(
            [
                logged_row(
                    created_at=start + timedelta(seconds=index),
                    model_name=MODEL,
                    model_version=version,
                    text=row.text,
                    emotion=row.emotion,
                    confidence=float(row.confidence),
                    # Feedback on every third unshifted row: the live-quality part of the report.
                    feedback_label=row.label if index % 3 == 0 else None,
                )
                for index, row in enumerate(frame.itertuples())
            ]
        )
    return store, reference, data.labels


@pytest.fixture(scope="module")
def results(traffic, tmp_path_factory):
    store, reference, labels = traffic
    output = tmp_path_factory.mktemp("reports")
    policy = DriftPolicy(min_rows=100)
    return {
        version: analyse(
            store.stream_window(TrafficWindow(version, rows=1000), max_chars=sample_text_chars(policy)),
            TrafficWindow(version, rows=1000),
            reference,
            labels,
            MODEL,
            policy,
            output,
        )
        for version in ("unshifted", "anger-fear", "reddit", "small", "unshifted-200", "anger-fear-200")
    }


def test_same_distribution_traffic_does_not_drift(results):
    result = results["unshifted"]
    assert result.verdict == VERDICT_NO_DRIFT
    assert result.dataset_drift is False
    assert result.window_rows == result.analysed_rows == 500
    assert result.drifted_share < result.policy.drift_share


def test_small_windows_get_thresholds_that_chance_rarely_passes(results):
    """200 rows of the reference's own distribution score over 0.1 on length by chance; the
    bootstrap thresholds absorb that, so no false alarm, while a real shift still shows."""
    unshifted = results["unshifted-200"]
    assert unshifted.verdict == VERDICT_NO_DRIFT
    thresholds = {column.column: column.threshold for column in unshifted.columns}
    assert thresholds["text_length"] > 0.1 and thresholds["text"] == 0.55
    # 500 rows: chance alone stays under the policy's 0.1, which is then the threshold.
    assert {column.threshold for column in results["unshifted"].columns if column.column != "text"} == {0.1}

    shifted = results["anger-fear-200"]
    assert shifted.verdict == VERDICT_DRIFT
    assert "emotion" in {column.column for column in shifted.columns if column.drifted}


def test_anger_and_fear_only_traffic_drifts(results):
    result = results["anger-fear"]
    assert result.verdict == VERDICT_DRIFT
    drifted = {column.column for column in result.columns if column.drifted}
    assert "emotion" in drifted  # the predicted-label mix moved
    assert set(result.emotion_share["current"]) <= {"anger", "fear", "sadness", "joy", "love", "surprise"}
    assert (
        result.emotion_share["current"].get("anger", 0) + result.emotion_share["current"].get("fear", 0) > 0.8
    )


def test_reddit_comments_drift_in_text_and_descriptors(results):
    result = results["reddit"]
    assert result.verdict == VERDICT_DRIFT
    drifted = {column.column for column in result.columns if column.drifted}
    # Reddit comments keep case and punctuation that dair-ai/emotion's texts never have.
    assert {"text", "non_letter_share"} <= drifted


def test_a_small_window_reports_not_enough_data(results):
    result = results["small"]
    assert result.verdict == VERDICT_NOT_ENOUGH_DATA
    assert result.dataset_drift is None
    assert result.columns == [] and result.html_path is None
    counts = result.summary()["counts"]
    # Texts are read cut to the sample's byte bound; these tweets are all shorter than that.
    assert 0 < counts.pop("longest_text_chars") < sample_text_chars(result.policy)
    assert counts == {
        "window_rows": 40,
        "analysed_rows": 40,
        "sampled": False,
        "reference_rows": 2000,
        "labelled_rows": 0,
        "min_rows": 100,
    }


def test_each_run_writes_a_self_contained_report_and_a_json_summary(results):
    result = results["unshifted"]
    html = Path(result.html_path).read_text(encoding="utf-8")
    assert "<script src=" not in html and '<link rel="stylesheet" href="http' not in html
    summary = json.loads((Path(result.html_path).parent / "summary.json").read_text())
    assert summary["verdict"] == "no_drift" and summary["dataset_drift"] is False
    assert summary["model"] == {"name": MODEL, "version": "unshifted"}
    assert summary["window"]["kind"] == "last_rows" and summary["window"]["rows_requested"] == 1000
    assert set(summary["columns"]) == {
        "text",
        "text_length",
        "word_count",
        "sentence_count",
        "non_letter_share",
        "emotion",
        "confidence",
    }
    for column in summary["columns"].values():
        assert set(column) == {"score", "method", "threshold", "drifted"}
        assert column["drifted"] == (column["score"] >= column["threshold"])


def test_feedback_labels_give_live_quality_against_the_reference(results, traffic):
    store, _, _ = traffic
    quality = results["unshifted"].quality
    assert quality["labelled_rows"] == 167  # every third of 500 rows
    window = sample_window(
        store.stream_window(TrafficWindow("unshifted", rows=1000), max_chars=1000), sample_rows=10_000
    )
    pairs = [pair for pair, count in window.confusion.items() for _ in range(count)]
    truth, predicted = zip(*pairs, strict=True)
    assert quality["accuracy"] == pytest.approx(accuracy_score(truth, predicted))
    assert quality["macro_f1"] == pytest.approx(f1_score(truth, predicted, average="macro"))
    assert 0.8 < quality["reference_accuracy"] < 0.95  # the TF-IDF classifier on validation texts
    assert Path(results["unshifted"].quality_html_path).is_file()


def test_large_windows_are_sampled_but_counted_exactly(traffic):
    store, _, _ = traffic
    window = sample_window(
        store.stream_window(TrafficWindow("unshifted", rows=1000), max_chars=1000, chunk_rows=64),
        sample_rows=100,
    )
    assert window.total_rows == 500 and len(window.sample) == 100 and window.sampled
    assert sum(window.emotion_counts.values()) == 500
    assert window.labelled_rows == 167


def test_a_time_range_window(traffic):
    store, _, _ = traffic
    newest = sample_window(
        store.stream_window(TrafficWindow("unshifted", rows=None), max_chars=1000), sample_rows=1000
    )
    since = newest.last_at - timedelta(seconds=99.5)  # the last 100 rows, one second apart
    window = sample_window(
        store.stream_window(TrafficWindow("unshifted", rows=None, since=since), max_chars=1000),
        sample_rows=1000,
    )
    assert window.total_rows == 100


def test_classification_scores_skip_labels_absent_from_both_sides():
    scores = classification_scores(
        Counter({("joy", "joy"): 3, ("anger", "joy"): 1}), ("joy", "anger", "fear")
    )
    assert scores["accuracy"] == 0.75
    assert scores["macro_f1"] == pytest.approx((6 / 7 + 0) / 2)


def test_figures_arrive_in_a_real_pushgateway(results, pushgateway_url):
    def pushed() -> dict[str, dict[tuple, float]]:
        text = httpx.get(f"{pushgateway_url}/metrics").text
        series: dict[str, dict[tuple, float]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.labels.get("job") == "emotion_drift":
                    key = tuple(
                        sorted((k, v) for k, v in sample.labels.items() if k not in {"job", "instance"})
                    )
                    series.setdefault(sample.name, {})[key] = sample.value
        return series

    push_drift_metrics(pushgateway_url, results["anger-fear"], retrain_triggered=False)
    series = pushed()
    version = (("model_name", MODEL), ("model_version", "anger-fear"))
    assert series["emotion_drift_dataset_drift"][version] == 1
    assert series["emotion_drift_window_rows"][version] == 500
    assert series["emotion_drift_share_drifted_columns"][version] == pytest.approx(
        results["anger-fear"].drifted_share
    )
    assert series["emotion_drift_last_run_timestamp_seconds"][version] == pytest.approx(
        results["anger-fear"].created_at.timestamp()
    )
    emotion = tuple(sorted((*version, ("column", "emotion"), ("method", "jensenshannon"))))
    assert series["emotion_drift_column_score"][emotion] > 0.1
    assert len(series["emotion_drift_column_drifted"]) == 7

    # The next run replaces the group: no verdict, so no drift figures linger from the last one.
    push_drift_metrics(pushgateway_url, results["small"], retrain_triggered=False)
    series = pushed()
    assert "emotion_drift_dataset_drift" not in series
    assert series["emotion_drift_enough_data"] == {(("model_name", MODEL), ("model_version", "small")): 0}

    push_drift_metrics(pushgateway_url, results["unshifted"], retrain_triggered=False)
    accuracy = pushed()["emotion_live_accuracy"]
    assert accuracy == {
        (("model_name", MODEL), ("model_version", "unshifted")): pytest.approx(
            results["unshifted"].quality["accuracy"]
        )
    }


def test_report_index_lists_shows_and_acknowledges(results, traffic):
    store, _, _ = traffic
    index = ReportIndex(store.engine)
    for result in results.values():
        index.add(result.summary())
    listed = index.list(limit=10)
    assert [row["id"] for row in listed][:1] == [index.latest()["id"]]
    assert {row["verdict"] for row in listed} == {"drift", "no_drift", "not_enough_data"}
    report = index.acknowledge(results["anger-fear"].report_id, by="reviewer", note="expected: campaign")
    assert report["status"] == STATUS_ACKNOWLEDGED and report["note"] == "expected: campaign"
    assert index.get(results["anger-fear"].report_id)["summary"]["verdict"] == "drift"


def test_null_thresholds_use_the_distance_evidently_reports(results, traffic):
    """The bootstrap thresholds are computed with our own Jensen-Shannon (SciPy); it must be the
    distance the Evidently report scores the same column with."""
    store, reference, _ = traffic
    window = sample_window(
        store.stream_window(TrafficWindow("anger-fear", rows=1000), max_chars=1000), sample_rows=10_000
    )
    scores = {column.column: column.score for column in results["anger-fear"].columns}
    assert js_distance(reference[EMOTION], window.sample[EMOTION], categorical=True) == pytest.approx(
        scores["emotion"], abs=1e-9
    )
    assert js_distance(reference["confidence"], window.sample["confidence"], categorical=False) == (
        pytest.approx(scores["confidence"], abs=1e-9)
    )


def test_the_drift_sample_is_bounded_in_bytes_as_well_as_rows():
    policy = DriftPolicy(sample_rows=40, sample_bytes=100_000)
    # Each text is cut in the database to its share of the bound: 100,000 / (40 + 10) characters.
    max_chars = sample_text_chars(policy, chunk_rows=10)
    assert max_chars == 2_000
    start = datetime(2026, 11, 1, tzinfo=UTC)
    rows = [(start - timedelta(seconds=n), "x" * max_chars, "joy", 0.9, None, None, None) for n in range(50)]
    sample = sample_window(rows, policy.sample_rows)
    assert sample.total_rows == 50 and len(sample.sample) == 40
    assert sample.sample["text"].str.len().sum() <= policy.sample_bytes
