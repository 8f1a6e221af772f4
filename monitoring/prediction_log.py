"""The prediction log: one row per predicted text, written off the request path.

The schema lives here because monitoring reads it; the service only writes through
``PredictionLogWriter``. SQLite (WAL) by default, PostgreSQL (or any SQLAlchemy URL) in
production.

Delivery: rows go into a bounded in-memory queue; a background thread inserts them in batches.
When the database fails, the batch is appended to a spool file on local disk and replayed once
the database answers again. Inserts ignore ids already present, so a replay after a partial
failure never duplicates a row.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

metadata = sa.MetaData()
predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("model_version", sa.String(50), nullable=False, index=True),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("emotion", sa.String(100), nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("probabilities", sa.JSON, nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("truncated", sa.Boolean, nullable=False),
    sa.Column("tokens", sa.Integer, nullable=False),
    sa.Column("uncertain", sa.Boolean, nullable=False),
    sa.Column("feedback_label", sa.String(100), nullable=True),
    sa.Column("feedback_at", sa.DateTime(timezone=True), nullable=True),
)

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_URL = re.compile(r"\b(?:https?://|www\.)\S+", re.IGNORECASE)
_PHONE = re.compile(r"(?<!\w)\+?\d[\d\s().-]{7,}\d(?!\w)")


def redact(text: str) -> str:
    """Replace e-mail addresses, URLs and phone numbers with placeholders."""
    text = _EMAIL.sub("[EMAIL]", text)
    text = _URL.sub("[URL]", text)
    return _PHONE.sub("[PHONE]", text)


def spool_dir_for(root: Path, url: str) -> Path:
    """The spool folder of one store: rows spooled for one database are never replayed into
    another, even when services with different stores share ``root``."""
    import hashlib

    safe_url = sa.engine.make_url(url).render_as_string(hide_password=True)
    return root / hashlib.sha256(safe_url.encode()).hexdigest()[:16]


def create_store_engine(url: str) -> Engine:
    """An engine for the log store, with WAL for SQLite so readers never block the writer."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection, _record):
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()

    return engine


class PredictionStore:
    """Reads and writes of the ``predictions`` table."""

    def __init__(self, engine: Engine):
        self.engine = engine

    @classmethod
    def from_url(cls, url: str) -> PredictionStore:
        return cls(create_store_engine(url))

    def create_schema(self) -> None:
        metadata.create_all(self.engine)

    def insert_many(self, rows: list[dict]) -> None:
        if not rows:
            return
        with self.engine.begin() as connection:
            connection.execute(self._insert_ignoring_duplicates(), rows)

    def _insert_ignoring_duplicates(self):
        dialect = self.engine.dialect.name
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        elif dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            return predictions.insert()
        return insert(predictions).on_conflict_do_nothing(index_elements=["id"])

    def record_feedback(self, request_id: str, label: str) -> bool:
        """Store the true label for a logged prediction; False when the id is unknown."""
        with self.engine.begin() as connection:
            result = connection.execute(
                predictions.update()
                .where(predictions.c.id == request_id)
                .values(feedback_label=label, feedback_at=datetime.now(UTC))
            )
        return result.rowcount > 0

    def get(self, request_id: str) -> dict | None:
        with self.engine.connect() as connection:
            row = connection.execute(predictions.select().where(predictions.c.id == request_id)).first()
        return dict(row._mapping) if row else None

    def count(self) -> int:
        with self.engine.connect() as connection:
            return connection.execute(sa.select(sa.func.count()).select_from(predictions)).scalar_one()


