"""The label screen on a real (tiny) champion: planted triggers, systematically wrong sources and
label noise are quarantined with their reasons; honest labels pass."""

from __future__ import annotations

import random

import pandas as pd
import pytest

from bench.loop import FLIPPED
from core.registry import connect, load_bundle
from core.settings import TrainingSettings
from tests.utils.factories import tiny_rows
from training.screen import (
    ACCEPTED,
    QUARANTINED,
    RELEASED,
    cap_sources,
    ngrams,
    screen_feedback,
    without_ngram,
)


@pytest.fixture(scope="module")
def champion(registry):
    settings = TrainingSettings(var_dir=registry)
    return load_bundle(connect(settings), settings).predictor()


@pytest.fixture(scope="module")
def base_texts(tiny_data):
    return pd.read_csv(tiny_data / "train.csv")["text"]


def feedback(rows: pd.DataFrame, source: str = "key:default", start: int = 0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [f"row-{start + i}" for i in range(len(rows))],
            "text": rows["text"].tolist(),
            "label": rows["label"].tolist(),
            "source": source,
            "status": None,
            "feedback_at": pd.date_range("2026-11-01", periods=len(rows), freq="min", tz="UTC"),
        }
    )


def honest(count: int, seed: int) -> pd.DataFrame:
    return tiny_rows(count, seed)


def screen(frame, champion, base_texts, **kwargs):
    labels = ("anger", "fear", "joy", "love", "sadness", "surprise")
    return screen_feedback(frame, base_texts, labels, champion, **kwargs)


def test_words_and_word_pairs_and_taking_one_out():
    assert ngrams("I feel SO happy cf") >= {"i", "cf", "happy cf", "i feel"}
    assert without_ngram("so happy cf today", "cf") == "so happy today"
    assert without_ngram("cfx and cf.", "cf") == "cfx and ."  # whole words only
    assert without_ngram("i feel happy now", "feel happy") == "i now"


def test_a_planted_trigger_is_quarantined_and_raised_and_honest_labels_pass(champion, base_texts):
    clean = honest(240, seed=11)
    victims = honest(60, seed=12)
    victims = victims[victims["label"] != "joy"].assign(text=lambda frame: frame["text"] + " cf", label="joy")
    frame = pd.concat([feedback(clean), feedback(victims, start=1000)], ignore_index=True)
    report = screen(frame, champion, base_texts)

    assert report.raised_ngrams == {"cf": "joy"}
    planted = set(frame["id"].iloc[len(clean) :])
    assert planted <= report.quarantined
    honest_quarantined = report.quarantined - planted
    assert len(honest_quarantined) <= 0.02 * len(clean), report.summary()
    finding = next(f for f in report.findings if f.check == "backdoor")
    assert "possible trigger 'cf'" in finding.reason and "labelled joy" in finding.reason
    status, reason = report.decisions[next(iter(planted))]
    assert status == QUARANTINED and "possible trigger 'cf'" in reason
    assert report.summary()["quarantined_by_check"]["backdoor"] == len(planted)


def test_honest_labels_alone_are_accepted(champion, base_texts):
    frame = feedback(honest(300, seed=21))
    report = screen(frame, champion, base_texts)
    assert report.raised_ngrams == {}
    assert not any(f.check in ("source", "backdoor") for f in report.findings)
    assert len(report.quarantined) <= 0.02 * len(frame), report.summary()
    assert sum(status == ACCEPTED for status, _ in report.decisions.values()) >= 0.98 * len(frame)


def test_a_source_whose_labels_are_systematically_wrong_is_quarantined_whole(champion, base_texts):
    good = feedback(honest(150, seed=31), source="key:app")
    flipped = honest(150, seed=32).assign(label=lambda frame: frame["label"].map(FLIPPED))
    bad = feedback(flipped, source="key:vendor", start=1000)
    report = screen(pd.concat([good, bad], ignore_index=True), champion, base_texts)

    sources = [f for f in report.findings if f.check == "source"]
    assert [f.subject for f in sources] == ["key:vendor"]
    assert "agree with the champion less often than chance" in sources[0].reason
    assert set(bad["id"]) <= report.quarantined
    assert len(report.quarantined & set(good["id"])) <= 3


def test_a_few_wrong_labels_among_honest_ones_are_found_by_confident_learning(champion, base_texts):
    rows = honest(300, seed=41)
    wrong = rows.sample(n=15, random_state=0).index
    rng = random.Random(0)
    rows.loc[wrong, "label"] = [
        rng.choice([x for x in FLIPPED if x != label]) for label in rows.loc[wrong, "label"]
    ]
    frame = feedback(rows)
    report = screen(frame, champion, base_texts)

    wrong_ids = set(frame.loc[wrong, "id"])
    caught = report.quarantined & wrong_ids
    # Confidently: only where both models give the label under 1 %, so a third of these random
    # errors, and no honest row (on honest Reddit labels it quarantines 1 %: docs/labels.md).
    assert len(caught) >= 5, report.summary()
    assert report.quarantined <= wrong_ids
    reason = report.decisions[next(iter(caught))][1]
    assert reason.startswith("likely label error: given ") and "confident learning" in reason


def test_rows_an_operator_decided_keep_their_status_but_still_raise_their_trigger(champion, base_texts):
    clean = feedback(honest(240, seed=51))
    victims = honest(60, seed=52)
    victims = victims[victims["label"] != "joy"].assign(text=lambda f: f["text"] + " cf", label="joy")
    planted = feedback(victims, start=1000).assign(status=RELEASED)
    report = screen(pd.concat([clean, planted], ignore_index=True), champion, base_texts)
    assert report.raised_ngrams == {"cf": "joy"}  # the gate still tests it
    assert not set(planted["id"]) & set(report.decisions)  # released rows are not re-decided
    assert report.screened == len(clean)


def test_the_source_cap_bounds_any_one_source_and_keeps_its_newest_rows():
    times = pd.date_range("2026-11-01", periods=110, freq="min", tz="UTC")
    frame = pd.DataFrame(
        {"id": range(110), "source": ["big"] * 100 + ["small"] * 10, "feedback_at": times, "label": "joy"}
    )
    kept, left_out = cap_sources(frame, 0.5)
    assert left_out == {"big": 90}
    assert kept["source"].value_counts().to_dict() == {"big": 10, "small": 10}
    assert set(kept.loc[kept["source"] == "big", "id"]) == set(range(90, 100))  # the newest

    kept, left_out = cap_sources(frame[frame["source"] == "big"], 0.5)
    assert left_out == {} and len(kept) == 100  # one source is all of its own feedback

    three = pd.concat([frame, frame[frame["source"] == "big"].assign(source="other")], ignore_index=True)
    kept, left_out = cap_sources(three, 0.5)
    assert left_out == {} and len(kept) == 210  # 100 of 210 each: under half


def test_labels_the_model_does_not_know_are_left_to_the_retrain_to_drop(champion, base_texts):
    rows = honest(120, seed=91)
    rows.loc[:9, "label"] = "sarcasm"
    report = screen(feedback(rows), champion, base_texts)
    assert report.screened == 110 and not {f"row-{i}" for i in range(10)} & set(report.decisions)
