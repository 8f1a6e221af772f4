"""How feedback is folded into the retraining data, and what the retrain refuses up front."""

from __future__ import annotations

import pandas as pd
import pytest

from core.settings import TrainingSettings
from training.data import EmotionDataset
from training.retrain import assemble_retrain_data, retrain_and_promote


def _dataset() -> EmotionDataset:
    splits = {
        "train": pd.DataFrame({"text": ["a", "b", "c", "shared"], "label": ["joy", "joy", "anger", "joy"]}),
        "validation": pd.DataFrame({"text": ["v"], "label": ["joy"]}),
        "test": pd.DataFrame({"text": ["t1", "t2"], "label": ["joy", "anger"]}),
    }
    return EmotionDataset(splits=splits, labels=("anger", "joy"), source="base")


def test_feedback_joins_train_deduplicated_and_the_newest_slice_is_held_out():
    times = pd.date_range("2026-11-01", periods=6, freq="h", tz="UTC")
    feedback = pd.DataFrame(
        {
            "text": ["a", "new1", "new2", "t1", "odd", "new3"],
            "label": ["anger", "joy", "anger", "anger", "sarcasm", "joy"],
            "feedback_at": times,
        }
    )
    data = assemble_retrain_data(_dataset(), feedback, holdout_share=0.2)
    assert data.dropped_unknown_labels == 1  # 'sarcasm' is not a label the model knows
    assert data.feedback_holdout_rows == 1 and data.feedback_train_rows == 3
    train = data.dataset.splits["train"].set_index("text")["label"]
    assert train["a"] == "joy" and data.curated_kept == 1  # feedback never relabels curated data
    assert {"new1", "new2"} <= set(train.index)
    # Neither a test text nor the held-out newest feedback ('new3') is trained on.
    assert "t1" not in train.index and "new3" not in train.index
    assert train.index.is_unique
    gate = data.gate_set.splits["test"].set_index("text")["label"]
    assert set(gate.index) == {"t1", "t2", "new3"}
    assert gate["t1"] == "joy"  # the curated test split is never relabelled
    assert data.dataset.splits["validation"].equals(_dataset().splits["validation"])


def test_without_a_holdout_the_gate_runs_on_the_test_split():
    feedback = pd.DataFrame(
        {"text": ["x"], "label": ["joy"], "feedback_at": pd.to_datetime(["2026-11-01"], utc=True)}
    )
    data = assemble_retrain_data(_dataset(), feedback, holdout_share=0.0)
    assert list(data.gate_set.splits["test"]["text"]) == ["t1", "t2"]
    assert "x" in set(data.dataset.splits["train"]["text"])


def test_a_mistyped_retrain_option_is_refused_before_training(tmp_path):
    settings = TrainingSettings(var_dir=tmp_path, retrain_config={"epoch": 2})  # 'epochs'
    with pytest.raises(ValueError, match=r"unknown training option\(s\) \['epoch'\]"):
        retrain_and_promote(settings, store=None)


def test_the_curated_test_split_is_judged_on_its_own():
    times = pd.date_range("2026-11-01", periods=5, freq="h", tz="UTC")
    feedback = pd.DataFrame(
        {"text": ["f1", "f2", "f3", "f4", "f5"], "label": ["joy"] * 5, "feedback_at": times}
    )
    data = assemble_retrain_data(_dataset(), feedback, holdout_share=0.4)
    assert set(data.gate_sets) == {"test split", "held-out feedback"}
    assert list(data.gate_sets["test split"].splits["test"]["text"]) == ["t1", "t2"]
    assert list(data.gate_sets["held-out feedback"].splits["test"]["text"]) == ["f4", "f5"]


def test_multi_label_feedback_keeps_every_label_and_drops_unknown_ones():
    base = EmotionDataset(
        splits={
            "train": pd.DataFrame({"text": ["a", "b"], "label": ["joy", "anger,joy"]}),
            "validation": pd.DataFrame({"text": ["v"], "label": ["joy"]}),
            "test": pd.DataFrame({"text": ["t"], "label": ["anger"]}),
        },
        labels=("anger", "joy"),
        source="base",
        multilabel=True,
    )
    feedback = pd.DataFrame(
        {
            "text": ["n1", "n2", "n3"],
            "label": ["anger,joy", "joy,sarcasm", "anger"],
            "feedback_at": pd.date_range("2026-11-01", periods=3, freq="h", tz="UTC"),
        }
    )
    data = assemble_retrain_data(base, feedback, holdout_share=0.0)
    assert data.dropped_unknown_labels == 1  # 'sarcasm' is not one of the model's labels
    assert data.dataset.multilabel and all(gate.multilabel for gate in data.gate_sets.values())
    train = data.dataset.splits["train"].set_index("text")["label"]
    assert train["n1"] == "anger,joy" and data.dataset.label_matrix("train").sum() == 1 + 2 + 2 + 1


def test_a_multi_label_champion_retrains_on_its_feedback(
    isolated_env, tiny_base_model, tmp_path, monkeypatch
):
    from datetime import UTC, datetime

    from core.registry import CHALLENGER, connect, load_bundle
    from core.store import Store
    from tests.utils.factories import TINY_TRAINING, logged_row, write_tiny_multilabel_dataset
    from training.pipeline import train_and_register
    from training.promote import promote

    data = write_tiny_multilabel_dataset(tmp_path / "data")
    monkeypatch.setenv("EMOTION_DATA_DIR", str(data))  # the retrain reads its data where a deployment does
    settings = TrainingSettings(
        task="multilabel",
        base_model=str(tiny_base_model),
        promotion_floor_multilabel=0.0,
        retrain_config={"epochs": 3, "learning_rate": 1e-2, "batch_size": 16, "max_length": 32},
    )
    train_and_register(settings, TINY_TRAINING, with_baseline=False, progress=False)
    assert promote(settings).decision.passed
    store = Store.open(settings.log_store_url)
    now = datetime.now(UTC)
    store.predictions.insert_many(
        [
            logged_row(
                request_id=f"00000000-0000-4000-8000-{index:012d}",
                created_at=now,
                model_name=settings.model_name,
                text=f"i feel glad and lonely {index}",
                confidence=0.6,
                feedback_label="joy,sadness",
                feedback_at=now,
            )
            for index in range(20)
        ]
    )
    said = retrain_and_promote(settings, store.predictions)
    assert "retrained version 2 on 16 feedback rows (+4 held out for the gate)" in said, said
    retrained = load_bundle(connect(settings), settings, alias=CHALLENGER)
    assert retrained.version == "2" and retrained.task == "multilabel"
    assert retrained.card["data"]["feedback"]["rows"] == {"train": 16, "test": 4}
    assert retrained.card["data_source"].startswith(str(data.resolve()))
