from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from core.store import PredictionStore, Store, TrafficWindow
from core.store.rows import redact, storable
from core.store.writer import PredictionLogWriter, spool_dir_for
from tests.utils.factories import logged_row
from tests.utils.postgres import fresh_postgres_database


@pytest.fixture
def postgres_store():
    with fresh_postgres_database() as url:
        store = Store.connect(url).predictions
        store.create_schema()
        yield store
        store.engine.dispose()


def _row(**overrides) -> dict:
    return logged_row(probabilities={"joy": 0.9, "sadness": 0.1}, latency_ms=12.5, **overrides)


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
    store = Store.connect(f"sqlite:///{tmp_path / 'log.db'}").predictions
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
    # Spooled: waiting (*.jsonl) or claimed by a replay that is trying the store right now.
    assert sum(failures) == 5 and [path for path in (tmp_path / "spool").iterdir() if path.is_file()]

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
    store = Store.connect(f"sqlite:///{tmp_path / 'log.db'}").predictions
    (orphan,) = spool.glob("*.jsonl")
    claimed = orphan.with_suffix(".replaying-deadbeef")  # what a crash mid-replay leaves
    orphan.rename(claimed)
    stale = time.time() - 3600
    os.utime(claimed, (stale, stale))  # claimed an hour ago: its replayer is gone

    writer = PredictionLogWriter(store, spool, retry_interval=0.1)
    deadline = time.monotonic() + 10
    while store.count() < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    writer.close()
    assert store.count() == 2
    assert not list(spool.iterdir())


def _sqlite_store(tmp_path) -> PredictionStore:
    store = Store.connect(f"sqlite:///{tmp_path / 'log.db'}").predictions
    store.create_schema()
    return store


