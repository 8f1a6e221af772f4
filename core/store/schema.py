"""The store's one schema: the prediction log, labels waiting for their prediction, the
drift-report index and the challenger's shadow answers, in one database (SQLite by default,
PostgreSQL in production).

The service, the monitor job, the retrain job and a reviewer's CLI all read and write these
tables through ``core.store`` only; nothing else holds SQL for them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import dml as postgresql_dml
from sqlalchemy.dialects.sqlite import dml as sqlite_dml
from sqlalchemy.engine import Engine

from core.labels import LABEL_CHARS

metadata = sa.MetaData()

predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("model_version", sa.String(50), nullable=False, index=True),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("emotion", sa.String(LABEL_CHARS), nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("probabilities", sa.JSON, nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("truncated", sa.Boolean, nullable=False),
    sa.Column("tokens", sa.Integer, nullable=False),
    sa.Column("uncertain", sa.Boolean, nullable=False),
    # How unlike the model's training texts the text is, and whether over the model's threshold
    # (null: the model has no novelty index, or the row is older than novelty scoring).
    sa.Column("novelty", sa.Float, nullable=True),
    sa.Column("novel", sa.Boolean, nullable=True),
    sa.Column("feedback_label", sa.String(LABEL_CHARS), nullable=True),
    sa.Column("feedback_at", sa.DateTime(timezone=True), nullable=True),
    # Provenance: who gave the label ("key:<name>" for an API key, "import:<operator>:<file>").
    sa.Column("feedback_source", sa.String(200), nullable=True),
    # The label screen's word on it before a retrain: null (not screened yet), accepted,
    # quarantined (kept out of training, with the reason), released or dropped (by an operator).
    # A new label on the row clears both.
    sa.Column("feedback_status", sa.String(20), nullable=True),
    sa.Column("feedback_reason", sa.Text, nullable=True),
)

# Every label given, kept with its source, whatever later labels or decisions do to the row's
# one label: a key's volume (its quota) and a text's history come from here.
label_history = sa.Table(
    "label_history",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(36), nullable=False, index=True),
    sa.Column("label", sa.String(LABEL_CHARS), nullable=False),
    sa.Column("source", sa.String(200), nullable=True),
    sa.Column("given_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_label_history_source_given_at", "source", "given_at"),
)

feedback_pending = sa.Table(
    "feedback_pending",
    metadata,
    sa.Column("request_id", sa.String(36), primary_key=True),
    sa.Column("label", sa.String(LABEL_CHARS), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("source", sa.String(200), nullable=True),
)

drift_reports = sa.Table(
    "drift_reports",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("model_version", sa.String(50), nullable=False),
    sa.Column("verdict", sa.String(32), nullable=False),
    sa.Column("dataset_drift", sa.Boolean, nullable=True),
    sa.Column("drifted_share", sa.Float, nullable=True),
    sa.Column("window_rows", sa.Integer, nullable=False),
    sa.Column("labelled_rows", sa.Integer, nullable=False),
    sa.Column("live_accuracy", sa.Float, nullable=True),
    sa.Column("status", sa.String(32), nullable=False, index=True),
    sa.Column("decision", sa.String(32), nullable=True),  # retrain | hold
    sa.Column("decision_reason", sa.Text, nullable=True),
    sa.Column("action", sa.Text, nullable=True),  # what the trigger did, and how it ended
    sa.Column("triggered_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("acked_by", sa.String(200), nullable=True),
    sa.Column("acked_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("note", sa.Text, nullable=True),
    sa.Column("html_path", sa.Text, nullable=True),
    sa.Column("summary", sa.JSON, nullable=False),
)


# What the waiting challenger said on a sampled share of live traffic (the service's shadow):
# never answered to a client. One row per prediction it scored: the text, its logged champion
# answer and any label that arrives stay in ``predictions`` (joined by ``id``).
shadow_predictions = sa.Table(
    "shadow_predictions",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("champion_version", sa.String(50), nullable=False),
    sa.Column("challenger_version", sa.String(50), nullable=False, index=True),
    # The decided answers, a multi-label set joined with commas.
    sa.Column("champion_emotion", sa.String(LABEL_CHARS), nullable=False),
    sa.Column("challenger_emotion", sa.String(LABEL_CHARS), nullable=False),
    sa.Column("challenger_confidence", sa.Float, nullable=False),
    sa.Column("challenger_probabilities", sa.JSON, nullable=False),
    # The challenger's forward pass per text (its batch's time over its texts).
    sa.Column("latency_ms", sa.Float, nullable=False),
)


def create_schema(engine: Engine) -> None:
    """Every table of the store, where missing (one schema: the log and the report index), and
    the nullable columns a later release added to a table made before it.

    Workers (or pods) start together and each checks, then creates: a CREATE can find
    another's table made in between ("table ... already exists"). Then it tries again, as long
    as each failure found more tables made by someone else; a failure that is not that race
    fails the same way with nothing new made, and is raised.
    """
    present = -1
    while True:
        try:
            metadata.create_all(engine)
            break
        except sa.exc.DBAPIError:
            now = len(set(sa.inspect(engine).get_table_names()) & set(metadata.tables))
            if now <= present:
                raise
            present = now
    _add_missing_columns(engine)


def _add_missing_columns(engine: Engine) -> None:
    # Only nullable columns are ever added, so ADD COLUMN needs no default and old rows read null.
    inspector = sa.inspect(engine)
    for table in metadata.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        missing = [column for column in table.columns if column.name not in present]
        for column in missing:
            if not column.nullable:
                raise RuntimeError(f"table {table.name} lacks the required column {column.name}")
            kind = column.type.compile(dialect=engine.dialect)
            try:
                with engine.begin() as connection:
                    connection.execute(sa.text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))
            except sa.exc.DBAPIError:
                # Another worker or pod added it first (they start together); anything else stands.
                if column.name not in {c["name"] for c in sa.inspect(engine).get_columns(table.name)}:
                    raise


def create_store_engine(url: str) -> Engine:
    """An engine for the store, with WAL for SQLite so readers never block the writer."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection: Any, _record: object) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()

    return engine


def insert_on_key(engine: Engine, table: sa.Table, key: str, update: tuple[str, ...] = ()) -> sa.Insert:
    """An INSERT, executed with the rows as parameters, that skips rows whose ``key`` exists or,
    given ``update``, overwrites those columns from the new row (the later write wins). SQLite
    and PostgreSQL have both; another database gets a plain INSERT."""
    dialect = engine.dialect.name
    statement: sqlite_dml.Insert | postgresql_dml.Insert
    if dialect == "sqlite":
        statement = sqlite_dml.insert(table)
    elif dialect == "postgresql":
        statement = postgresql_dml.insert(table)
    else:
        return table.insert()
    if not update:
        return statement.on_conflict_do_nothing(index_elements=[key])
    return statement.on_conflict_do_update(
        index_elements=[key], set_={column: statement.excluded[column] for column in update}
    )
