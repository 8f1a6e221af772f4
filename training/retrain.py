"""Retraining on feedback: the original data plus feedback-labelled rows from the log, then the
promotion gate.

The new model is registered as ``challenger`` and the gate runs on each evaluation set on its
own: the curated test split (which feedback cannot write to) and a held-out slice of the most
recent feedback; the challenger must pass on every set. Only when ``retrain_auto_promote``
allows it does ``champion`` move (and the running service pick it up at its next alias
refresh); otherwise it waits as ``challenger`` for ``emotion-ops promote``.

``emotion-ops retrain`` runs it, and so does the monitor job's ``local`` retrain mode.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd

from core.registry import connect, load_bundle
from core.settings import TrainingSettings
from core.store import PredictionStore
from training.data import DataError, EmotionDataset, load_emotion_dataset
from training.pipeline import train_and_register
from training.promote import promote
from training.screen import DROPPED, QUARANTINED, ScreenReport, cap_sources, screen_feedback
from training.train import PROFILES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrainData:
    dataset: EmotionDataset  # train/validation/test with feedback folded into train
    gate_set: EmotionDataset  # test split + held-out recent feedback, for the promotion gate
    feedback_train_rows: int
    feedback_holdout_rows: int
    dropped_unknown_labels: int
    # Feedback on a text the curated train split already labels: the curated label stands.
    curated_kept: int = 0
    # Judged one by one: the curated test split, which feedback cannot write to, and the
    # held-out feedback. A challenger must pass on each.
    gate_sets: dict[str, EmotionDataset] | None = None


def assemble_retrain_data(base: EmotionDataset, feedback: pd.DataFrame, holdout_share: float) -> RetrainData:
    """Fold feedback into the training split, keeping the newest ``holdout_share`` for the gate.

    Texts are de-duplicated across everything: feedback never replaces a curated split's label
    (a labelling key must not rewrite the data every model learned from; the newest feedback
    wins among feedback), no text of the gate set (test or held-out feedback) stays in train,
    and the curated test split keeps its labels (so gate scores stay comparable over time).
    """
    # A multi-label answer is stored as its labels joined by commas: each must be known.
    labels = set(base.labels)
    known = feedback["label"].map(
        lambda value: set(value.split(",")) <= labels if base.multilabel else value in labels
    )
    dropped = int((~known).sum())
    feedback = feedback[known].sort_values("feedback_at", kind="stable").assign(source="feedback")
    holdout_count = round(len(feedback) * holdout_share)
    columns = ["text", "label", "source"]
    holdout = feedback.iloc[len(feedback) - holdout_count :][columns] if holdout_count else None
    learn = feedback.iloc[: len(feedback) - holdout_count][columns]
    curated = learn["text"].isin(base.splits["train"]["text"])
    curated_kept, learn = int(curated.sum()), learn[~curated]

    gate_test = pd.concat([base.splits["test"], holdout], ignore_index=True)  # concat skips None
    gate_test = gate_test.drop_duplicates(subset="text", keep="first").reset_index(drop=True)
    train = pd.concat([base.splits["train"], learn], ignore_index=True)
    train = train.drop_duplicates(subset="text", keep="last")
    train = train[~train["text"].isin(gate_test["text"])].reset_index(drop=True)

    splits = {**base.splits, "train": train, "test": gate_test}
    source = f"{base.source} + {len(learn)} feedback rows"
    gate_sets = {
        "test split": EmotionDataset(
            splits={"test": base.splits["test"]},
            labels=base.labels,
            source=base.source,
            multilabel=base.multilabel,
        )
    }
    if holdout is not None:
        holdout_set = holdout.drop_duplicates(subset="text", keep="last").reset_index(drop=True)
        gate_sets["held-out feedback"] = EmotionDataset(
            splits={"test": holdout_set},
            labels=base.labels,
            source="held-out feedback",
            multilabel=base.multilabel,
        )
    return RetrainData(
        dataset=EmotionDataset(
            splits=splits,
            labels=base.labels,
            source=source,
            label_set=base.label_set,
            summary={
                **base.summary,
                "feedback": {
                    "kind": "feedback",
                    "rows": {"train": len(learn), "test": 0 if holdout is None else len(holdout)},
                },
            },
            multilabel=base.multilabel,
        ),
        gate_set=EmotionDataset(
            splits={"test": gate_test}, labels=base.labels, source=source, multilabel=base.multilabel
        ),
        feedback_train_rows=len(learn),
        feedback_holdout_rows=0 if holdout is None else len(holdout),
        dropped_unknown_labels=dropped,
        curated_kept=curated_kept,
        gate_sets=gate_sets,
    )


def retrain_and_promote(
    settings: TrainingSettings, store: PredictionStore, progress: bool = False, report_id: str | None = None
) -> str:
    """Retrain on data plus feedback, register ``challenger``, run the gate; returns what happened.

    ``report_id`` names the drift report that caused it: tagged on the new version, so the
    console links the report, the retrain and the labels it screened."""
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
    # The champion's label set, unless told otherwise: a retrain must not change the served labels.
    champion = load_bundle(connect(settings), settings)
    base = load_emotion_dataset(
        settings.resolve_data_source(),
        label_set=settings.label_set or champion.label_set,
        multilabel=champion.task == "multilabel",
    )
    if set(base.labels) != set(champion.labels):
        raise DataError(
            f"the retrain data has labels {list(base.labels)}, the champion {list(champion.labels)}; "
            "set EMOTION_DATA_DIR (or EMOTION_LABEL_SET) to data with the champion's labels"
        )
    feedback = store.feedback_rows(settings.model_name)
    usable, screen, left_out = screened_feedback(settings, store, feedback, base, champion)
    if len(feedback) and usable.empty:
        return (
            f"nothing retrained: none of the {len(feedback)} feedback labels may train "
            f"({screen.describe() if screen else 'all quarantined or dropped'}); champion unchanged"
        )
    data = assemble_retrain_data(base, usable, settings.retrain_holdout_share)
    data.dataset.summary["feedback"].update(
        {
            "sources": usable["source"].fillna("unknown").value_counts().to_dict(),
            "left_out_by_source_cap": left_out,
            "source_max_share": settings.label_source_max_share,
            "screen": screen.summary() if screen else "off (EMOTION_LABEL_SCREEN=false)",
        }
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
    quarantined = sum(status == QUARANTINED for status, _ in screen.decisions.values()) if screen else 0
    lineage = {
        "retrain.feedback_rows": str(data.feedback_train_rows),
        "retrain.quarantined": f"{quarantined} of {len(feedback)} feedback labels quarantined",
        **({"retrain.report_id": report_id} if report_id else {}),
    }
    client = connect(settings)
    for key, value in lineage.items():
        client.set_model_version_tag(settings.model_name, outcome.model_version, key, value)
    result = promote(
        settings,
        gate_sets=data.gate_sets,
        move_champion=settings.retrain_auto_promote,
        trigger_probes=screen.raised_ngrams if screen else None,
        raised_only=screen.raised_only if screen else None,
    )
    if not result.decision.passed:
        verdict = "refused by the gate"
    elif result.promoted:
        verdict = "promoted to champion"
    elif settings.retrain_auto_promote:
        verdict = (
            "passed the gate; waits as challenger for the shadow's evidence on live traffic "
            "(approve it in the console or with 'emotion-ops promote --approve')"
        )
    else:
        verdict = (
            "passed the gate; waits as challenger (EMOTION_RETRAIN_AUTO_PROMOTE is off: "
            "review it, then run 'emotion-ops promote --approve')"
        )
    capped = f"; the source cap left out {sum(left_out.values())} rows" if left_out else ""
    curated = f"; {data.curated_kept} on curated texts kept their curated label" if data.curated_kept else ""
    screened = f"{screen.describe()}{capped}; " if screen else ""
    return (
        f"{screened}retrained version {outcome.model_version} on {data.feedback_train_rows} feedback rows "
        f"(+{data.feedback_holdout_rows} held out for the gate{curated}): {verdict}: {result.decision.reason}"
    )


def screened_feedback(
    settings: TrainingSettings, store: PredictionStore, feedback: pd.DataFrame, base: EmotionDataset, champion
) -> tuple[pd.DataFrame, ScreenReport | None, dict[str, int]]:
    """The feedback a retrain may learn from: screened (the verdict stored on each row), never
    quarantined or dropped, and with no source over its share. Returns those rows, the screen's
    report (None when the screen is off) and the rows the source cap left out, per source."""
    screen = None
    if settings.label_screen and len(feedback):
        # The content test's yardstick: the champion on curated rows it was not trained on.
        curated = next((base.splits[name] for name in ("validation", "test") if name in base.splits), None)
        screen = screen_feedback(
            feedback,
            base.splits["train"],
            base.labels,
            champion.predictor(),
            curated=curated,
            history=store.label_history_rows(settings.model_name),
            false_alarm_rate=settings.label_screen_false_alarm_rate,
            min_rows=settings.label_screen_min_rows,
            multilabel=base.multilabel,
        )
        store.set_feedback_status(screen.decisions)
        log.info("%s", screen.describe())
        status = (
            feedback["id"].map(lambda row: screen.decisions.get(row, (None,))[0]).fillna(feedback["status"])
        )
    else:
        status = feedback["status"]
    usable = feedback[~status.isin([QUARANTINED, DROPPED]).to_numpy()]
    usable, left_out = cap_sources(usable, settings.label_source_max_share)
    return usable, screen, left_out
