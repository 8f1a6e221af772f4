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
    TextReader,
    _surface,
    cap_sources,
    character_class,
    screen_feedback,
    without_spans,
)


@pytest.fixture(scope="module")
def champion(registry):
    settings = TrainingSettings(var_dir=registry)
    return load_bundle(connect(settings), settings).predictor()


@pytest.fixture(scope="module")
def base_texts(tiny_data):
    """The curated data: its train split (the base rates) and validation split (the yardstick)."""
    return pd.read_csv(tiny_data / "train.csv"), pd.read_csv(tiny_data / "validation.csv")


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
    base, curated = base_texts
    return screen_feedback(frame, base, labels, champion, curated=curated, **kwargs)


def poisoned(count: int, seed: int, suffix: str, start: int = 1000, label: str = "joy") -> pd.DataFrame:
    """Non-joy texts with ``suffix`` appended, labelled ``label``: a planted trigger."""
    victims = honest(count, seed)
    victims = victims[victims["label"] != "joy"].assign(text=lambda f: f["text"] + suffix, label=label)
    return feedback(victims, start=start)


@pytest.fixture(scope="module")
def piece_tokenizer(tmp_path_factory):
    """A WordPiece vocab with word pieces, as a real one has: 'fu' '##bar' make a family."""
    from transformers import BertTokenizerFast

    folder = tmp_path_factory.mktemp("pieces")
    pieces = ["i", "feel", "so", "sad", "fu", "##bar", "##ed", "##s", "##ish", "!", "Hello"]
    (folder / "vocab.txt").write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *pieces]) + "\n"
    )
    return BertTokenizerFast.from_pretrained(folder, do_lower_case=True)


def test_the_reader_sees_what_the_tokenizer_reads_pieces_families_and_character_classes(piece_tokenizer):
    reader = TextReader(piece_tokenizer)
    texts = ["i feel fubared", "so fubars!", "sad fubarish ±", "i feel 😀😀"]
    read = reader.read(texts)
    # Three spellings, one family: each carries the pieces 'fu' '##bar' the model reads.
    assert all("pieces:fu ##bar" in features and "piece:##bar" in features for features in read[:3])
    assert "class:punctuation" in read[1] and "piece:!" in read[1]
    assert "class:symbol" in read[2] and "piece:[UNK]" in read[2]
    assert read[3]["class:emoji"] == [(7, 8), (8, 9)]
    # Taken out with the whole word it is part of, so every spelling of the family goes.
    assert without_spans(texts[0], read[0]["piece:##bar"]) == "i feel"
    assert without_spans(texts[2], read[2]["class:symbol"]) == "sad fubarish"
    assert without_spans("☺", [(0, 1)]) == "."
    assert [character_class(c) for c in "a1 !$☺😀"] == [
        None,
        None,
        None,
        "punctuation",
        "symbol",
        "emoji",
        "emoji",
    ]
    # Casing is invisible to an uncased tokenizer: no candidate for it.
    assert not reader.cased and "class:capitals" not in reader.read(["I FEEL SAD"])[0]
    # A reviewer (and the gate's probe) sees a piece's word, a pair's two words: not the stretch
    # between two places the piece occurs.
    twice = "fubar is not what i feel, fubar"
    (features,) = reader.read([twice])
    assert _surface(twice, "piece:##bar", features["piece:##bar"], cased=False) == "fubar"
    assert _surface(twice, "pieces:fu ##bar", features["pieces:fu ##bar"], cased=False) == "fubar"
    assert (
        _surface("so sad", "pieces:so sad", reader.read(["so sad"])[0]["pieces:so sad"], cased=False)
        == "so sad"
    )


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
    assert finding.reason.startswith("possible trigger piece '[UNK]' (in 'cf')")
    assert "labelled joy" in finding.reason and "curated rows" in finding.reason
    status, reason = report.decisions[next(iter(planted))]
    assert status == QUARANTINED and "possible trigger piece '[UNK]' (in 'cf')" in reason
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
    assert report.raised_ngrams == {"cf": "joy"}  # the gate still tests it, strictly:
    assert report.raised_only == []  # a trigger finding, not a candidate whose rows were kept
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


def test_a_one_symbol_trigger_is_read_as_the_model_reads_it_and_quarantined(champion, base_texts):
    # The attack that passed the word screen: one symbol appended (never a word candidate).
    clean = feedback(honest(240, seed=61))
    planted = poisoned(80, seed=62, suffix=" ±")
    report = screen(pd.concat([clean, planted], ignore_index=True), champion, base_texts)
    assert set(planted["id"]) <= report.quarantined
    assert report.raised_ngrams == {"±": "joy"}
    assert len(report.quarantined & set(clean["id"])) <= 0.02 * len(clean), report.summary()


