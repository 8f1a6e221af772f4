"""Custom Prometheus metrics, defined once at import (BentoML serves them on /metrics).

Labels are low-cardinality: emotion names, model versions and error types, never text.
BentoML runs workers with prometheus_client's multiprocess mode, so gauges say how to combine
values across processes.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PREDICTIONS = Counter(
    "emotion_predictions_total", "Predicted texts by emotion and model version.", ["emotion", "model_version"]
)
# A multi-label model decides several labels per text: each is counted here (a single-label
# model's one emotion too), so this over emotion_predictions_total is each label's frequency.
LABELS_DECIDED = Counter(
    "emotion_predicted_labels_total",
    "Labels decided per text, by label and model version (multi-label: each over its threshold).",
    ["emotion", "model_version"],
)
CONFIDENCE = Histogram(
    "emotion_prediction_confidence",
    "Probability of the predicted emotion.",
    ["model_version"],
    buckets=(0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
)
INPUT_TOKENS = Histogram(
    "emotion_input_tokens",
    "Tokens per input text (after truncation).",
    buckets=(8, 16, 32, 48, 64, 96, 128, 256, 512),
)
TRUNCATED = Counter("emotion_truncated_total", "Texts cut to the model's maximum tokens.", ["model_version"])
UNCERTAIN = Counter(
    "emotion_uncertain_total", "Predictions under the confidence threshold.", ["model_version"]
)
ERRORS = Counter("emotion_errors_total", "Requests answered with an error, by type.", ["type"])
MODEL_INFO = Gauge(
    "emotion_model_info",
    "The served model: 1 for the version being served.",
    ["model_name", "model_version", "alias", "base_model", "quantized"],
    multiprocess_mode="livemax",
)
FEEDBACK = Counter("emotion_feedback_total", "True labels received.", ["model_version"])
FEEDBACK_CORRECT = Counter(
    "emotion_feedback_correct_total", "True labels that matched the prediction.", ["model_version"]
)
LOG_QUEUE_DEPTH = Gauge(
    "emotion_prediction_log_queue_depth", "Rows waiting to be written.", multiprocess_mode="livesum"
)
LOG_WRITE_FAILURES = Counter(
    "emotion_prediction_log_write_failures_total", "Rows whose write failed (kept on local disk)."
)
BATCH_SIZE = Histogram(
    "emotion_batch_size",
    "Texts per forward pass of the in-process batcher.",
    buckets=(1, 2, 4, 8, 16, 24, 32, 48, 64, 128, 256),
)
# The model's own time, beside what the service serves: texts served over texts per forward
# second (times the workers) is the served-to-in-process ratio on the Service dashboard, and a
# request's CPU minus its share of the forward CPU is what the request path costs.
FORWARD_SECONDS = Counter(
    "emotion_forward_seconds_total",
    "Wall seconds of the model's forward passes (tokenizer, model, novelty score).",
)
FORWARD_CPU_SECONDS = Counter(
    "emotion_forward_cpu_seconds_total",
    "CPU seconds of the forward thread in those passes (the model's whole cost with one "
    "intra-op thread per worker, the default).",
)
# Each worker states the configured count (max over workers): a sum of ones would go on counting
# a crashed worker, whose gauge file stays behind unless someone marks its process dead.
WORKERS = Gauge("emotion_workers", "Worker processes serving the model.", multiprocess_mode="livemax")
LOG_DROPPED = Counter(
    "emotion_prediction_log_dropped_rows_total",
    "Rows neither written nor spooled (the spool was full or the disk refused them).",
)
LOG_REJECTED = Counter(
    "emotion_prediction_log_rejected_rows_total",
    "Rows the database refused while it was up (kept in the spool's rejected/ folder).",
)
LOG_WRITER_ERRORS = Counter(
    "emotion_prediction_log_writer_errors_total", "Writer cycles that failed unexpectedly (it carries on)."
)
LOG_SPOOL_BYTES = Gauge(
    "emotion_prediction_log_spool_bytes",
    "Bytes of rows waiting on local disk for the database.",
    multiprocess_mode="livemax",  # the workers of one service share one spool folder
)
LOG_SPOOL_LIMIT = Gauge(
    "emotion_prediction_log_spool_limit_bytes",
    "The spool's size limit (EMOTION_SPOOL_MAX_BYTES).",
    multiprocess_mode="livemax",
)
BATCHER_SHED = Counter(
    "emotion_shed_texts_total", "Texts refused with 503 because the model's queue was full."
)

# The shadow (service.shadow): the waiting challenger's answers, never sent to a client.
SHADOW_SCORED = Counter(
    "emotion_shadow_predictions_total",
    "Live texts the waiting challenger also scored, by its version and whether it agreed with the champion.",
    ["challenger_version", "agreement"],
)
SHADOW_QUEUE_DEPTH = Gauge(
    "emotion_shadow_queue_depth", "Texts waiting for the shadow's challenger.", multiprocess_mode="livesum"
)
SHADOW_SKIPPED = Counter(
    "emotion_shadow_skipped_total",
    "Sampled texts the shadow left unscored: its queue was full (busy) or its write failed.",
    ["reason"],
)


def count_prediction(prediction) -> None:
    """One answered text (an ``EmotionPrediction``) in the model metrics."""
    version = prediction.model_version
    PREDICTIONS.labels(prediction.emotion, version).inc()
    for emotion in prediction.emotions:
        LABELS_DECIDED.labels(emotion, version).inc()
    CONFIDENCE.labels(version).observe(prediction.confidence)
    INPUT_TOKENS.observe(prediction.tokens)
    if prediction.truncated:
        TRUNCATED.labels(version).inc()
    if prediction.uncertain:
        UNCERTAIN.labels(version).inc()


def export_model_info(old, new) -> None:
    """``ChampionHolder``'s swap hook: the served version's info series to 1, the old one's to 0."""
    if old is not None:
        MODEL_INFO.labels(old.name, old.version, old.alias, old.base_model, str(old.quantized)).set(0)
    MODEL_INFO.labels(new.name, new.version, new.alias, new.base_model, str(new.quantized)).set(1)


def log_writer_callbacks() -> dict:
    """The prediction log writer's hooks, wired to the metrics above."""
    return {
        "on_write_failure": LOG_WRITE_FAILURES.inc,
        "on_depth": LOG_QUEUE_DEPTH.set,
        "on_dropped": LOG_DROPPED.inc,
        "on_rejected": LOG_REJECTED.inc,
        "on_spool_bytes": LOG_SPOOL_BYTES.set,
        "on_error": LOG_WRITER_ERRORS.inc,
    }
