"""The retrain trigger: a pure policy, and the two ways to act on it.

- ``local``: retrain in this process on the original training data plus feedback-labelled rows
  from the log, register the result as ``challenger`` and run the same promotion gate, on the
  test set plus a held-out slice of the most recent feedback. On a pass ``champion`` moves and
  the running service picks it up at its next alias refresh.
- ``webhook``: POST the decision to a URL, for an external CI or orchestrator to retrain (it
  can run ``emotion-ops retrain`` to do the same as ``local``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd
import sqlalchemy as sa

from emotion_ops.settings import Settings
from monitoring.prediction_log import PredictionStore, predictions
from training.data import EmotionDataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrainPolicy:
    accuracy_floor: float = 0.85
    min_new_labels: int = 200
    cooldown: timedelta = timedelta(hours=24)


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    reason: str


def retrain_decision(
    policy: RetrainPolicy,
    dataset_drift: bool | None,
    live_accuracy: float | None,
    new_labels: int,
    last_triggered_at: datetime | None,
    now: datetime,
) -> RetrainDecision:
    """Retrain when drift is detected or live accuracy is under the floor, given enough new
    labelled rows to learn from, and not more often than the cooldown allows."""
    causes = []
    if dataset_drift:
        causes.append("dataset drift detected")
    if live_accuracy is not None and live_accuracy < policy.accuracy_floor:
        causes.append(f"live accuracy {live_accuracy:.4f} is below the floor {policy.accuracy_floor:.4f}")
    if not causes:
        if dataset_drift is None and live_accuracy is None:
            return RetrainDecision(False, "no verdict: not enough data in the window and no labels")
        accuracy = "" if live_accuracy is None else f", live accuracy {live_accuracy:.4f} clears the floor"
        return RetrainDecision(False, f"no drift{accuracy}")
    cause = " and ".join(causes)
    if new_labels < policy.min_new_labels:
        return RetrainDecision(
            False,
            f"{cause}, but only {new_labels} new labelled rows (need {policy.min_new_labels}); "
            "collect feedback through POST /feedback",
        )
    if last_triggered_at is not None and now - last_triggered_at < policy.cooldown:
        next_allowed = last_triggered_at + policy.cooldown
        return RetrainDecision(
            False, f"{cause}, but the cooldown lasts until {next_allowed.isoformat(timespec='seconds')}"
        )
    return RetrainDecision(True, f"{cause}; {new_labels} new labelled rows")


def count_new_labels(store: PredictionStore, model_name: str, since: datetime | None) -> int:
    query = (
        sa.select(sa.func.count())
        .select_from(predictions)
        .where(predictions.c.model_name == model_name, predictions.c.feedback_label.is_not(None))
    )
    if since is not None:
        query = query.where(predictions.c.feedback_at > since)
    with store.engine.connect() as connection:
        return connection.execute(query).scalar_one()


def feedback_rows(store: PredictionStore, model_name: str) -> pd.DataFrame:
    """Every feedback-labelled text, one row per distinct text (its latest label wins)."""
    query = (
        sa.select(predictions.c.text, predictions.c.feedback_label.label("label"), predictions.c.feedback_at)
        .where(predictions.c.model_name == model_name, predictions.c.feedback_label.is_not(None))
        .order_by(predictions.c.feedback_at)
    )
    with store.engine.connect() as connection:
        frame = pd.DataFrame(connection.execute(query).all(), columns=["text", "label", "feedback_at"])
    return frame.drop_duplicates(subset="text", keep="last").reset_index(drop=True)


@dataclass(frozen=True)
class RetrainData:
    dataset: EmotionDataset  # train/validation/test with feedback folded into train
    gate_set: EmotionDataset  # test split + held-out recent feedback, for the promotion gate
    feedback_train_rows: int
    feedback_holdout_rows: int
    dropped_unknown_labels: int


def assemble_retrain_data(base: EmotionDataset, feedback: pd.DataFrame, holdout_share: float) -> RetrainData:
    """Fold feedback into the training split, keeping the newest ``holdout_share`` for the gate.

    Texts are de-duplicated across everything: a feedback label replaces the original label of
    the same text in train, no text of the gate set (test or held-out feedback) stays in train,
    and the curated test split keeps its labels (so gate scores stay comparable over time).
    """
    known = feedback["label"].isin(base.labels)
    dropped = int((~known).sum())
    feedback = feedback[known].sort_values("feedback_at")
    holdout_count = round(len(feedback) * holdout_share)
    holdout = feedback.iloc[len(feedback) - holdout_count :][["text", "label"]] if holdout_count else None
    learn = feedback.iloc[: len(feedback) - holdout_count][["text", "label"]]

    gate_test = pd.concat([base.splits["test"], holdout], ignore_index=True)  # concat skips None
    gate_test = gate_test.drop_duplicates(subset="text", keep="first").reset_index(drop=True)
    train = pd.concat([base.splits["train"], learn], ignore_index=True)
    train = train.drop_duplicates(subset="text", keep="last")
    train = train[~train["text"].isin(gate_test["text"])].reset_index(drop=True)

    splits = {**base.splits, "train": train, "test": gate_test}
    source = f"{base.source} + {len(learn)} feedback rows"
    return RetrainData(
        dataset=EmotionDataset(splits=splits, labels=base.labels, source=source),
        gate_set=EmotionDataset(splits={"test": gate_test}, labels=base.labels, source=source),
        feedback_train_rows=len(learn),
        feedback_holdout_rows=0 if holdout is None else len(holdout),
        dropped_unknown_labels=dropped,
    )


def retrain_and_promote(settings: Settings, store: PredictionStore, progress: bool = False) -> str:
    """Retrain on data plus feedback, register ``challenger``, run the gate; returns what happened."""
    from training.data import load_emotion_dataset
    from training.pipeline import train_and_register
    from training.promote import promote
    from training.train import PROFILES

    if settings.retrain_profile not in PROFILES:
        raise ValueError(
            f"unknown retrain profile '{settings.retrain_profile}'; choose from {sorted(PROFILES)}"
        )
    profile = PROFILES[settings.retrain_profile]
    unknown = sorted(set(settings.retrain_config) - set(type(profile).model_fields))
    if unknown:
        raise ValueError(f"EMOTION_RETRAIN_CONFIG has unknown training option(s) {unknown}")
    config = profile.model_copy(update=settings.retrain_config)
    config = type(config).model_validate(config.model_dump())
    base = load_emotion_dataset(settings.resolve_data_source())
    data = assemble_retrain_data(
        base, feedback_rows(store, settings.model_name), settings.retrain_holdout_share
    )
    log.info(
        "retraining on %d rows (%d from feedback); gate on %d rows (%d held-out feedback)",
        len(data.dataset.splits["train"]),
        data.feedback_train_rows,
        len(data.gate_set.splits["test"]),
        data.feedback_holdout_rows,
    )
    outcome = train_and_register(
        settings, config, dataset=data.dataset, with_baseline=False, progress=progress
    )
    result = promote(settings, dataset=data.gate_set)
    verdict = "promoted to champion" if result.decision.passed else "refused by the gate"
    return (
        f"retrained version {outcome.model_version} on {data.feedback_train_rows} feedback rows "
        f"(+{data.feedback_holdout_rows} held out for the gate): {verdict}: {result.decision.reason}"
    )


def post_webhook(url: str, payload: dict, token: str | None = None, timeout: float = 10.0) -> str:
    """POST the decision; returns a line for the report (raises on a non-2xx answer)."""
    import httpx

    headers = {"authorization": f"Bearer {token}"} if token else {}
    response = httpx.post(url, json=payload, headers=headers, timeout=timeout)
    response.raise_for_status()
    return f"webhook {url} answered {response.status_code}"
