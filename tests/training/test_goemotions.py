"""GoEmotions' layout, the label sets that map its 28 labels, several sources at once, and where
training runs (EMOTION_DEVICE)."""

from __future__ import annotations

import pytest
import torch

from core.registry import connect, load_bundle
from core.settings import TrainingSettings
from tests.utils.cli import cli
from tests.utils.factories import TINY_TRAINING, write_goemotions, write_tiny_dataset
from training.data import DataError, load_emotion_dataset
from training.label_sets import label_set_named
from training.pipeline import train_and_register
from training.train import resolve_device


def test_goemotions_maps_onto_the_six_and_dev_is_the_test_split(tmp_path):
    dataset = load_emotion_dataset(write_goemotions(tmp_path / "goemotions"))
    assert dataset.labels == ("anger", "fear", "joy", "love", "sadness", "surprise")
    assert dataset.label_set["name"] == "six"
    assert dataset.label_set["map"]["goemotions"]["annoyance"] == "anger"
    # dev (40 cue rows + the kept joy row) is the test split; validation is carved from train.
    assert len(dataset.splits["test"]) == 41
    assert len(dataset.splits["train"]) + len(dataset.splits["validation"]) == 41
    assert 3 <= len(dataset.splits["validation"]) <= 5
    test = dataset.splits["test"].set_index("text")["label"]
    assert test["glad and amused dev"] == "joy"
    assert "nothing much dev" not in test.index and "happy yet sad dev" not in test.index
    (summary,) = dataset.summary.values()
    assert summary["kind"] == "goemotions" and summary["label_set"] == "six"
    assert summary["dropped_unmapped"]["test"] == 1 and summary["dropped_ambiguous"]["test"] == 1


def test_ekman_keeps_neutral_and_groups_joy(tmp_path):
    dataset = load_emotion_dataset(write_goemotions(tmp_path / "goemotions"), label_set="ekman")
    assert dataset.labels == ("anger", "fear", "joy", "neutral", "sadness", "surprise")
    test = dataset.splits["test"].set_index("text")["label"]
    assert test["nothing much dev"] == "neutral"
    assert "happy yet sad dev" not in test.index  # joy and sadness: still two emotions


def test_several_sources_join_each_row_tagged_with_its_source(tmp_path):
    emotion = write_tiny_dataset(tmp_path / "emotion", train=30, validation=12, test=12)
    goemotions = write_goemotions(tmp_path / "goemotions")
    dataset = load_emotion_dataset(f"{emotion},{goemotions}")
    assert dataset.source == f"{emotion.resolve()} + {goemotions.resolve()}"
    counts = dataset.splits["test"]["source"].value_counts().to_dict()
    assert counts == {str(emotion.resolve()): 12, str(goemotions.resolve()): 41}
    assert set(dataset.summary) == {str(emotion.resolve()), str(goemotions.resolve())}
    # With ekman named, dair-ai/emotion-style labels go through it too: love joins joy.
    ekman = load_emotion_dataset(f"{emotion},{goemotions}", label_set="ekman")
    assert "love" not in ekman.labels and set(ekman.label_set["map"]) == {"emotion", "goemotions"}


def test_with_a_test_tsv_dev_is_validation_and_train_does_not_depend_on_what_is_asked(tmp_path):
    folder = write_goemotions(tmp_path / "goemotions")
    carved = load_emotion_dataset(folder)
    for splits in (("train",), ("train", "test"), ("train", "validation", "test")):
        train = load_emotion_dataset(folder, splits=splits).splits["train"]
        assert train.equals(carved.splits["train"]), splits  # no validation row ever leaks into train
    (folder / "test.tsv").write_text((folder / "dev.tsv").read_text())
    official = load_emotion_dataset(folder)
    assert len(official.splits["validation"]) == len(official.splits["test"]) == 41
    assert len(official.splits["train"]) == 41  # nothing carved: dev is the validation split


def test_a_broken_goemotions_line_and_an_unknown_label_set_say_what_to_fix(tmp_path):
    folder = write_goemotions(tmp_path / "goemotions")
    with (folder / "dev.tsv").open("a") as handle:
        handle.write("no label ids here\n")
    with pytest.raises(DataError, match=r"dev\.tsv:44: expected text<TAB>label ids \(0\.\.27"):
        load_emotion_dataset(folder)
    (folder / "dev.tsv").write_text("a negative id\t-1\tx\n")
    with pytest.raises(DataError, match=r"dev\.tsv:1: expected"):
        load_emotion_dataset(folder)
    # A CSV folder that happens to hold a labels.txt is still a CSV folder.
    csv_folder = write_tiny_dataset(tmp_path / "csv", train=30, validation=12, test=12)
    (csv_folder / "labels.txt").write_text("anger\nfear\n")
    assert load_emotion_dataset(csv_folder).summary[str(csv_folder.resolve())]["kind"] == "emotion"
    with pytest.raises(
        ValueError, match=r"unknown label set 'plutchik'; choose from \['six', 'ekman', 'all'\]"
    ):
        label_set_named("plutchik")


def test_the_cli_refuses_an_unknown_label_set_and_a_missing_gpu(
    isolated_env, tiny_data, tiny_base_model, monkeypatch
):
    unknown = cli("train", "--data", str(tiny_data), "--label-set", "plutchik")
    assert unknown.exit_code == 2 and "unknown label set 'plutchik'" in unknown.output
    # As on every machine here: no GPU. auto means the CPU, and asking for a GPU stops before any work.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu" and resolve_device("cpu").type == "cpu"
    missing = cli(
        "train", "--data", str(tiny_data), "--base-model", str(tiny_base_model), "--no-progress",
        env={"EMOTION_DEVICE": "cuda"},
    )  # fmt: skip
    assert missing.exit_code == 2 and "EMOTION_DEVICE=cuda, but torch sees no CUDA GPU" in missing.output
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # where there is one
    assert resolve_device("auto").type == "cuda" and resolve_device("cpu").type == "cpu"


def test_the_model_card_carries_the_mapping_the_sources_and_the_device(
    isolated_env, tmp_path, tiny_base_model
):
    emotion = write_tiny_dataset(tmp_path / "emotion", train=60, validation=24, test=24)
    goemotions = write_goemotions(tmp_path / "goemotions")
    settings = TrainingSettings(device="cpu", promotion_floor=0.0)
    outcome = train_and_register(
        settings,
        TINY_TRAINING.model_copy(update={"epochs": 1}),
        f"{emotion},{goemotions}",
        str(tiny_base_model),
        with_baseline=False,
        progress=False,
    )
    assert outcome.device == "cpu"
    assert set(outcome.test_by_source) == {"emotion", "goemotions"}
    assert outcome.test_by_source["goemotions"]["rows"] == 41
    card = load_bundle(connect(settings), settings, alias="challenger").card
    assert card["training_device"] == "cpu"
    assert card["label_set"]["name"] == "six" and card["label_set"]["map"]["goemotions"]["grief"] == "sadness"
    assert {entry["kind"] for entry in card["data"].values()} == {"emotion", "goemotions"}
    assert card["test_by_source"]["emotion"]["rows"] == 24
