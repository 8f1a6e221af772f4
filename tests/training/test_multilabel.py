"""The multi-label model: GoEmotions' labels kept whole, sigmoid outputs with per-label thresholds
tuned on validation, its own registered name, champion and gate."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.inference.predictor import EmotionPredictor
from core.registry import CHAMPION, connect, load_bundle, version_by_alias
from core.settings import TrainingSettings
from tests.utils.cli import cli
from tests.utils.factories import (
    TINY_TRAINING,
    write_goemotions,
    write_tiny_dataset,
    write_tiny_multilabel_dataset,
)
from training.data import DataError, load_emotion_dataset
from training.evaluate import FALLBACK_THRESHOLD, evaluate_multilabel, tune_thresholds
from training.pipeline import train_and_register
from training.promote import promote
from training.train import fine_tune


def test_goemotions_keeps_every_label_of_a_comment_through_the_all_set(tmp_path):
    dataset = load_emotion_dataset(write_goemotions(tmp_path / "goemotions"), multilabel=True)
    assert dataset.multilabel and len(dataset.labels) == 28  # the set's labels, seen in train or not
    train = dataset.splits["train"]
    assert "joy,sadness" in set(train["label"]) and "amusement,joy" in set(train["label"])
    matrix = dataset.label_matrix("train")
    row = train.index[train["label"] == "joy,sadness"][0]
    assert {dataset.labels[i] for i in np.flatnonzero(matrix[row])} == {"joy", "sadness"}
    assert dataset.label_set["name"] == "all" and dataset.label_set["multi_label"] is True


def test_a_multi_label_set_needs_the_multilabel_task_and_back(tmp_path):
    folder = write_goemotions(tmp_path / "goemotions")
    with pytest.raises(DataError, match="multi-label; train it with --task multilabel"):
        load_emotion_dataset(folder, label_set="all")
    with pytest.raises(DataError, match="one label per row"):
        load_emotion_dataset(folder, label_set="six", multilabel=True)
    with pytest.raises(DataError, match="no single label id"):
        load_emotion_dataset(folder, multilabel=True).label_ids("train")


def test_a_csv_label_may_name_several_emotions(tmp_path):
    dataset = load_emotion_dataset(write_tiny_multilabel_dataset(tmp_path / "data"), multilabel=True)
    assert dataset.labels == ("anger", "fear", "joy", "love", "sadness", "surprise")
    assert dataset.label_matrix("test").sum(axis=1).max() == 2


def test_thresholds_are_tuned_per_label_and_rare_labels_keep_the_low_default():
    rng = np.random.default_rng(0)
    truth = np.zeros((400, 3))
    truth[:200, 0] = 1  # common: its positives score 0.6 and up, negatives under 0.4
    truth[:3, 2] = 1  # rare: too few positives to tune on
    probabilities = np.column_stack(
        [
            np.where(truth[:, 0] > 0, rng.uniform(0.6, 1, 400), rng.uniform(0, 0.4, 400)),
            rng.uniform(0, 1, 400),
            rng.uniform(0, 1, 400),
        ]
    )
    thresholds = tune_thresholds(truth, probabilities, ("common", "never", "rare"))
    assert 0.4 <= thresholds["common"] <= 0.6
    assert thresholds["never"] == thresholds["rare"] == FALLBACK_THRESHOLD


def test_multi_label_scores_are_over_labels_and_exact_match_over_texts():
    truth = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1]])
    decided = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 1]])
    scores = evaluate_multilabel(truth, decided, ("a", "b", "c"))
    assert scores.accuracy == pytest.approx(1 / 3)  # only the first text's whole set is right
    assert scores.micro_f1 == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))  # tp 3, fp 1, fn 1
    assert scores.per_class["a"]["f1"] == 1.0 and scores.per_class["b"]["f1"] == 0.0
    assert scores.per_class["c"]["f1"] == 1.0 and scores.macro_f1 == pytest.approx(2 / 3)
    assert scores.metrics("test_")["test_micro_f1"] == scores.micro_f1


def test_fine_tuned_multi_label_model_has_sigmoid_outputs_and_its_thresholds(tmp_path, tiny_base_model):
    dataset = load_emotion_dataset(write_tiny_multilabel_dataset(tmp_path / "data"), multilabel=True)
    result = fine_tune(str(tiny_base_model), dataset, TINY_TRAINING, progress=False)
    assert result.model.config.problem_type == "multi_label_classification"
    assert set(result.thresholds) == set(dataset.labels)
    result.model.save_pretrained(tmp_path / "model")
    result.tokenizer.save_pretrained(tmp_path / "model")
    saved = json.loads((tmp_path / "model" / "config.json").read_text())
    assert saved["label_thresholds"] == result.thresholds  # the thresholds travel with the weights

    predictor = EmotionPredictor.from_dir(tmp_path / "model", max_length=32)
    assert predictor.multilabel and predictor.task == "multilabel"
    texts = ["i feel happy and so lonely", "it is the day", "angry"]
    probabilities = predictor.predict_proba(texts)
    assert not np.allclose(probabilities.sum(axis=1), 1.0)  # independent, not shares of one
    for prediction, row in zip(predictor.predict(texts), probabilities, strict=True):
        over = {
            label for label, p, t in zip(predictor.labels, row, predictor.thresholds, strict=True) if p >= t
        }
        assert set(prediction.emotions) == (over or {prediction.emotion})
        shown = [prediction.probabilities[label] for label in prediction.emotions]
        assert shown == sorted(shown, reverse=True)


def test_single_label_predictions_list_their_one_emotion(registry):
    settings = TrainingSettings(var_dir=registry)
    predictor = load_bundle(connect(settings), settings).predictor()
    assert not predictor.multilabel
    for prediction in predictor.predict(["i am so happy", "so scared"]):
        assert prediction.emotions == (prediction.emotion,)


def test_multi_label_model_has_its_own_name_champion_and_gate(isolated_env, tiny_base_model, tmp_path):
    data = write_tiny_multilabel_dataset(tmp_path / "data")
    settings = TrainingSettings(task="multilabel", promotion_floor_multilabel=0.0)
    assert settings.model_name == "emotion-classifier-multilabel"
    outcome = train_and_register(
        settings, TINY_TRAINING, str(data), str(tiny_base_model), with_baseline=True, progress=False
    )
    assert outcome.baseline is None  # the TF-IDF baseline is single-label
    assert outcome.evaluation.micro_f1 is not None and outcome.evaluation.task == "multilabel"
    bundle = load_bundle(connect(settings), settings, alias="challenger")
    assert bundle.task == "multilabel" and set(bundle.thresholds) == set(bundle.labels)
    assert bundle.card["test"]["micro_f1"] == pytest.approx(outcome.evaluation.micro_f1)
    assert set(bundle.reference()["emotions"].str.split(",").explode()) <= set(bundle.labels)

    # The multi-label floor guards it, not the single-label one (0.70 here).
    strict = settings.model_copy(update={"promotion_floor_multilabel": 0.999})
    judged = promote(strict, str(data), move_champion=False)
    assert "floor 0.9990" in judged.decision.reason, judged.decision.reason

    result = promote(settings, str(data))
    assert result.decision.passed and result.challenger.micro_f1 == pytest.approx(outcome.evaluation.micro_f1)
    client = connect(settings)
    assert version_by_alias(client, "emotion-classifier-multilabel", CHAMPION) is not None
    assert version_by_alias(client, "emotion-classifier", CHAMPION) is None  # the single-label one untouched


def test_cli_trains_registers_and_lists_the_multilabel_model(isolated_env, tiny_base_model, tmp_path):
    data = write_tiny_multilabel_dataset(tmp_path / "data")
    trained = cli(
        "train", "--task", "multilabel", "--data", str(data), "--base-model", str(tiny_base_model),
        "--profile", "quick", "--epochs", "3", "--max-length", "32", "--no-progress",
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    assert "registered emotion-classifier-multilabel version 1" in trained.output
    assert "micro-F1" in trained.output and "exact match" in trained.output
    listed = cli("models", "--task", "multilabel")
    assert listed.exit_code == 0 and "emotion-classifier-multilabel" in listed.output

    wrong = cli("train", "--data", str(data), "--label-set", "all", "--base-model", str(tiny_base_model))
    assert wrong.exit_code == 2 and "--task multilabel" in wrong.output
    unknown = cli("train", "--task", "both", "--data", str(data))
    assert unknown.exit_code == 2 and "unknown task 'both'" in unknown.output


def test_register_brings_a_multi_label_model_and_tunes_its_missing_thresholds(
    isolated_env, tiny_base_model, tmp_path
):
    data = write_tiny_multilabel_dataset(tmp_path / "data")
    dataset = load_emotion_dataset(data, multilabel=True)
    result = fine_tune(
        str(tiny_base_model), dataset, TINY_TRAINING.model_copy(update={"epochs": 3}), progress=False
    )
    del result.model.config.label_thresholds  # as a model fine-tuned elsewhere comes
    result.model.save_pretrained(tmp_path / "theirs")
    result.tokenizer.save_pretrained(tmp_path / "theirs")

    registered = cli("register", str(tmp_path / "theirs"), "--data", str(data), "--max-length", "32")
    assert registered.exit_code == 0, registered.output
    assert "registered emotion-classifier-multilabel version 1" in registered.output
    settings = TrainingSettings(task="multilabel")
    bundle = load_bundle(connect(settings), settings, alias="challenger")
    assert bundle.task == "multilabel" and set(bundle.thresholds) == set(dataset.labels)
    assert bundle.predictor().thresholds.tolist() == pytest.approx(
        [bundle.thresholds[label] for label in bundle.labels]
    )


def test_register_refuses_a_single_label_model_as_multilabel(isolated_env, registry, tmp_path):
    settings = TrainingSettings(var_dir=registry)
    model_dir = load_bundle(connect(settings), settings).model_dir
    refused = cli(
        "register", str(model_dir), "--data", str(write_tiny_dataset(tmp_path / "d")), "--task", "multilabel"
    )
    assert refused.exit_code == 2 and "single-label model" in refused.output


def test_the_most_probable_label_joins_only_when_no_label_is_over_its_threshold():
    from core.labels import decide

    thresholds = np.array([0.9, 0.3, 0.5])
    probabilities = np.array([[0.8, 0.4, 0.1], [0.6, 0.2, 0.1]])
    # Row 1: only the second label is over its threshold; the first is likelier but under its own.
    assert decide(probabilities, thresholds).tolist() == [[False, True, False], [True, False, False]]
