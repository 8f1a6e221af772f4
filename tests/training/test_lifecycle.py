"""Train → register → promote → load → refuse → rollback, against a real SQLite MLflow registry."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from core.registry import CHALLENGER, CHAMPION
from tests.utils.cli import cli, registry_client

MODEL = "emotion-classifier"
client = registry_client


@pytest.fixture
def train_args(tiny_data, tiny_base_model):
    return ["--data", str(tiny_data), "--base-model", str(tiny_base_model), "--no-progress"]


def test_model_lifecycle(isolated_env, train_args, tiny_data, monkeypatch):
    monkeypatch.setenv("EMOTION_PROMOTION_FLOOR", "0.5")
    # A random two-layer model sits on a plateau for a while: no early stop, brisk learning rate.
    good = ["--epochs", "15", "--learning-rate", "1e-2", "--batch-size", "16", "--patience", "100"]

    first = cli("train", *train_args, *good, "--seed", "1")
    assert first.exit_code == 0, first.output
    assert "registered emotion-classifier version 1 as 'challenger'" in first.output
    assert "baseline (TF-IDF + LR)" in first.output
    assert str(client().get_model_version_by_alias(MODEL, CHALLENGER).version) == "1"
    assert (isolated_env / "mlflow.db").is_file()

    # Both runs are tracked, with test metrics and the confusion matrix.
    runs = mlflow.search_runs(experiment_names=[MODEL])
    assert set(runs["tags.model_kind"]) == {"baseline", "distilbert"}
    assert runs["metrics.test_macro_f1"].notna().all()
    finetune_run = runs[runs["tags.model_kind"] == "distilbert"].iloc[0]
    artifacts = {item.path for item in client().list_artifacts(finetune_run.run_id)}
    assert {"confusion_matrix_test.png", "evaluation_test.json"} <= artifacts
    assert finetune_run["params.base_model_origin"] == "local"

    promoted = cli("promote", "--data", str(tiny_data))
    assert promoted.exit_code == 0, promoted.output
    assert "PROMOTED: version 1: first champion" in promoted.output

    # The champion loads back through the registry alias and predicts label names.
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@{CHAMPION}")
    predictions = model.predict(pd.DataFrame({"text": ["i feel so happy", "i am furious and mad"]}))
    assert list(predictions["emotion"]) == ["joy", "anger"]
    assert predictions.filter(like="p_").sum(axis=1).round(4).eq(1.0).all()

    # The artifact carries what serving and monitoring need.
    local = mlflow.artifacts.download_artifacts(f"models:/{MODEL}@{CHAMPION}")
    card = json.loads(Path(local, "artifacts", "model_card.json").read_text())
    assert card["labels"] == ["anger", "fear", "joy", "love", "sadness", "surprise"]
    assert card["test"]["macro_f1"] > 0.5
    reference = pd.read_parquet(f"{local}/artifacts/reference.parquet")
    assert list(reference.columns[:4]) == ["text", "label", "emotion", "confidence"]
    assert len(reference) == 60

    second = cli("train", *train_args, *good, "--seed", "1", "--no-baseline")
    assert second.exit_code == 0, second.output
    second_promotion = cli("promote", "--data", str(tiny_data), "--tolerance", "1.0")
    assert second_promotion.exit_code == 0, second_promotion.output
    assert str(client().get_model_version_by_alias(MODEL, CHAMPION).version) == "2"

    # A barely trained challenger is refused and the champion stays where it was.
    weak = cli("train", *train_args, "--max-steps", "1", "--learning-rate", "1e-6", "--no-baseline")
    assert weak.exit_code == 0, weak.output
    refused = cli("promote", "--data", str(tiny_data))
    assert refused.exit_code == 1
    assert "REFUSED: version 3" in refused.output
    assert str(client().get_model_version_by_alias(MODEL, CHAMPION).version) == "2"
    tags = client().get_model_version(MODEL, "3").tags
    assert tags["promotion.decision"] == "refused"
    assert "below" in tags["promotion.reason"]

    listing = cli("models")
    assert listing.exit_code == 0
    for version in ("1", "2", "3"):
        assert f"│ {version} " in listing.output

    rolled = cli("rollback")
    assert rolled.exit_code == 0, rolled.output
    assert "from version 2 to version 1" in rolled.output
    assert str(client().get_model_version_by_alias(MODEL, CHAMPION).version) == "1"

    again = cli("rollback")
    assert again.exit_code == 2
    assert "replaced no earlier champion" in again.output


def test_the_next_promote_does_not_undo_a_rollback(isolated_env, train_args, tiny_data, monkeypatch):
    monkeypatch.setenv("EMOTION_PROMOTION_FLOOR", "0.0")
    quick = ["--max-steps", "2", "--no-baseline"]
    for version in ("1", "2"):
        assert cli("train", *train_args, *quick).exit_code == 0
        promoted = cli("promote", "--data", str(tiny_data), "--tolerance", "1.0")
        assert promoted.exit_code == 0, promoted.output
        assert str(client().get_model_version_by_alias(MODEL, CHAMPION).version) == version
    assert cli("rollback").exit_code == 0
    # 'challenger' still pointed at version 2, so 'promote' used to put it straight back.
    assert "challenger" not in (client().get_model_version(MODEL, "2").aliases or [])
    again = cli("promote", "--data", str(tiny_data), "--tolerance", "1.0")
    assert again.exit_code == 2 and "has no 'challenger'" in again.output
    assert str(client().get_model_version_by_alias(MODEL, CHAMPION).version) == "1"


def test_cli_errors_are_one_line_without_traceback(isolated_env, tiny_base_model, tmp_path):
    missing = cli("train", "--data", str(tmp_path / "nowhere"), "--base-model", str(tiny_base_model))
    assert missing.exit_code == 2
    assert "error: data folder" in missing.output
    assert "Traceback" not in missing.output

    nothing = cli("promote", "--data", str(tmp_path))
    assert nothing.exit_code == 2
    assert "has no 'challenger' version" in nothing.output

    assert cli("rollback").exit_code == 2
    bad_profile = cli("train", "--profile", "huge")
    assert bad_profile.exit_code == 2 and "unknown profile 'huge'" in bad_profile.output
    bad_value = cli("train", "--batch-size", "0", "--data", str(tmp_path))
    assert bad_value.exit_code == 2 and "batch_size" in bad_value.output
