"""The store: one database for the prediction log and the drift-report index.

``Store.open(url)`` gives both halves over one engine and one schema: ``predictions`` (the log,
its labels, the windows monitoring reads) and ``reports`` (the index of drift runs).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine

from core.store.predictions import CHUNK_ROWS, PredictionStore, TrafficWindow
from core.store.reports import ReportIndex, ReportNotFound
from core.store.schema import create_schema, create_store_engine

__all__ = ["CHUNK_ROWS", "PredictionStore", "ReportIndex", "ReportNotFound", "Store", "TrafficWindow"]


@dataclass
class Store:
    engine: Engine
    predictions: PredictionStore
    reports: ReportIndex

    @classmethod
    def connect(cls, url: str) -> Store:
        """The store at ``url``, schema untouched (the database may still be down)."""
        engine = create_store_engine(url)
        return cls(engine, PredictionStore(engine), ReportIndex(engine))

    @classmethod
    def open(cls, url: str) -> Store:
        """The store at ``url`` with its tables created (needs the database up)."""
        store = cls.connect(url)
        store.create_schema()
        return store

    def create_schema(self) -> None:
        create_schema(self.engine)
