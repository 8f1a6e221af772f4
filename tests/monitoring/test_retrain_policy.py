"""The retrain policy (a pure function) and how feedback is folded into the retraining data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from monitoring.retrain import RetrainPolicy, assemble_retrain_data, retrain_decision
from training.data import EmotionDataset

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
POLICY = RetrainPolicy(accuracy_floor=0.85, min_new_labels=200, cooldown=timedelta(hours=24))


@pytest.mark.parametrize(
    ("drift", "accuracy", "labels", "last", "retrain", "reason"),
    [
        (True, None, 500, None, True, "dataset drift detected; 500 new labelled rows"),
        (False, 0.80, 500, None, True, "live accuracy 0.8000 is below the floor 0.8500"),
        (True, 0.80, 500, None, True, "dataset drift detected and live accuracy 0.8000"),
        (False, 0.90, 500, None, False, "no drift, live accuracy 0.9000 clears the floor"),
        (False, None, 500, None, False, "no drift"),
        (None, None, 500, None, False, "no verdict: not enough data"),
        (True, None, 199, None, False, "only 199 new labelled rows (need 200)"),
        (True, None, 500, NOW - timedelta(hours=23), False, "cooldown lasts until 2026-11-22T13:00:00"),
        (True, None, 500, NOW - timedelta(hours=24), True, "dataset drift detected"),
        (None, 0.5, 500, None, True, "live accuracy 0.5000 is below the floor"),
    ],
)
def test_retrain_decision(drift, accuracy, labels, last, retrain, reason):
    decision = retrain_decision(POLICY, drift, accuracy, labels, last, NOW)
    assert decision.retrain is retrain
    assert reason in decision.reason


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
    assert data.feedback_holdout_rows == 1 and data.feedback_train_rows == 4
    train = data.dataset.splits["train"].set_index("text")["label"]
    assert train["a"] == "anger"  # the feedback label replaces the original one
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
    from emotion_ops.settings import Settings
    from monitoring.retrain import retrain_and_promote

    settings = Settings(var_dir=tmp_path, retrain_config={"epoch": 2})  # 'epochs'
    with pytest.raises(ValueError, match=r"unknown training option\(s\) \['epoch'\]"):
        retrain_and_promote(settings, store=None)


def test_a_handful_of_labels_cannot_set_live_accuracy():
    policy = RetrainPolicy(accuracy_floor=0.85, min_new_labels=1, min_accuracy_labels=50)
    few = retrain_decision(policy, False, 0.0, 500, None, NOW, labelled_rows=1)
    assert few.retrain is False and "1 labelled rows in the window (need 50)" in few.reason
    enough = retrain_decision(policy, False, 0.5, 500, None, NOW, labelled_rows=50)
    assert enough.retrain is True


def test_the_curated_test_split_is_judged_on_its_own():
    times = pd.date_range("2026-11-01", periods=5, freq="h", tz="UTC")
    feedback = pd.DataFrame(
        {"text": ["f1", "f2", "f3", "f4", "f5"], "label": ["joy"] * 5, "feedback_at": times}
    )
    data = assemble_retrain_data(_dataset(), feedback, holdout_share=0.4)
    assert set(data.gate_sets) == {"test split", "held-out feedback"}
    assert list(data.gate_sets["test split"].splits["test"]["text"]) == ["t1", "t2"]
    assert list(data.gate_sets["held-out feedback"].splits["test"]["text"]) == ["f4", "f5"]


def test_webhook_retries_then_gives_up_without_naming_its_url():
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from monitoring.retrain import WebhookFailed, post_webhook

    answers = [503, 503, 202]
    seen = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["content-length"]))
            seen.append(self.path)
            self.send_response(answers.pop(0) if answers else 500)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/hook?token=s3cret"
    try:
        line = post_webhook(url, {"event": "x"}, attempts=3, backoff_seconds=0.01)
        assert line == "webhook answered 202 (attempt 3 of 3)" and "s3cret" not in line
        with pytest.raises(WebhookFailed) as failed:
            post_webhook(url, {"event": "x"}, attempts=2, backoff_seconds=0.01)
        assert "after 2 attempt(s): answered 500" in str(failed.value)
        assert "s3cret" not in str(failed.value) and len(seen) == 5
    finally:
        server.shutdown()
