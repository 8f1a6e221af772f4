"""The challenger's shadow answers: rows in, and what a reviewer and the gate read of them
(agreement with the champion, per-label divergence, the texts where they differ most, latency,
and accuracy on whatever labels arrived; ``core.shadow`` says what the gate asks of them)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from core.labels import DROPPED, QUARANTINED
from core.store.schema import insert_on_key, predictions, shadow_predictions

# The newest rows a summary reads: enough for a figure to a tenth of a point, bounded in memory.
SUMMARY_ROWS = 20_000
# Labels a reviewer's decision kept out of training are not evidence of accuracy either.
UNTRUSTED_LABELS = (QUARANTINED, DROPPED)


class ShadowLog:
    """Every read and write of ``shadow_predictions``."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def insert_many(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            with self.engine.begin() as connection:
                connection.execute(insert_on_key(self.engine, shadow_predictions, "id"), rows)

    def count(self, model_name: str, challenger_version: str) -> int:
        query = sa.select(sa.func.count()).where(
            shadow_predictions.c.model_name == model_name,
            shadow_predictions.c.challenger_version == challenger_version,
        )
        with self.engine.connect() as connection:
            return int(connection.execute(query).scalar_one())

    def summary(
        self,
        model_name: str,
        challenger_version: str,
        champion_version: str | None = None,
        most: int = 10,
        rows: int = SUMMARY_ROWS,
    ) -> dict[str, Any]:
        """The newest ``rows`` shadow answers of ``challenger_version`` (against the champion
        ``champion_version`` when given), summarised: agreement, per-label divergence, the
        ``most`` texts where the two differ most, latency, and both models' accuracy on labels."""
        shadow, logged = shadow_predictions.c, predictions.c
        query = (
            sa.select(
                shadow.champion_version,
                shadow.champion_emotion,
                shadow.challenger_emotion,
                shadow.challenger_confidence,
                shadow.challenger_probabilities,
                shadow.latency_ms,
                logged.text,
                logged.probabilities,
                logged.feedback_label,
                logged.feedback_status,
            )
            .select_from(shadow_predictions.outerjoin(predictions, logged.id == shadow.id))
            .where(shadow.model_name == model_name, shadow.challenger_version == challenger_version)
            .order_by(shadow.created_at.desc())
            .limit(rows)
        )
        if champion_version is not None:
            query = query.where(shadow.champion_version == champion_version)
        with self.engine.connect() as connection:
            frame = pd.DataFrame(connection.execute(query).all(), columns=SUMMARY_COLUMNS)
        return summarise(frame, model_name, challenger_version, champion_version, most)


SUMMARY_COLUMNS = [
    "champion_version",
    "champion",
    "challenger",
    "challenger_confidence",
    "challenger_probabilities",
    "latency_ms",
    "text",
    "champion_probabilities",
    "label",
    "status",
]


def summarise(
    frame: pd.DataFrame, model_name: str, challenger_version: str, champion_version: str | None, most: int
) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "model_name": model_name,
        "challenger_version": challenger_version,
        "champion_version": champion_version,
        "rows": len(frame),
        "agreement": None,
        "labels": [],
        "most_different": [],
        "latency_ms": {"p50": None, "p95": None},
        "labelled": 0,
        "champion_accuracy": None,
        "challenger_accuracy": None,
    }
    if frame.empty:
        return summary
    agree = frame["champion"] == frame["challenger"]
    summary["agreement"] = float(agree.mean())
    summary["labels"] = _label_divergence(frame)
    summary["latency_ms"] = {
        "p50": float(np.percentile(frame["latency_ms"], 50)),
        "p95": float(np.percentile(frame["latency_ms"], 95)),
    }
    differing = frame[~agree].copy()
    if not differing.empty:
        differing["distance"] = [
            _distance(champion, challenger)
            for champion, challenger in zip(
                differing["champion_probabilities"], differing["challenger_probabilities"], strict=True
            )
        ]
        # One line per text: traffic repeats texts, and a reviewer reads each once.
        ranked = differing.sort_values("distance", ascending=False)
        top = ranked.drop_duplicates(subset=["text", "champion", "challenger"]).head(most)
        summary["most_different"] = [
            {
                "text": row.text if isinstance(row.text, str) else None,  # None: not in the log
                "champion": row.champion,
                "challenger": row.challenger,
                "challenger_confidence": round(float(row.challenger_confidence), 4),
                "distance": round(float(row.distance), 4),
            }
            for row in top.itertuples()
        ]
    labelled = frame[frame["label"].notna() & ~frame["status"].isin(UNTRUSTED_LABELS)]
    summary["labelled"] = len(labelled)
    if len(labelled):
        summary["champion_accuracy"] = float((labelled["champion"] == labelled["label"]).mean())
        summary["challenger_accuracy"] = float((labelled["challenger"] == labelled["label"]).mean())
    return summary


def _label_divergence(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Per label: how often each model gives it, and the texts one gives it and the other not."""
    champion_sets = [set(answer.split(",")) for answer in frame["champion"]]
    challenger_sets = [set(answer.split(",")) for answer in frame["challenger"]]
    labels = sorted(set().union(*champion_sets, *challenger_sets))
    total = len(frame)
    rows = []
    for label in labels:
        by_champion = [label in answer for answer in champion_sets]
        by_challenger = [label in answer for answer in challenger_sets]
        lost = sum(a and not b for a, b in zip(by_champion, by_challenger, strict=True))
        gained = sum(b and not a for a, b in zip(by_champion, by_challenger, strict=True))
        rows.append(
            {
                "label": label,
                "champion_share": sum(by_champion) / total,
                "challenger_share": sum(by_challenger) / total,
                "champion_only": lost,  # the champion said it, the challenger did not
                "challenger_only": gained,
            }
        )
    return sorted(rows, key=lambda row: (-(row["champion_only"] + row["challenger_only"]), row["label"]))


def _distance(champion: Any, challenger: Any) -> float:
    """Total variation between the two models' probabilities (0: the same, 1: disjoint); 1 when
    the champion's row is not in the log (sampled out or not written yet)."""
    if not isinstance(champion, dict) or not isinstance(challenger, dict):
        return 1.0
    labels = set(champion) | set(challenger)
    return 0.5 * sum(abs(float(champion.get(k, 0.0)) - float(challenger.get(k, 0.0))) for k in labels)
