"""``emotion-ops register``: a model fine-tuned elsewhere goes behind the same gate."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoModelForSequenceClassification, AutoTokenizer

from core.registry import CHALLENGER, connect, load_bundle
from core.settings import TrainingSettings
from tests.utils.cli import cli

# Another team's order and spelling of the six emotions (dair-ai/emotion's hub order, capitalised).
THEIR_LABELS = ("Sadness", "Joy", "Love", "Anger", "Fear", "Surprise")


def save_classifier(base: Path, folder: Path, labels: tuple[str, ...], **config) -> Path:
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=len(labels), id2label=dict(enumerate(labels)), **config
    )
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(base).save_pretrained(folder)
    return folder


def test_a_model_from_elsewhere_is_scored_and_registered_as_challenger(
    isolated_env, tiny_base_model, tiny_data, tmp_path
):
    theirs = save_classifier(tiny_base_model, tmp_path / "theirs", THEIR_LABELS)
    result = cli("register", str(theirs), "--data", str(tiny_data), "--max-length", "32")
    assert result.exit_code == 0, result.output
    assert "registered emotion-classifier version 1 as 'challenger'" in result.output
    assert "test accuracy" in result.output and "training" not in result.output
    settings = TrainingSettings()
    bundle = load_bundle(connect(settings), settings, alias=CHALLENGER)
    card = bundle.card
    # Its labels by name, lower-cased, in its own id order; scored on the test split.
    assert card["labels"] == [label.lower() for label in THEIR_LABELS]
    assert card["base_model"] == {"name": str(theirs), "origin": "registered"}
    assert card["training_config"] is None and card["max_length"] == 32
    assert 0 <= card["test"]["accuracy"] <= 1
    assert len(bundle.reference()) > 0
    assert bundle.predictor().labels == tuple(card["labels"])


def test_a_model_the_data_cannot_judge_is_refused(isolated_env, tiny_base_model, tiny_data, tmp_path):
    three = save_classifier(tiny_base_model, tmp_path / "three", ("positive", "negative", "neutral"))
    refused = cli("register", str(three), "--data", str(tiny_data))
    assert refused.exit_code == 2 and "predicts ['negative', 'neutral', 'positive']" in refused.output
    multi = save_classifier(
        tiny_base_model, tmp_path / "multi", THEIR_LABELS, problem_type="multi_label_classification"
    )
    # A multi-label model goes under the multi-label name, so it cannot replace the single-label champion.
    registered = cli("register", str(multi), "--data", str(tiny_data))
    assert (
        registered.exit_code == 0
        and "registered emotion-classifier-multilabel version 1" in registered.output
    )
    missing = cli("register", str(tmp_path / "nowhere"), "--data", str(tiny_data))
    assert missing.exit_code == 2 and "cannot load a transformers model" in missing.output


def test_labels_are_matched_by_name_whatever_order_and_case_the_model_uses(
    isolated_env, registry, tiny_data, tmp_path
):
    """The tiny champion, re-saved with its classes in another order and capitalised (its output
    rows permuted to match), scores exactly what the champion scored: labels go by name, not id."""
    from core.settings import CoreSettings

    champion = load_bundle(connect(CoreSettings(var_dir=registry)), CoreSettings(var_dir=registry))
    model = AutoModelForSequenceClassification.from_pretrained(champion.model_dir)
    order = [5, 2, 0, 4, 1, 3]
    head = model.classifier
    head.weight.data, head.bias.data = head.weight.data[order].clone(), head.bias.data[order].clone()
    names = [champion.labels[index].capitalize() for index in order]
    model.config.id2label = dict(enumerate(names))
    model.config.label2id = {name: index for index, name in enumerate(names)}
    shuffled = tmp_path / "shuffled"
    model.save_pretrained(shuffled)
    AutoTokenizer.from_pretrained(champion.model_dir).save_pretrained(shuffled)

    max_length = str(champion.card["max_length"])
    assert cli("register", str(shuffled), "--data", str(tiny_data), "--max-length", max_length).exit_code == 0
    settings = TrainingSettings()
    card = load_bundle(connect(settings), settings, alias=CHALLENGER).card
    assert card["labels"] == [name.lower() for name in names]
    assert card["test"]["accuracy"] == champion.card["test"]["accuracy"]
    assert card["test"]["macro_f1"] == champion.card["test"]["macro_f1"]
