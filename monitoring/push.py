"""Drift figures to Prometheus, pushed to a Pushgateway (the drift job is a batch job: nothing
stays up for Prometheus to scrape).

Each run replaces the whole group (``job``, ``model_name``), so a figure the latest run did not
produce (live accuracy without labels, scores of a window too small to judge) disappears instead
of lingering from an older run.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

from monitoring.drift import DriftResult

JOB = "emotion_drift"


def drift_registry(result: DriftResult, retrain_triggered: bool) -> CollectorRegistry:
    registry = CollectorRegistry()
    version = ["model_version"]

    def gauge(name: str, help_text: str, labels: list[str] = version) -> Gauge:
        return Gauge(name, help_text, labels, registry=registry)

    gauge("emotion_drift_last_run_timestamp_seconds", "When the drift job last finished (Unix time).").labels(
        result.model_version
    ).set(result.created_at.timestamp())
    gauge("emotion_drift_window_rows", "Logged predictions in the analysed window.").labels(
        result.model_version
    ).set(result.window_rows)
    gauge("emotion_drift_labelled_rows", "Predictions in the window with a feedback label.").labels(
        result.model_version
    ).set(result.labelled_rows)
    gauge("emotion_drift_enough_data", "1 when the window was large enough for a verdict, else 0.").labels(
        result.model_version
    ).set(0 if result.dataset_drift is None else 1)
    gauge("emotion_drift_retrain_triggered", "1 when this run triggered a retrain, else 0.").labels(
        result.model_version
    ).set(int(retrain_triggered))

    if result.dataset_drift is not None:
        gauge("emotion_drift_dataset_drift", "1 when the drift verdict is drift, else 0.").labels(
            result.model_version
        ).set(int(result.dataset_drift))
        gauge("emotion_drift_share_drifted_columns", "Share of monitored columns that drifted.").labels(
            result.model_version
        ).set(result.drifted_share or 0.0)
        score = gauge(
            "emotion_drift_column_score",
            "Drift score of one column (method in the label; compare with the threshold series).",
            ["model_version", "column", "method"],
        )
        threshold = gauge(
            "emotion_drift_column_threshold",
            "Drift threshold of one column.",
            ["model_version", "column", "method"],
        )
        drifted = gauge(
            "emotion_drift_column_drifted", "1 when the column drifted, else 0.", ["model_version", "column"]
        )
        for column in result.columns:
            score.labels(result.model_version, column.column, column.method).set(column.score)
            threshold.labels(result.model_version, column.column, column.method).set(column.threshold)
            drifted.labels(result.model_version, column.column).set(int(column.drifted))

    if result.novelty is not None:
        gauge("emotion_drift_novelty_share", "Share of the window's scored texts that are novel.").labels(
            result.model_version
        ).set(result.novelty["share"])
        if result.novelty["expected_share"] is not None:
            gauge(
                "emotion_drift_novelty_expected_share",
                "Share of novel texts in unshifted traffic (the model's calibration).",
            ).labels(result.model_version).set(result.novelty["expected_share"])
        estimated = result.novelty.get("estimated_share")
        if estimated is not None:
            novel_share = gauge(
                "emotion_drift_novel_share_estimate",
                "Estimated share of the window unlike the training texts (bound: estimate, low, high).",
                ["model_version", "bound"],
            )
            for bound in ("estimate", "low", "high"):
                novel_share.labels(result.model_version, bound).set(estimated[bound])
    if result.estimated_accuracy is not None:
        accuracy = gauge(
            "emotion_estimated_accuracy",
            "Accuracy estimated without labels (ATC) on the window's rows (part: all, familiar, novel).",
            ["model_version", "part"],
        )
        for part in ("all", "familiar", "novel"):
            figure = result.estimated_accuracy.get(part)
            if figure is not None:
                accuracy.labels(result.model_version, part).set(figure["estimate"])
    if result.tests:
        p_value = gauge(
            "emotion_drift_test_p_value",
            "p-value of each test of the drift verdict.",
            ["model_version", "test"],
        )
        for name, test in result.tests.items():
            p_value.labels(result.model_version, name).set(test["p_value"])
    if result.quality:
        # A multi-label model's exact match is not pushed as accuracy: the floor alert is single-label.
        if result.live_accuracy is not None:
            gauge("emotion_live_accuracy", "Accuracy on feedback-labelled predictions in the window.").labels(
                result.model_version
            ).set(result.live_accuracy)
        gauge("emotion_live_macro_f1", "Macro-F1 on feedback-labelled predictions in the window.").labels(
            result.model_version
        ).set(result.quality["macro_f1"])
        # One text, one label: micro-F1 is the accuracy; a multi-label model's is over its labels.
        gauge("emotion_live_micro_f1", "Micro-F1 on feedback-labelled predictions in the window.").labels(
            result.model_version
        ).set(result.quality.get("micro_f1", result.quality["accuracy"]))
    frequency = result.label_frequency or {
        "current": result.emotion_share.get("current", {}),
        "reference": result.emotion_share.get("reference", {}),
    }
    label_frequency = gauge(
        "emotion_drift_label_frequency",
        "Share of texts each label was decided for, in the window (current) and the reference.",
        ["model_version", "emotion", "side"],
    )
    for side, shares in frequency.items():
        for emotion, value in shares.items():
            label_frequency.labels(result.model_version, emotion, side).set(value)
    return registry


def push_drift_metrics(
    gateway: str, result: DriftResult, retrain_triggered: bool, timeout: float = 10.0
) -> None:
    """Replace this model's group on the Pushgateway with the figures of ``result``."""
    push_to_gateway(
        gateway,
        job=JOB,
        grouping_key={"model_name": result.model_name},
        registry=drift_registry(result, retrain_triggered),
        timeout=timeout,
    )
