"""The quarantine's review, shared by ``emotion-ops label review`` and the console.

``review_labels`` lists the labels in one screen status (quarantined by default) and settles
them: released (they may train) or dropped (never), each with who decided, when, and what the
row was before.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd

from core.labels import DROPPED, QUARANTINED, RELEASED, REVIEW_STATUSES
from core.store.predictions import PredictionStore


class LabelNotListed(ValueError):
    """A decision names a label that is not in the state reviewed (gone, or another's already)."""


@dataclass(frozen=True)
class LabelReview:
    rows: pd.DataFrame  # the labels in the status asked for (``PredictionStore.feedback_rows``)
    settled: Counter[str]  # new status -> how many labels got it (empty: nothing decided)


def review_labels(
    store: PredictionStore,
    model_name: str,
    reviewer: str,
    status: str = QUARANTINED,
    matching: str | None = None,
    release: Iterable[str] = (),
    drop: Iterable[str] = (),
    release_all: bool = False,
    drop_all: bool = False,
) -> LabelReview:
    """The labels of ``model_name`` in ``status`` whose reason, source or label contains
    ``matching``; those named in ``release`` or ``drop`` (or all of them) settled so, each with
    who decided, when, and what it was before."""
    if status not in REVIEW_STATUSES:
        raise ValueError(f"unknown status '{status}'; choose from {list(REVIEW_STATUSES)}")
    if release_all and drop_all:
        raise ValueError("give --release-all or --drop-all, not both")
    rows = store.feedback_rows(model_name, statuses=(status,))
    if matching:
        hay = rows["reason"].fillna("") + " " + rows["source"].fillna("") + " " + rows["label"]
        rows = rows[hay.str.lower().str.contains(matching.lower(), regex=False)]
    listed = set(rows["id"])
    decisions: dict[str, str] = {}
    for ids, new_status in ((release, RELEASED), (drop, DROPPED)):
        for request_id in ids:
            if request_id not in listed:
                raise LabelNotListed(f"request id {request_id} is not among the {status} labels listed")
            decisions[request_id] = new_status
    if release_all or drop_all:
        decisions.update(dict.fromkeys(rows["id"], RELEASED if release_all else DROPPED))
    if decisions:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
        reasons = dict(zip(rows["id"], rows["reason"], strict=True))
        store.set_feedback_status(
            {
                request_id: (
                    new_status,
                    f"{new_status} by {reviewer} at {stamp} (was: {reasons.get(request_id) or status})",
                )
                for request_id, new_status in decisions.items()
            }
        )
    return LabelReview(rows, Counter(decisions.values()))
