"""The retrain trigger: a pure policy, and the two ways to act on it.

- ``local``: retrain in this process on the original training data plus feedback-labelled rows
  from the log, register the result as ``challenger`` and run the promotion gate on each
  evaluation set on its own: the curated test split (which feedback cannot write to) and a
  held-out slice of the most recent feedback. The challenger must pass on every set. Only when
  ``retrain_auto_promote`` allows it does ``champion`` move (and the running service pick it up
  at its next alias refresh); otherwise it waits as ``challenger`` for ``emotion-ops promote``.
- ``webhook``: POST the decision to a URL, for an external CI or orchestrator to retrain (it
  can run ``emotion-ops retrain`` to do the same as ``local``), with a timeout and retries.
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
    min_accuracy_labels: int = 50  # one labelled row must not set live accuracy


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
    labelled_rows: int | None = None,
) -> RetrainDecision:
    """Retrain when drift is detected or live accuracy is under the floor, given enough new
    labelled rows to learn from, and not more often than the cooldown allows.

    Live accuracy counts only over at least ``policy.min_accuracy_labels`` labelled rows of the
    window (``labelled_rows``; None means enough): a handful of labels says nothing."""
    causes, notes = [], []
    if dataset_drift:
        causes.append("dataset drift detected")
    if live_accuracy is not None and labelled_rows is not None and labelled_rows < policy.min_accuracy_labels:
        notes.append(
            f"live accuracy {live_accuracy:.4f} ignored: {labelled_rows} labelled rows in the window "
            f"(need {policy.min_accuracy_labels})"
        )
        live_accuracy = None
    if live_accuracy is not None and live_accuracy < policy.accuracy_floor:
        causes.append(f"live accuracy {live_accuracy:.4f} is below the floor {policy.accuracy_floor:.4f}")
    if not causes:
        if dataset_drift is None and live_accuracy is None:
            reason = "no verdict: not enough data in the window and no labels"
        else:
            accuracy = (
                "" if live_accuracy is None else f", live accuracy {live_accuracy:.4f} clears the floor"
            )
            reason = f"no drift{accuracy}"
        return RetrainDecision(False, "; ".join([reason, *notes]))
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
    # Judged one by one: the curated test split, which feedback cannot write to, and the
    # held-out feedback. A challenger must pass on each.
    gate_sets: dict[str, EmotionDataset] | None = None


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
    gate_sets = {
        "test split": EmotionDataset(
            splits={"test": base.splits["test"]}, labels=base.labels, source=base.source
        )
    }
    if holdout is not None:
        holdout_set = holdout.drop_duplicates(subset="text", keep="last").reset_index(drop=True)
        gate_sets["held-out feedback"] = EmotionDataset(
            splits={"test": holdout_set}, labels=base.labels, source="held-out feedback"
        )
    return RetrainData(
        dataset=EmotionDataset(splits=splits, labels=base.labels, source=source),
        gate_set=EmotionDataset(splits={"test": gate_test}, labels=base.labels, source=source),
        feedback_train_rows=len(learn),
        feedback_holdout_rows=0 if holdout is None else len(holdout),
        dropped_unknown_labels=dropped,
        gate_sets=gate_sets,
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
    result = promote(settings, gate_sets=data.gate_sets, move_champion=settings.retrain_auto_promote)
    if not result.decision.passed:
        verdict = "refused by the gate"
    elif settings.retrain_auto_promote:
        verdict = "promoted to champion"
    else:
        verdict = (
            "passed the gate; waits as challenger (EMOTION_RETRAIN_AUTO_PROMOTE is off: "
            "review it, then run 'emotion-ops promote')"
        )
    return (
        f"retrained version {outcome.model_version} on {data.feedback_train_rows} feedback rows "
        f"(+{data.feedback_holdout_rows} held out for the gate): {verdict}: {result.decision.reason}"
    )


class WebhookFailed(RuntimeError):
    """The retrain webhook did not answer 2xx after every attempt."""


def post_webhook(
    url: str,
    payload: dict,
    token: str | None = None,
    timeout: float = 10.0,
    attempts: int = 3,
    backoff_seconds: float = 2.0,
) -> str:
    """POST the decision, retrying failures with backoff; returns a line for the report.

    The line names no URL: the report is served by ``/reports``, and a webhook URL often holds
    a token. Raises ``WebhookFailed`` when no attempt got a 2xx answer.
    """
    import time

    import httpx

    headers = {"authorization": f"Bearer {token}"} if token else {}
    last = "no attempt"
    for attempt in range(1, attempts + 1):
        try:
            response = httpx.post(url, json=payload, headers=headers, timeout=timeout)
            if response.is_success:
                return f"webhook answered {response.status_code} (attempt {attempt} of {attempts})"
            last = f"answered {response.status_code}"
            if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
                break  # the receiver refuses this request; sending it again changes nothing
        except httpx.HTTPError as error:
            last = f"{type(error).__name__}"
        if attempt < attempts:
            time.sleep(backoff_seconds * 2 ** (attempt - 1))
    raise WebhookFailed(f"retrain webhook failed after {attempt} attempt(s): {last}")