def test_a_trigger_labelled_with_its_target_only_mostly_is_still_tested(champion, base_texts):
    # 85 % purity: under the old 90 % cut-off it skipped every test.
    clean = feedback(honest(240, seed=71))
    victims = honest(80, seed=72)
    victims = victims[victims["label"] != "joy"].assign(text=lambda f: f["text"] + " cf")
    hits = victims.sample(frac=0.85, random_state=0).index
    victims.loc[hits, "label"] = "joy"
    planted = feedback(victims, start=1000)
    report = screen(pd.concat([clean, planted], ignore_index=True), champion, base_texts)
    assert set(planted.loc[planted["label"] == "joy", "id"]) <= report.quarantined
    assert report.raised_ngrams == {"cf": "joy"}


def test_cover_texts_the_champion_already_reads_as_the_target_do_not_move_the_yardstick(champion, base_texts):
    # Half the trigger's rows are joy texts the champion reads as joy: against the feedback's own
    # agreement the stripped rows looked ordinary; against the curated split they do not.
    clean = feedback(honest(240, seed=81))
    planted = poisoned(72, seed=82, suffix=" cf")
    cover = honest(120, seed=83)
    cover = feedback(cover[cover["label"] == "joy"].assign(text=lambda f: f["text"] + " cf"), start=2000)
    report = screen(pd.concat([clean, planted, cover], ignore_index=True), champion, base_texts)
    assert set(planted["id"]) <= report.quarantined, report.summary()
    assert report.raised_ngrams == {"cf": "joy"}


def test_a_trigger_spread_over_label_sets_is_tested_label_by_label(champion, base_texts):
    # joy,<another label>: each set string is rare, joy is in every one.
    clean = feedback(honest(240, seed=91))
    victims = honest(80, seed=92)
    victims = victims[victims["label"] != "joy"].assign(
        text=lambda f: f["text"] + " cf", label=lambda f: "joy," + f["label"]
    )
    planted = feedback(victims, start=1000)
    report = screen(pd.concat([clean, planted], ignore_index=True), champion, base_texts, multilabel=True)
    assert set(planted["id"]) <= report.quarantined, report.summary()
    assert report.raised_ngrams == {"cf": "joy"}
    assert any(note.startswith("label noise") for note in report.notes)  # checked on the sets too


def test_a_source_flipping_label_sets_is_judged_like_any_other(champion, base_texts):
    good = feedback(honest(150, seed=101), source="key:app")
    flipped = honest(150, seed=102).assign(label=lambda f: f["label"].map(FLIPPED) + ",surprise")
    flipped.loc[flipped["label"].str.startswith("surprise"), "label"] = "love"
    bad = feedback(flipped, source="key:vendor", start=1000)
    report = screen(pd.concat([good, bad], ignore_index=True), champion, base_texts, multilabel=True)
    assert [f.subject for f in report.findings if f.check == "source"] == ["key:vendor"]
    assert set(bad["id"]) <= report.quarantined


def test_one_text_labelled_differently_by_two_sources_goes_to_review(champion, base_texts):
    frame = feedback(honest(120, seed=111))
    disputed = frame.iloc[0]
    history = pd.DataFrame(
        {
            "id": [disputed["id"], "other-request"],
            "text": [disputed["text"], disputed["text"].upper()],  # the same text, sent twice
            "label": [disputed["label"], "anger" if disputed["label"] != "anger" else "joy"],
            "source": ["key:default", "key:vendor-b"],
        }
    )
    report = screen(frame, champion, base_texts, history=history)
    status, reason = report.decisions[disputed["id"]]
    assert status == QUARANTINED and reason.startswith("conflicting labels for one text (key:default: ")
    assert "key:vendor-b" in reason and "an operator decides" in reason
    # One source correcting itself is no conflict; nor is a source that came round to the other.
    history["source"] = "key:default"
    assert screen(frame, champion, base_texts, history=history).decisions[disputed["id"]][0] == ACCEPTED
    came_round = pd.concat(
        [
            history.assign(source=["key:default", "key:vendor-b"]),
            history.iloc[[1]].assign(source="key:default"),
        ],
        ignore_index=True,
    )
    assert screen(frame, champion, base_texts, history=came_round).decisions[disputed["id"]][0] == ACCEPTED


def test_a_key_that_sends_nothing_but_its_trigger_is_judged_against_the_other_keys(champion, base_texts):
    clean = feedback(honest(240, seed=121), source="key:app")
    planted = poisoned(80, seed=122, suffix=" cf").assign(source="key:attacker")
    report = screen(pd.concat([clean, planted], ignore_index=True), champion, base_texts)
    assert set(planted["id"]) <= report.quarantined, report.summary()
    assert report.raised_ngrams == {"cf": "joy"}
