from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.utils.factories import tiny_rows
from training.data import DataError, load_emotion_dataset

EXPECTED_LABELS = ("anger", "fear", "joy", "love", "sadness", "surprise")


def _write_csv_splits(folder: Path, frames: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, frame in frames.items():
        frame.to_csv(folder / f"{split}.csv", index=False)
    return folder


def _three_splits() -> dict:
    return {"train": tiny_rows(30, 1), "validation": tiny_rows(12, 2), "test": tiny_rows(12, 3)}


def test_csv_with_label_names_gives_sorted_label_ids(tmp_path):
    dataset = load_emotion_dataset(_write_csv_splits(tmp_path, _three_splits()))
    assert dataset.labels == EXPECTED_LABELS
    assert dataset.id2label[0] == "anger" and dataset.label2id["surprise"] == 5
    assert len(dataset.texts("train")) == 30
    assert dataset.label_ids("train")[0] == dataset.label2id[dataset.splits["train"]["label"][0]]


def test_csv_with_hub_integer_ids_maps_to_names(tmp_path):
    frames = _three_splits()
    hub_ids = {"sadness": 0, "joy": 1, "love": 2, "anger": 3, "fear": 4, "surprise": 5}
    for frame in frames.values():
        frame["label"] = frame["label"].map(hub_ids)
    dataset = load_emotion_dataset(_write_csv_splits(tmp_path, frames))
    original = _three_splits()["train"]["label"].tolist()
    assert dataset.splits["train"]["label"].tolist() == original


def test_jsonl_and_semicolon_txt_layouts(tmp_path):
    frames = _three_splits()
    json_dir = tmp_path / "jsonl"
    json_dir.mkdir()
    for split, frame in frames.items():
        lines = [json.dumps(row) for row in frame.to_dict("records")]
        (json_dir / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    txt_dir = tmp_path / "txt"
    txt_dir.mkdir()
    for split, stem in (("train", "train"), ("validation", "val"), ("test", "test")):
        lines = [f"{row['text']};{row['label']}" for row in frames[split].to_dict("records")]
        (txt_dir / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    from_json = load_emotion_dataset(json_dir)
    from_txt = load_emotion_dataset(txt_dir)
    for split in ("train", "validation", "test"):
        # The same rows; only the source column (the folder) differs.
        columns = ["text", "label"]
        assert from_json.splits[split][columns].equals(from_txt.splits[split][columns])
        assert from_json.texts(split) == frames[split]["text"].tolist()


def test_missing_split_names_the_expected_files(tmp_path):
    frames = _three_splits()
    del frames["validation"]
    with pytest.raises(DataError, match=r"missing split 'validation'.*validation\.csv"):
        load_emotion_dataset(_write_csv_splits(tmp_path, frames))


def test_label_unknown_to_train_is_refused(tmp_path):
    frames = _three_splits()
    frames["test"].loc[4, "label"] = "boredom"
    with pytest.raises(DataError, match=r"split 'test' has label\(s\) \['boredom'\]"):
        load_emotion_dataset(_write_csv_splits(tmp_path, frames))


def test_integer_label_out_of_range_is_unknown(tmp_path):
    frames = _three_splits()
    frames["train"]["label"] = 1
    frames["train"].loc[3, "label"] = 9
    with pytest.raises(DataError, match=r"unknown label\(s\) \['9'\] at line 5"):
        load_emotion_dataset(_write_csv_splits(tmp_path, frames))


def test_empty_text_reports_line_numbers(tmp_path):
    frames = _three_splits()
    frames["train"].loc[[0, 7], "text"] = "   "
    with pytest.raises(DataError, match="split 'train': empty texts at line 2, line 9"):
        load_emotion_dataset(_write_csv_splits(tmp_path, frames))


def test_wrong_columns_are_named(tmp_path):
    frames = _three_splits()
    frames["train"] = frames["train"].rename(columns={"text": "sentence"})
    with pytest.raises(DataError, match=r"needs columns 'text' and 'label'; missing \['text'\]"):
        load_emotion_dataset(_write_csv_splits(tmp_path, frames))


def test_txt_line_without_separator_is_refused(tmp_path):
    (tmp_path / "train.txt").write_text("i am happy;joy\nno separator here\n")
    with pytest.raises(DataError, match=r"train.txt:2: expected 'text;label'"):
        load_emotion_dataset(tmp_path, splits=("train",))


def test_missing_folder_says_how_to_point_at_data(tmp_path):
    with pytest.raises(DataError, match="does not exist; set EMOTION_DATA_DIR"):
        load_emotion_dataset(tmp_path / "nowhere")


def test_real_dataset_has_the_published_split_sizes(emotion_data_dir):
    dataset = load_emotion_dataset(emotion_data_dir)
    assert dataset.labels == EXPECTED_LABELS
    assert {split: len(frame) for split, frame in dataset.splits.items()} == {
        "train": 16000,
        "validation": 2000,
        "test": 2000,
    }
    assert dataset.splits["test"]["label"].value_counts()["surprise"] == 66
