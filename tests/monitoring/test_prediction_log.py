from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import sqlalchemy as sa

from monitoring.prediction_log import PredictionLogWriter, PredictionStore, redact, spool_dir_for


def _row(**overrides) -> dict:
    row = {
        "id": str(uuid.uuid4()),
        "created_at": datetime.now(UTC),
        "model_name": "emotion-classifier",
        "model_version": "1",
        "text": "i feel happy",
        "emotion": "joy",
        "confidence": 0.9,
        "probabilities": {"joy": 0.9, "sadness": 0.1},
        "latency_ms": 12.5,
        "truncated": False,
        "tokens": 5,
        "uncertain": False,
    }
    return {**row, **overrides}


def test_redact_replaces_contact_details():
    text = "mail me at jane.doe+x@example.co.uk or call +44 20 7946 0958, see https://x.io/a?b=1 now"
    assert redact(text) == "mail me at [EMAIL] or call [PHONE], see [URL] now"
    assert redact("i feel 100 percent fine today") == "i feel 100 percent fine today"


def test_spool_folders_are_per_store_and_hide_passwords(tmp_path):
    first = spool_dir_for(tmp_path, "postgresql+psycopg://u:secret@db/a")
    assert first != spool_dir_for(tmp_path, "sqlite:///var/predictions.db")
    assert first == spool_dir_for(tmp_path, "postgresql+psycopg://u:other@db/a")  # password not part of it
    assert "secret" not in str(first)


def test_store_ignores_duplicate_ids_and_records_feedback(tmp_path):
    store = PredictionStore.from_url(f"sqlite:///{tmp_path / 'log.db'}")
    store.create_schema()
    row = _row()
    store.insert_many([row])
    store.insert_many([row, _row()])  # a replay after a partial failure
    assert store.count() == 2
    assert store.record_feedback(row["id"], "sadness") is True
    assert store.record_feedback("unknown", "joy") is False
    stored = store.get(row["id"])
    assert stored["feedback_label"] == "sadness" and stored["probabilities"] == row["probabilities"]


def test_writer_spools_when_the_store_fails_and_replays_later(tmp_path):
    # The log database's folder is a file at first, so SQLite cannot open it: a real failure.
    blocker = tmp_path / "db"
    blocker.write_text("not a folder")
    failing = PredictionStore(sa.create_engine(f"sqlite:///{blocker / 'log.db'}"))
    failures = []
    writer = PredictionLogWriter(
        failing, tmp_path / "spool", retry_interval=0.2, on_write_failure=failures.append
    )
    rows = [_row() for _ in range(5)]
    writer.submit(rows)
    assert writer.flush(timeout=5)
    assert sum(failures) == 5 and writer.spooled_files()

    blocker.unlink()
    blocker.mkdir()  # the database becomes reachable
    deadline = time.monotonic() + 10
    while writer.spooled_files() and time.monotonic() < deadline:
        time.sleep(0.1)
    writer.close()
    assert not writer.spooled_files()
    assert failing.count() == 5


def test_file_left_mid_replay_by_a_dead_process_is_replayed(tmp_path):
    spool = tmp_path / "spool"
    blocker = tmp_path / "db"
    blocker.write_text("not a folder")  # the database cannot be opened: rows get spooled
    first = PredictionLogWriter(PredictionStore(sa.create_engine(f"sqlite:///{blocker / 'log.db'}")), spool)
    first.submit([_row(), _row()])
    first.close()
    blocker.unlink()
    store = PredictionStore.from_url(f"sqlite:///{tmp_path / 'log.db'}")
    (orphan,) = spool.glob("*.jsonl")
    orphan.rename(orphan.with_suffix(".replaying-deadbeef"))  # what a crash mid-replay leaves

    writer = PredictionLogWriter(store, spool, retry_interval=0.1)
    deadline = time.monotonic() + 10
    while store.count() < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    writer.close()
    assert store.count() == 2
    assert not list(spool.iterdir())
