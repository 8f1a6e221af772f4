"""The store: one database for the prediction log, the drift-report index and the shadow.

``Store.open(url)`` gives its parts over one engine and one schema: ``predictions`` (the log,
its labels, the windows monitoring reads), ``reports`` (the index of drift runs) and ``shadow``
(the waiting challenger's answers on live traffic).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine

from core.store.predictions import CHUNK_ROWS, PredictionStore, TrafficWindow
from core.store.reports import ReportIndex, ReportNotFound
from core.store.schema import create_schema, create_store_engine
from core.store.shadow import ShadowLog

__all__ = [
    "CHUNK_ROWS",
    "PredictionStore",
    "ReportIndex",
    "ReportNotFound",
    "ShadowLog",
    "Store",
    "TrafficWindow",
]


@dataclass
class Store:
    engine: Engine
    predictions: PredictionStore
    reports: ReportIndex
    shadow: ShadowLog

    @classmethod
    def connect(cls, url: str) -> Store:
        """The store at ``url``, schema untouched (the database may still be down)."""
        engine = create_store_engine(url)
        return cls(engine, PredictionStore(engine), ReportIndex(engine), ShadowLog(engine))

    @classmethod
    def open(cls, url: str) -> Store:
        """The store at ``url`` with its tables created (needs the database up)."""
        store = cls.connect(url)
        store.create_schema()
        return store

    def create_schema(self) -> None:
        create_schema(self.engine)