def _wait(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_redaction_is_linear_on_long_tokens_and_still_finds_contacts():
    # Each of these took seconds to hours with the old patterns (every start position rescanned
    # the token); a child process with a deadline turns a regression into a failure, not a hang.
    code = (
        "from core.store.rows import redact\n"
        "for token in ('a' * 1_000_000, '1 ' * 500_000, 'a.' * 500_000, 'x@' * 300_000):\n"
        "    redact(token)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=Path(__file__).parents[2])
    assert redact("write to " + "a" * 70 + "@example.com") == "write to [EMAIL]"  # no length cap
    assert redact("ping bob_smith@mail.example.org today") == "ping [EMAIL] today"
    assert redact("call 555-123-4567") == "call [PHONE]"


def test_text_no_database_takes_is_made_storable():
    assert storable("hi\x00there") == "hi\ufffdthere"
    assert storable("lone \ud800 surrogate") == "lone \ufffd surrogate"
    assert storable("ok: émotions 😀") == "ok: émotions 😀"


def test_a_row_the_database_refuses_is_set_aside_and_the_rest_written(tmp_path, postgres_store):
    rejected = []
    writer = PredictionLogWriter(postgres_store, tmp_path / "spool", on_rejected=rejected.append)
    good = [_row() for _ in range(9)]
    poison = _row(text="hi\x00")  # PostgreSQL refuses NUL in text
    writer.submit([*good[:4], poison, *good[4:]])
    assert writer.flush(timeout=10)
    writer.close()
    assert postgres_store.count() == 9
    assert sum(rejected) == 1 and not writer.spooled_files()
    (kept,) = writer.rejected_files()
    assert poison["id"] in kept.read_text()


def test_a_spool_file_with_a_refused_row_does_not_block_the_files_behind_it(tmp_path, postgres_store):
    spool = tmp_path / "spool"
    blocker = tmp_path / "db"
    blocker.write_text("not a folder")  # first the database cannot be opened: rows get spooled
    down = PredictionLogWriter(PredictionStore(sa.create_engine(f"sqlite:///{blocker / 'x.db'}")), spool)
    first, second = [_row(), _row(text="bad\x00"), _row()], [_row(), _row()]
    down.submit(first)
    assert down.flush(timeout=5)
    down.submit(second)
    down.close()
    assert len(list(spool.glob("*.jsonl"))) == 2

    writer = PredictionLogWriter(postgres_store, spool, retry_interval=0.1)
    assert _wait(lambda: postgres_store.count() == 4 and not writer.spooled_files())
    writer.close()
    assert len(writer.rejected_files()) == 1


def test_the_writer_thread_survives_a_failing_cycle(tmp_path):
    store = _sqlite_store(tmp_path)
    calls = []

    def flaky_depth(depth):
        calls.append(depth)
        if len(calls) == 1:
            raise RuntimeError("a bug in a callback")

    errors = []
    writer = PredictionLogWriter(
        store, tmp_path / "spool", on_depth=flaky_depth, on_error=lambda: errors.append(1)
    )
    writer.submit([_row()])
    assert _wait(lambda: errors)
    writer.submit([_row(), _row()])
    assert _wait(lambda: store.count() == 3)
    assert writer.alive
    writer.close()


def test_a_young_claim_of_another_live_process_is_left_to_it(tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    claimed = spool / "123-abc.replaying-0badc0de"
    claimed.write_text("")  # just claimed by another worker, which is replaying it now
    writer = PredictionLogWriter(_sqlite_store(tmp_path), spool, retry_interval=0.05)
    time.sleep(0.3)
    writer.close()
    assert claimed.exists() and not writer.spooled_files()


def test_queue_bytes_and_spool_size_are_bounded_and_drops_are_counted(tmp_path):
    blocker = tmp_path / "db"
    blocker.write_text("not a folder")
    failing = PredictionStore(sa.create_engine(f"sqlite:///{blocker / 'log.db'}"))
    dropped, spool_sizes = [], []
    writer = PredictionLogWriter(
        failing,
        tmp_path / "spool",
        max_queue_bytes=10_000,
        spool_max_bytes=4_000,
        retry_interval=0.05,
        on_dropped=dropped.append,
        on_spool_bytes=spool_sizes.append,
    )
    writer.submit([_row(text="x" * 20_000)])  # over the queue's byte bound: straight to the spool
    assert len(writer.spooled_files()) == 1 and writer.depth == 0
    writer.submit([_row(text="y" * 100)])  # the spool is over its limit: dropped, counted
    assert writer.flush(timeout=5)
    writer.close()
    assert sum(dropped) == 1
    assert len(writer.spooled_files()) == 1
    assert spool_sizes and max(spool_sizes) > 4_000


def test_a_label_for_a_row_not_logged_yet_waits_and_is_applied_when_it_arrives(tmp_path, postgres_store):
    for store in (_sqlite_store(tmp_path), postgres_store):
        row = _row()
        assert store.record_feedback_or_pending(row["id"], "sadness", keep_hours=1) is None
        # A second label for the same id before the row arrives replaces the first.
        assert store.record_feedback_or_pending(row["id"], "joy", keep_hours=1) is None
        assert store.pending_feedback_count() == 1
        store.insert_many([row])  # the other worker's queue reaches the database
        assert store.get(row["id"])["feedback_label"] == "joy"
        assert store.pending_feedback_count() == 0
        logged = store.record_feedback_or_pending(row["id"], "anger", keep_hours=1)
        assert logged["emotion"] == "joy" and store.get(row["id"])["feedback_label"] == "anger"
        # Every label given is history, pending or not, whatever the row keeps.
        given, oldest = store.labels_given("key:x", None)
        assert given == 0 and oldest is None
        store.record_feedback(row["id"], "fear", source="key:x")
        store.record_feedback_batch([(row["id"], "love")], "import:op:file.csv")
        assert store.labels_given("key:x", None)[0] == 1
        assert store.labels_given("key:x", datetime.now(UTC) - timedelta(hours=1))[1].tzinfo is not None
        volume = store.volume_by_source(datetime.now(UTC) - timedelta(hours=1))
        assert volume == {"unknown": (3, 3), "key:x": (1, 1), "import:op:file.csv": (1, 1)}
        # The history by text, oldest first: what the screen reads conflicts from.
        history = store.label_history_rows(row["model_name"])
        assert history["label"].tolist() == ["sadness", "joy", "anger", "fear", "love"]
        assert history["source"].tolist()[-2:] == ["key:x", "import:op:file.csv"]
        assert set(history["text"]) == {row["text"]} and set(history["id"]) == {row["id"]}
        # An operator's drop holds through a new label; a release is screened again.
        store.set_feedback_status({row["id"]: ("dropped", "dropped by op")})
        store.record_feedback(row["id"], "joy", source="key:x")
        assert (store.get(row["id"])["feedback_status"], store.get(row["id"])["feedback_reason"]) == (
            "dropped",
            "dropped by op",
        )
        store.set_feedback_status({row["id"]: ("released", "released by op")})
        store.record_feedback(row["id"], "sadness", source="key:x")
        assert store.get(row["id"])["feedback_status"] is None


def test_a_window_streams_newest_first_with_each_text_cut_in_the_database(tmp_path):
    store = _sqlite_store(tmp_path)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    store.insert_many(
        [_row(text="long " * 2_000, created_at=start + timedelta(seconds=n)) for n in range(50)]
    )
    rows = list(
        store.stream_window(TrafficWindow(model_version="1", rows=None), max_chars=2_000, chunk_rows=10)
    )
    assert len(rows) == 50 and {len(text) for _, text, *_ in rows} == {2_000}
    times = [created_at for created_at, *_ in rows]
    assert times == sorted(times, reverse=True)
    last = list(store.stream_window(TrafficWindow(model_version="1", rows=5), max_chars=64))
    assert len(last) == 5 and [row[0] for row in last] == times[:5]


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_the_latest_label_of_a_text_is_the_same_on_every_database(tmp_path, database, request):
    store = (
        Store.connect(f"sqlite:///{tmp_path / 'log.db'}").predictions
        if database == "sqlite"
        else request.getfixturevalue("postgres_store")
    )
    store.create_schema()
    # One text logged four times and labelled by one imported file (one time for all): the
    # largest request id wins on every database, not the order either keeps rows in.
    ids = ["f" * 36, "1" * 36, "2" * 36, "3" * 36]
    rows = [_row(request_id=rid, text="i feel it all at once") for rid in ids]
    store.insert_many(rows)
    labels = ["joy", "anger", "fear", "sadness"]
    store.record_feedback_batch(list(zip(ids, labels, strict=True)), "import:a")
    (latest,) = store.feedback_rows("emotion-classifier").itertuples()
    assert latest.label == "joy" and latest.id == "f" * 36
    assert store.label_history_rows("emotion-classifier")["label"].tolist() == labels


@pytest.fixture(params=["sqlite", "postgresql"])
def old_store_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
    else:
        with fresh_postgres_database() as url:
            yield url


def test_a_table_from_before_novelty_gets_its_columns_and_old_rows_read_null(old_store_url):
    import sqlalchemy as sa

    from core.store import Store

    url = old_store_url
    engine = sa.create_engine(url)
    with engine.begin() as connection:  # the predictions table as the release before novelty made it
        connection.execute(
            sa.text(
                "create table predictions (id varchar(36) primary key, created_at timestamp not null, "
                "model_name varchar(200) not null, model_version varchar(50) not null, text text not null, "
                "emotion varchar(100) not null, confidence float not null, probabilities json not null, "
                "latency_ms float not null, truncated boolean not null, tokens integer not null, "
                "uncertain boolean not null, feedback_label varchar(100), feedback_at timestamp)"
            )
        )
        connection.execute(
            sa.text(
                "insert into predictions values ('old', '2026-11-01 00:00:00', 'm', '1', 't', 'joy', 0.9, "
                "'{}', 1.0, false, 3, false, null, null)"
            )
        )
    store = Store.open(url)
    columns = {column["name"] for column in sa.inspect(store.engine).get_columns("predictions")}
    assert {"novelty", "novel"} <= columns
    assert store.predictions.get("old")["novelty"] is None
    engine.dispose()
    Store.open(url)  # a second start finds the columns there and adds nothing


def _create_at_once(url: str, starters: int = 6) -> list[BaseException]:
    """``starters`` stores (a worker's or pod's each) making the schema at the same moment."""
    import threading

    from core.store.schema import create_schema, create_store_engine

    engines = [create_store_engine(url) for _ in range(starters)]
    barrier, failures = threading.Barrier(starters), []

    def start(engine) -> None:
        barrier.wait()
        try:
            create_schema(engine)
        except BaseException as error:  # what the worker would have logged at start
            failures.append(error)

    threads = [threading.Thread(target=start, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for engine in engines:
        engine.dispose()
    return failures


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_workers_starting_together_all_get_the_schema(backend, tmp_path):
    # Two workers on one SQLite file used to log "table feedback_pending already exists".
    from contextlib import nullcontext

    database = (
        nullcontext(f"sqlite:///{tmp_path / 'log.db'}") if backend == "sqlite" else fresh_postgres_database()
    )
    with database as url:
        assert _create_at_once(url) == []
        engine = sa.create_engine(url)
        assert {"predictions", "feedback_pending"} <= set(sa.inspect(engine).get_table_names())
        engine.dispose()


def test_a_create_that_finds_another_workers_tables_tries_again(tmp_path, monkeypatch):
    # The race, made to happen every time: another worker makes two tables between our check
    # and our CREATE, which then fails as SQLite says it.
    from core.store import schema

    url = f"sqlite:///{tmp_path / 'log.db'}"
    engine, other = sa.create_engine(url), sa.create_engine(url)
    real_create_all, calls = schema.metadata.create_all, []

    def create_all(bind, **kwargs):
        calls.append(bind)
        if len(calls) == 1:
            real_create_all(
                other,
                tables=[schema.metadata.tables["predictions"], schema.metadata.tables["feedback_pending"]],
            )
            raise sa.exc.OperationalError(
                "CREATE TABLE feedback_pending", {}, Exception("table feedback_pending already exists")
            )
        return real_create_all(bind, **kwargs)

    monkeypatch.setattr(schema.metadata, "create_all", create_all)
    schema.create_schema(engine)
    assert len(calls) == 2
    assert set(schema.metadata.tables) <= set(sa.inspect(engine).get_table_names())
    engine.dispose()
    other.dispose()


def test_a_create_that_fails_without_anyone_making_tables_is_raised(tmp_path, monkeypatch):
    from core.store import schema

    engine, calls = sa.create_engine(f"sqlite:///{tmp_path / 'log.db'}"), []

    def create_all(bind, **kwargs):  # a disk that refuses, a role without CREATE: never the race
        calls.append(bind)
        raise sa.exc.OperationalError(
            "CREATE TABLE predictions", {}, Exception("attempt to write a readonly database")
        )

    monkeypatch.setattr(schema.metadata, "create_all", create_all)
    with pytest.raises(sa.exc.OperationalError, match="readonly"):
        schema.create_schema(engine)
    assert len(calls) == 2  # once, then once more to see whether anyone else made progress
    engine.dispose()
