"""The distilled student: built from the champion's own layers, trained on its outputs (and on
logged texts), registered with a card naming its teacher, gated on every set, and served on both
runtimes and precisions with its own novelty index."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from core.inference.runtime import load_predictor
from core.registry import CHAMPION, RegistryError, connect, load_bundle, version_by_alias
from core.settings import TrainingSettings
from tests.monitoring.test_labels import log_rows
from tests.utils.cli import cli
from tests.utils.factories import TINY_TRAINING, write_tiny_multilabel_dataset
from training.data import load_emotion_dataset
from training.distill import DistillConfig, distill_and_register, distillation_loss, student_from
from training.evaluate import tune_thresholds
from training.pipeline import train_and_register
from training.promote import accuracy_gate, promote


def _classifier(layers: int, model_type: str = "distilbert"):
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        DistilBertConfig,
        DistilBertForSequenceClassification,
    )

    torch.manual_seed(0)
    if model_type == "bert":
        config = BertConfig(
            vocab_size=50,
            hidden_size=16,
            num_hidden_layers=layers,
            num_attention_heads=2,
            intermediate_size=20,
        )
        return BertForSequenceClassification(config)
    config = DistilBertConfig(vocab_size=50, dim=16, n_layers=layers, n_heads=2, hidden_dim=20, num_labels=3)
    return DistilBertForSequenceClassification(config)


@pytest.mark.parametrize("model_type", ["distilbert", "bert"])
def test_the_student_keeps_evenly_spaced_layers_of_its_teacher(model_type):
    teacher = _classifier(6, model_type)
    student, kept = student_from(teacher, 3)
    assert kept == [0, 2, 4]
    layers = lambda model: (  # noqa: E731
        model.distilbert.transformer.layer if model_type == "distilbert" else model.bert.encoder.layer
    )
    assert len(layers(student)) == 3
    for position, index in enumerate(kept):
        for (name, mine), theirs in zip(
            layers(student)[position].state_dict().items(),
            layers(teacher)[index].state_dict().values(),
            strict=True,
        ):
            assert torch.equal(mine, theirs), name
    # Copies, not shared: training the student leaves the champion as it was.
    first = next(layers(student)[0].parameters())
    with torch.no_grad():
        first.add_(1.0)
    assert not torch.equal(first, next(layers(teacher)[0].parameters()))
    count = "n_layers" if model_type == "distilbert" else "num_hidden_layers"
    assert getattr(student.config, count) == 3 and getattr(teacher.config, count) == 6
    ids = torch.tensor([[1, 5, 7, 2]])
    assert student(input_ids=ids).logits.shape == teacher(input_ids=ids).logits.shape


@pytest.mark.parametrize(
    ("total", "layers", "kept"), [(6, 4, [0, 2, 3, 5]), (12, 3, [0, 4, 8]), (6, 2, [0, 3])]
)
def test_kept_layers_are_spread_over_the_teacher(total, layers, kept):
    assert student_from(_classifier(total), layers)[1] == kept


def test_a_student_needs_fewer_layers_than_its_teacher():
    with pytest.raises(ValueError, match="fewer layers than its teacher's 2; got 2"):
        student_from(_classifier(2), 2)
    assert student_from(_classifier(2), 1)[1] == [0]


def test_the_soft_loss_is_zero_only_where_the_student_matches_its_teacher():
    teacher = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    none = torch.zeros(2, dtype=torch.bool)
    targets = torch.tensor([0, 1])
    same = distillation_loss(teacher.clone(), teacher, targets, none, 2.0, 0.5, None, multilabel=False)
    other = distillation_loss(teacher.flip(1), teacher, targets, none, 2.0, 0.5, None, multilabel=False)
    assert same.item() == pytest.approx(0.0, abs=1e-6) and other.item() > 0.1
    # Rows without a label (logged traffic) add no hard loss: the result is the soft loss alone.
    hard = torch.nn.CrossEntropyLoss()
    assert distillation_loss(teacher.flip(1), teacher, targets, none, 2.0, 0.5, hard, False) == other
    labelled = torch.tensor([True, False])
    with_label = distillation_loss(teacher.flip(1), teacher, targets, labelled, 2.0, 0.5, hard, False)
    assert with_label.item() == pytest.approx(
        other.item() + 0.5 * hard(teacher.flip(1)[:1], targets[:1]).item(), rel=1e-5
    )


def test_the_accuracy_gate_allows_the_tolerance_and_no_more():
    assert accuracy_gate(0.915, 0.92, 0.005).passed  # exactly the tolerance (despite floating point)
    refused = accuracy_gate(0.914, 0.92, 0.005)
    assert not refused.passed and "0.9140 vs champion 0.9200 (-0.0060, tolerance 0.0050)" in refused.reason


def test_distill_registers_a_gated_student_that_names_its_teacher_and_learned_from_traffic(
    registry_copy, tiny_data, monkeypatch, tmp_path
):
    # Words outside the tiny data, so no logged text is also a train, validation or test text.
    traffic = [f"i feel so happy and glad today, logged {i}" for i in range(30)] + ["logged again"] * 5
    # A logged text that is also a test text: the student never trains on it.
    test_texts = pd.read_csv(tiny_data / "test.csv")["text"].tolist()
    # Another data set the gate judges: its test texts never train the student either, even
    # logged with white space around them.
    gate_data = tmp_path / "gate-data"
    gate_data.mkdir()
    for split in ("train", "validation"):
        (gate_data / f"{split}.csv").write_text((tiny_data / f"{split}.csv").read_text())
    gate_texts = ["so glad and happy, gate one", "so sad and lonely, gate two"]
    pd.DataFrame({"text": gate_texts, "label": ["joy", "sadness"]}).to_csv(
        gate_data / "test.csv", index=False
    )
    log_rows([*traffic, test_texts[0], test_texts[1], f"  {gate_texts[0]}\n", gate_texts[1]])
    monkeypatch.setenv("EMOTION_DISTILL_TOLERANCE", "1.0")  # the tiny model's scores are noise
    monkeypatch.setenv("EMOTION_PROMOTION_FLOOR", "0")
    result = cli(
        "distill", "--layers", "1", "--steps", "40", "--traffic-rows", "100",
        "--gate-data", str(gate_data), "--no-progress",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "version 2 as 'challenger': a student of version 1 keeping layers [0] of 2" in result.output
    assert "promoted to champion" in result.output

    settings = TrainingSettings()
    client = connect(settings)
    student = load_bundle(client, settings)
    assert (
        student.version == "2" and str(version_by_alias(client, settings.model_name, CHAMPION).version) == "2"
    )
    card = student.card
    teacher = card["distillation"]["teacher"]
    assert teacher["name"] == settings.model_name and teacher["version"] == "1" and teacher["layers"] == 2
    assert card["distillation"]["kept_layers"] == [0] and card["distillation"]["temperature"] == 2.0
    learned = card["distillation"]["texts"]
    # Every train text, and each distinct logged text once ("logged again" five times).
    assert sorted(learned.values()) == [31, 240]
    assert card["base_model"] == {"name": f"{settings.model_name} v1", "origin": "distilled"}
    assert json.loads((student.model_dir / "config.json").read_text())["n_layers"] == 1
    tags = client.get_model_version(settings.model_name, "2").tags
    assert tags["distilled_from"] == "1" and tags["promotion.accuracy_tolerance"] == "1.0"
    assert "test split accuracy" in tags["promotion.reason"] and "gate-data" in tags["promotion.gate_sets"]
    assert json.loads(tags["distill.gate_data"]) == [str(gate_data)] and tags["distill.tolerance"] == "1.0"

    # Served on both runtimes and precisions, each agreeing with PyTorch fp32 on most texts.
    texts = ["i feel so sad and lonely", "i am furious", "i feel happy", "so scared today"]
    reference = load_predictor(student.model_dir, max_length=32).predict_proba(texts)
    for runtime in ("torch", "onnx"):
        for quantize in (False, True):
            predictor = load_predictor(student.model_dir, runtime=runtime, quantize=quantize, max_length=32)
            probabilities = predictor.predict_proba(texts)
            assert probabilities.shape == reference.shape
            tolerance = 0.1 if quantize else 1e-4
            assert np.abs(probabilities - reference).max() < tolerance, (runtime, quantize)
    # Its novelty index embeds the reference texts with the student's own representation.
    predictor = student.predictor()
    index = student.novelty_index(predictor, "torch-fp32")
    assert index is not None and card["novelty"]["threshold"] == pytest.approx(index.threshold, rel=1e-4)


def test_a_student_that_loses_accuracy_stays_challenger_and_promote_judges_it_the_same_way(
    registry_copy, monkeypatch
):
    monkeypatch.setenv("EMOTION_DISTILL_TOLERANCE", "0.0")
    monkeypatch.setenv("EMOTION_PROMOTION_FLOOR", "0")
    # A learning rate of 5 wrecks the student at its first step: it must lose to its teacher.
    outcome = distill_and_register(TrainingSettings(), DistillConfig(layers=1, steps=2, learning_rate=5.0))
    assert not outcome.promoted and not outcome.gate.decision.passed, outcome.gate.decision.reason
    assert "test split accuracy: FAIL" in outcome.gate.decision.reason
    settings = TrainingSettings()
    client = connect(settings)
    assert str(version_by_alias(client, settings.model_name, CHAMPION).version) == "1"
    assert str(version_by_alias(client, settings.model_name, "challenger").version) == "2"
    tags = client.get_model_version(settings.model_name, "2").tags
    assert tags["distill.tolerance"] == "0.0" and tags["distill.gate_data"] == "[]"
    # A later 'promote' runs the distillation gate again (accuracy too), not the plain one,
    # with the tolerance tagged on the student (not today's setting).
    monkeypatch.setenv("EMOTION_DISTILL_TOLERANCE", "1.0")
    again = cli("promote")
    assert again.exit_code == 1 and "test split accuracy: FAIL" in again.output, again.output
    assert "tolerance 0.0000" in again.output
    assert str(version_by_alias(client, settings.model_name, CHAMPION).version) == "1"


def test_a_student_is_not_judged_against_a_champion_that_moved(registry_copy, monkeypatch):
    """A retrain promoted while the student trained: the student waits, nothing is judged."""
    from training import distill

    settings = TrainingSettings()
    client = connect(settings)
    real_register = distill.evaluate_and_register

    def register_then_move_champion(*args, **kwargs):
        version, test, by_source = real_register(*args, **kwargs)
        client.set_registered_model_alias(settings.model_name, CHAMPION, version)  # someone promotes it
        client.set_registered_model_alias(settings.model_name, "challenger", "1")
        return version, test, by_source

    monkeypatch.setattr(distill, "evaluate_and_register", register_then_move_champion)
    with pytest.raises(RegistryError, match="the champion moved from version 1 to 2 while distilling"):
        distill_and_register(settings, DistillConfig(layers=1, steps=2))
    assert "promotion.decision" not in client.get_model_version(settings.model_name, "2").tags


def test_distill_says_what_is_wrong_before_any_training(registry_copy, tmp_path):
    wrong = cli("distill", "--layers", "2", "--no-progress")
    assert wrong.exit_code == 2 and "fewer layers than its teacher's 2; got 2" in wrong.output
    missing = cli("distill", "--gate-data", str(tmp_path / "nowhere"), "--no-progress")
    assert missing.exit_code == 2 and "nowhere" in missing.output
    challenger = version_by_alias(connect(TrainingSettings()), "emotion-classifier", "challenger")
    assert str(challenger.version) == "1"  # nothing was registered


def test_a_multi_label_student_keeps_its_kind_and_tunes_its_thresholds(
    isolated_env, tiny_base_model, tmp_path, monkeypatch
):
    data = write_tiny_multilabel_dataset(tmp_path / "data")
    monkeypatch.setenv("EMOTION_DATA_DIR", str(data))
    settings = TrainingSettings(task="multilabel", promotion_floor_multilabel=0.0, distill_tolerance=1.0)
    train_and_register(
        settings, TINY_TRAINING, str(data), str(tiny_base_model), with_baseline=False, progress=False
    )
    assert promote(settings).decision.passed
    outcome = distill_and_register(settings, DistillConfig(layers=1, steps=30))
    assert outcome.promoted and outcome.evaluation.micro_f1 is not None
    assert "accuracy" not in outcome.gate.decision.reason  # a multi-label model is judged on macro-F1
    student = load_bundle(connect(settings), settings)
    assert student.task == "multilabel" and set(student.thresholds) == set(student.labels)
    # Tuned again for the student, on its own validation probabilities (not the teacher's copy).
    dataset = load_emotion_dataset(str(data), multilabel=True)
    probabilities = student.predictor().predict_proba(dataset.texts("validation"))
    order = [student.labels.index(label) for label in dataset.labels]
    tuned = tune_thresholds(dataset.label_matrix("validation"), probabilities[:, order], dataset.labels)
    assert student.thresholds == pytest.approx(tuned)
    assert student.card["distillation"]["teacher"]["version"] == "1"
    predictor = load_predictor(student.model_dir, runtime="onnx", quantize=True, max_length=32)
    assert predictor.multilabel and predictor.decisions(predictor.predict_proba(["i feel happy"])).any()
