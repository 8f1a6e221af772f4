"""The prediction log: rows in, labels on them, and the reads the monitor and retrain jobs make
(a window of traffic, new-label counts, feedback-labelled texts)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from core.labels import DROPPED
from core.store.schema import create_schema, feedback_pending, insert_on_key, label_history, predictions

# Rows per chunk a window streams in: the drift sample's byte bound counts one chunk in flight.
CHUNK_ROWS = 5000
# Rows spooled by an earlier release lack the columns added since (all nullable).
NULLABLE_DEFAULTS = {"novelty": None, "novel": None}


@dataclass(frozen=True)
class TrafficWindow:
    """Which logged rows a run looks at: the last ``rows`` of ``model_version``, or a time range.
    ``model_name`` keeps the window to one registered model: two models (single- and
    multi-label) may log to one store, and their version numbers both start at 1."""

    model_version: str
    rows: int | None = 1000
    since: datetime | None = None
    until: datetime | None = None
    model_name: str | None = None

    def describe(self) -> dict[str, Any]:
        kind = "time_range" if self.since or self.until else "last_rows"
        return {
            "kind": kind,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "rows_requested": self.rows if kind == "last_rows" else None,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
        }


class PredictionStore:
    """Every read and write of the prediction log (``predictions``, ``feedback_pending``)."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def create_schema(self) -> None:
        """Every table of the store, the report index's too (the writer makes them at start)."""
        create_schema(self.engine)

    def insert_many(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        rows = [{**NULLABLE_DEFAULTS, **row} for row in rows]
        with self.engine.begin() as connection:
            connection.execute(insert_on_key(self.engine, predictions, "id"), rows)
        # After the commit, not inside it: a label recorded as pending while this transaction
        # ran is then either seen here or sees these rows (``record_feedback_or_pending``).
        self._apply_pending_feedback([row["id"] for row in rows])

    def answers(self) -> bool:
        """True when the database takes a trivial query (it is up, whatever a batch did)."""
        try:
            with self.engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
            return True
        except Exception:
            return False

    def record_feedback(self, request_id: str, label: str, source: str | None = None) -> bool:
        """Store the true label for a logged prediction, with who gave it; False when the id is
        unknown. A new label clears the screen's earlier word on the row."""
        now = datetime.now(UTC)
        with self.engine.begin() as connection:
            result = connection.execute(
                predictions.update()
                .where(predictions.c.id == request_id)
                .values(**_fresh_label(label, source, now))
            )
            if result.rowcount:
                _remember(connection, [(request_id, label)], source, now)
        return result.rowcount > 0

    def record_feedback_or_pending(
        self, request_id: str, label: str, keep_hours: float, source: str | None = None
    ) -> dict[str, Any] | None:
        """Label a logged prediction and return its row; when it is not logged yet (still queued
        in another worker or pod), keep the label as pending and return None.

        A pending label is applied when its row is inserted, or dropped after ``keep_hours``
        (an id that is never logged: sampled out, or made up).
        """
        row = self.get(request_id)
        if row is not None:
            self.record_feedback(request_id, label, source)
            return row
        now = datetime.now(UTC)
        with self.engine.begin() as connection:
            connection.execute(
                feedback_pending.delete().where(
                    feedback_pending.c.received_at < now - timedelta(hours=keep_hours)
                )
            )
            # Two labels for one id at once (two workers) both succeed; the later wins.
            connection.execute(
                insert_on_key(
                    self.engine, feedback_pending, "request_id", update=("label", "received_at", "source")
                ),
                {"request_id": request_id, "label": label, "received_at": now, "source": source},
            )
            _remember(connection, [(request_id, label)], source, now)
        # The row may have been inserted while the label was being recorded.
        self._apply_pending_feedback([request_id])
        row = self.get(request_id)
        return row if row is not None and row["feedback_label"] == label else None

    def record_feedback_batch(self, labels: list[tuple[str, str]], source: str) -> None:
        """Label many logged predictions at once, all or none (``label import``): (request id,
        label) pairs whose ids the caller checked exist."""
        now = datetime.now(UTC)
        with self.engine.begin() as connection:
            # One time for the file: its order is `label export`'s (most informative first), so
            # it must not decide which rows are "newest" (the gate's held-out share, the cap).
            for request_id, label in labels:
                connection.execute(
                    predictions.update()
                    .where(predictions.c.id == request_id)
                    .values(**_fresh_label(label, source, now))
                )
            _remember(connection, labels, source, now)

    def _apply_pending_feedback(self, ids: list[str]) -> None:
        with self.engine.begin() as connection:
            pending = connection.execute(
                sa.select(feedback_pending).where(feedback_pending.c.request_id.in_(ids))
            ).all()
            for waiting in pending:
                updated = connection.execute(
                    predictions.update()
                    .where(predictions.c.id == waiting.request_id)
                    .values(**_fresh_label(waiting.label, waiting.source, waiting.received_at))
                )
                if updated.rowcount:
                    connection.execute(
                        feedback_pending.delete().where(feedback_pending.c.request_id == waiting.request_id)
                    )

    def labels_given(self, source: str, since: datetime | None) -> tuple[int, datetime | None]:
        """How many labels ``source`` has given after ``since`` (ever, when None), and when the
        oldest of them was given: a key's volume against its quota."""
        query = sa.select(sa.func.count(), sa.func.min(label_history.c.given_at)).where(
            label_history.c.source == source
        )
        if since is not None:
            query = query.where(label_history.c.given_at > since)
        with self.engine.connect() as connection:
            count, oldest = connection.execute(query).one()._tuple()
        return int(count or 0), _aware(oldest)

    def label_history_rows(self, model_name: str) -> pd.DataFrame:
        """Every label given to a text of ``model_name``, relabels included: id (the request),
        text, label, source, given_at, oldest first (the screen's conflicts come from here)."""
        query = (
            sa.select(
                label_history.c.request_id.label("id"),
                predictions.c.text,
                label_history.c.label,
                label_history.c.source,
                label_history.c.given_at,
            )
            .join(predictions, predictions.c.id == label_history.c.request_id)
            .where(predictions.c.model_name == model_name)
            .order_by(label_history.c.given_at, label_history.c.id)  # the id: in the order given
        )
        with self.engine.connect() as connection:
            rows = [row._tuple() for row in connection.execute(query).all()]
        return pd.DataFrame(rows, columns=["id", "text", "label", "source", "given_at"])

    def volume_by_source(self, since: datetime) -> dict[str, tuple[int, int]]:
        """Labels each source has given: (ever, after ``since``), relabels of a text included."""
        recent = sa.func.sum(sa.case((label_history.c.given_at > since, 1), else_=0))
        query = sa.select(label_history.c.source, sa.func.count(), recent).group_by(label_history.c.source)
        with self.engine.connect() as connection:
            rows = [row._tuple() for row in connection.execute(query).all()]
        return {str(source or "unknown"): (int(total), int(lately or 0)) for source, total, lately in rows}

    def pending_feedback_count(self) -> int:
        with self.engine.connect() as connection:
            return connection.execute(sa.select(sa.func.count()).select_from(feedback_pending)).scalar_one()

    def get(self, request_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as connection:
            row = connection.execute(predictions.select().where(predictions.c.id == request_id)).first()
        return dict(row._mapping) if row else None

    def ids(self) -> set[str]:
        """Every logged request id (the soak checks each answered one against it)."""
        with self.engine.connect() as connection:
            return set(connection.execute(sa.select(predictions.c.id)).scalars())

    def count(self) -> int:
        with self.engine.connect() as connection:
            return connection.execute(sa.select(sa.func.count()).select_from(predictions)).scalar_one()

    def stream_window(
        self,
        window: TrafficWindow,
        max_chars: int,
        chunk_rows: int = CHUNK_ROWS,
        with_probabilities: bool = False,
    ) -> Iterator[tuple[Any, ...]]:
        """The window's rows, newest first, as (created_at, text, emotion, confidence,
        feedback_label, novelty, novel), plus each row's probabilities with ``with_probabilities`` (a
        multi-label model's decided labels come from them), streamed in chunks of
        ``chunk_rows``. Each text is cut to ``max_chars`` in the database, before it is sent, so
        memory stays bounded however long the texts."""
        query = sa.select(
            predictions.c.created_at,
            sa.func.substr(predictions.c.text, 1, max_chars).label("text"),
            predictions.c.emotion,
            predictions.c.confidence,
            predictions.c.feedback_label,
            predictions.c.novelty,
            predictions.c.novel,
            *([predictions.c.probabilities] if with_probabilities else []),
        ).where(predictions.c.model_version == window.model_version)
        if window.model_name:
            query = query.where(predictions.c.model_name == window.model_name)
        if window.since:
            query = query.where(predictions.c.created_at >= window.since)
        if window.until:
            query = query.where(predictions.c.created_at < window.until)
        query = query.order_by(predictions.c.created_at.desc())
        if window.rows and not (window.since or window.until):
            query = query.limit(window.rows)
        with self.engine.connect() as connection:
            result = connection.execution_options(stream_results=True, yield_per=chunk_rows).execute(query)
            for chunk in result.partitions(chunk_rows):
                yield from (tuple(row) for row in chunk)

    def count_new_labels(self, model_name: str, since: datetime | None) -> int:
        """Feedback labels on ``model_name``'s predictions given after ``since`` (all if None)."""
        query = (
            sa.select(sa.func.count())
            .select_from(predictions)
            .where(predictions.c.model_name == model_name, predictions.c.feedback_label.is_not(None))
        )
        if since is not None:
            query = query.where(predictions.c.feedback_at > since)
        with self.engine.connect() as connection:
            return connection.execute(query).scalar_one()

    def feedback_rows(self, model_name: str, statuses: tuple[str | None, ...] | None = None) -> pd.DataFrame:
        """Every feedback-labelled text of ``model_name``, one row per distinct text (its latest
        label wins), oldest label first: id, text, label, feedback_at, source, status, reason,
        the logged prediction (``emotion``) and the version that made it. ``statuses`` keeps
        only rows the screen left in one of them (None in it: not screened yet)."""
        query = (
            sa.select(
                predictions.c.id,
                predictions.c.text,
                predictions.c.feedback_label.label("label"),
                predictions.c.feedback_at,
                predictions.c.feedback_source.label("source"),
                predictions.c.feedback_status.label("status"),
                predictions.c.feedback_reason.label("reason"),
                predictions.c.emotion,
                predictions.c.model_version,
            )
            .where(predictions.c.model_name == model_name, predictions.c.feedback_label.is_not(None))
            # The labels of one imported file share a time: the request id (random) breaks the
            # tie, so which label of a text wins, and which rows are newest, is the same on every
            # database and unrelated to the file's order.
            .order_by(predictions.c.feedback_at, predictions.c.id)
        )
        with self.engine.connect() as connection:
            frame = pd.DataFrame(connection.execute(query).all(), columns=FEEDBACK_COLUMNS)
        frame = frame.drop_duplicates(subset="text", keep="last").reset_index(drop=True)
        if statuses is not None:
            keep = frame["status"].isin([s for s in statuses if s is not None])
            if None in statuses:
                keep |= frame["status"].isna()
            frame = frame[keep].reset_index(drop=True)
        return frame

    def set_feedback_status(self, decisions: dict[str, tuple[str, str | None]]) -> None:
        """The screen's (or an operator's) word on labelled rows: id -> (status, reason)."""
        with self.engine.begin() as connection:
            for request_id, (status, reason) in decisions.items():
                connection.execute(
                    predictions.update()
                    .where(predictions.c.id == request_id, predictions.c.feedback_label.is_not(None))
                    .values(feedback_status=status, feedback_reason=reason)
                )

    def existing_ids(self, ids: list[str], model_name: str) -> set[str]:
        """Which of ``ids`` are logged predictions of ``model_name`` (in chunks: a database
        bounds a statement's parameters)."""
        found: set[str] = set()
        with self.engine.connect() as connection:
            for start in range(0, len(ids), 500):
                query = sa.select(predictions.c.id).where(
                    predictions.c.id.in_(ids[start : start + 500]), predictions.c.model_name == model_name
                )
                found.update(connection.execute(query).scalars())
        return found

    def unlabelled_rows(self, model_name: str, limit: int) -> pd.DataFrame:
        """The newest ``limit`` logged rows of ``model_name`` with no label yet, one per distinct
        text (the pool ``label export`` picks from): id, created_at, model_version, text,
        emotion, confidence, probabilities, novelty, novel."""
        columns = ["id", "created_at", "model_version", "text", "emotion", "confidence", "probabilities"]
        query = (
            sa.select(*(predictions.c[name] for name in columns), predictions.c.novelty, predictions.c.novel)
            .where(predictions.c.model_name == model_name, predictions.c.feedback_label.is_(None))
            .order_by(predictions.c.created_at.desc())
            .limit(limit)
        )
        with self.engine.connect() as connection:
            frame = pd.DataFrame(connection.execute(query).all(), columns=[*columns, "novelty", "novel"])
        return frame.drop_duplicates(subset="text", keep="first").reset_index(drop=True)

    def recent_texts(self, model_name: str, limit: int) -> list[str]:
        """The distinct texts of the newest ``limit`` logged rows of ``model_name``, newest first,
        as stored (redacted when the service redacts)."""
        query = (
            sa.select(predictions.c.text)
            .where(predictions.c.model_name == model_name)
            .order_by(predictions.c.created_at.desc())
            .limit(limit)
        )
        with self.engine.connect() as connection:
            texts: list[str] = list(connection.execute(query).scalars())
        return list(dict.fromkeys(text for text in texts if text))


FEEDBACK_COLUMNS = [
    "id",
    "text",
    "label",
    "feedback_at",
    "source",
    "status",
    "reason",
    "emotion",
    "model_version",
]


def _fresh_label(label: str, source: str | None, at: datetime) -> dict[str, Any]:
    # A new label is a new claim: whatever the screen said about the old one no longer holds,
    # and a released row is screened again. An operator's drop holds until an operator changes
    # it: relabelling a dropped text does not bring it back into training.
    dropped = predictions.c.feedback_status == DROPPED
    return {
        "feedback_label": label,
        "feedback_at": at,
        "feedback_source": source,
        "feedback_status": sa.case((dropped, predictions.c.feedback_status), else_=None),
        "feedback_reason": sa.case((dropped, predictions.c.feedback_reason), else_=None),
    }


def _remember(connection: Any, labels: list[tuple[str, str]], source: str | None, at: datetime) -> None:
    # In the transaction that gives the labels: the history never misses one that landed.
    if labels:
        connection.execute(
            label_history.insert(),
            [{"request_id": rid, "label": label, "source": source, "given_at": at} for rid, label in labels],
        )


def _aware(value: datetime | None) -> datetime | None:
    # SQLite gives naive datetimes back; every time the store writes is UTC.
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value