class PredictionLogWriter:
    """Batches rows into the store from a background thread; spools to disk when it fails."""

    def __init__(
        self,
        store: PredictionStore,
        spool_dir: Path,
        max_queue: int = 10_000,
        batch_size: int = 256,
        flush_interval: float = 0.5,
        linger: float = 0.2,
        retry_interval: float = 5.0,
        on_write_failure: Callable[[int], None] | None = None,
        on_depth: Callable[[int], None] | None = None,
    ):
        self.store = store
        self.spool_dir = spool_dir
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        # A process that died mid-replay left its claimed file behind: hand it back to the queue
        # of spooled files (a second replay is harmless, inserts skip ids already present).
        for orphan in self.spool_dir.glob("*.replaying-*"):
            orphan.rename(orphan.with_suffix(".jsonl"))
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.linger = linger
        self.retry_interval = retry_interval
        self.on_write_failure = on_write_failure or (lambda rows: None)
        self.on_depth = on_depth or (lambda depth: None)
        self._queue: queue.Queue[dict] = queue.Queue(maxsize=max_queue)
        self._spool_lock = threading.Lock()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._last_retry = 0.0
        self._schema_ready = False
        try:
            self._ensure_schema()
        except Exception as error:  # the database may be down at start; the writer retries
            log.warning("prediction log store unavailable at start: %s", error)
        self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def submit(self, rows: list[dict]) -> None:
        """Queue rows without blocking; when the queue is full they go straight to the spool."""
        overflow = []
        for row in rows:
            try:
                self._queue.put_nowait(row)
            except queue.Full:
                overflow.append(row)
        if overflow:
            self._spool(overflow)
        self._idle.clear()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued so far has been written or spooled."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.empty() and self._idle.is_set():
                return True
            time.sleep(0.01)
        return False

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (spooling whatever the database refuses), then stop."""
        self._stop.set()
        self._thread.join(timeout)
        leftover = self._drain(max_rows=None)
        if leftover:
            self._spool(leftover)

    def spooled_files(self) -> list[Path]:
        return sorted(self.spool_dir.glob("*.jsonl"))

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self._drain(self.batch_size, wait=self.flush_interval, linger=self.linger)
            if batch:
                self._write(batch)
            self.on_depth(self.depth)
            if self._queue.empty():
                self._idle.set()
            if time.monotonic() - self._last_retry >= self.retry_interval:
                self._last_retry = time.monotonic()
                self._replay_spool()
        remaining = self._drain(max_rows=None)
        if remaining:
            self._write(remaining)
        self._idle.set()

    def _drain(self, max_rows: int | None, wait: float = 0.0, linger: float = 0.0) -> list[dict]:
        """Up to ``max_rows`` rows: waits ``wait`` for the first, then ``linger`` for more to
        gather, so a steady trickle becomes a few large transactions instead of one per request
        (each costs the request path's GIL far more than its rows do)."""
        rows = []
        try:
            rows.append(self._queue.get(timeout=wait) if wait else self._queue.get_nowait())
            if linger and self._queue.qsize() < (max_rows or 0):
                self._stop.wait(linger)
            while max_rows is None or len(rows) < max_rows:
                rows.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        return rows

    def _write(self, rows: list[dict]) -> None:
        try:
            self._ensure_schema()
            self.store.insert_many(rows)
        except Exception as error:  # any database failure: keep the rows on disk instead
            log.warning("prediction log write failed (%s rows spooled): %s", len(rows), error)
            self.on_write_failure(len(rows))
            self._spool(rows)

    def _ensure_schema(self) -> None:
        if not self._schema_ready:
            self.store.create_schema()
            self._schema_ready = True

    def _spool(self, rows: list[dict]) -> None:
        name = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}"
        partial = self.spool_dir / f"{name}.partial"
        with self._spool_lock, partial.open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, default=_json_default) + "\n")
        # Appear complete or not at all: a replaying process never reads a half-written file.
        partial.rename(self.spool_dir / f"{name}.jsonl")

    def _replay_spool(self) -> None:
        for path in self.spooled_files():
            # Claim the file first: replicas sharing this folder never replay it twice.
            claimed = path.with_suffix(f".replaying-{uuid.uuid4().hex[:8]}")
            try:
                path.rename(claimed)
            except FileNotFoundError:
                continue
            rows = [_from_json(line) for line in claimed.read_text(encoding="utf-8").splitlines() if line]
            try:
                self._ensure_schema()
                for start in range(0, len(rows), self.batch_size):
                    self.store.insert_many(rows[start : start + self.batch_size])
            except Exception as error:  # still down: put the file back for the next retry
                claimed.rename(path)
                log.info("prediction log store still unavailable; spooled rows wait: %s", error)
                return
            claimed.unlink()
            log.info("replayed %d spooled prediction rows from %s", len(rows), path.name)


def _json_default(value):
    if isinstance(value, datetime):
        return {"__datetime__": value.isoformat()}
    raise TypeError(f"cannot spool {type(value).__name__}")


def _from_json(line: str) -> dict:
    row = json.loads(line)
    for key, value in row.items():
        if isinstance(value, dict) and "__datetime__" in value:
            row[key] = datetime.fromisoformat(value["__datetime__"])
    return row
