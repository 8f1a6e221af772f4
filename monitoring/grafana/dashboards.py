"""The Grafana dashboards, as code: ``python -m monitoring.grafana.dashboards`` rewrites the JSON
files in ``dashboards/`` that Grafana's provisioning loads (a test checks they are current).

Plain dicts in Grafana's dashboard schema: three small dashboards do not need a library. Every
query uses the recording rules in ``monitoring/prometheus/rules`` or raw series the service and
the drift job export; a test runs each one against a real Prometheus.
"""

from __future__ import annotations

import json
from pathlib import Path

DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
FOLDER = Path(__file__).parent / "dashboards"
SERVICE = 'service_name="emotion-service"'


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> dict:
    return {
        "refId": ref,
        "datasource": DATASOURCE,
        "expr": expr,
        "legendFormat": legend or "__auto",
        "instant": instant,
        "range": not instant,
    }


def panel(
    kind: str, title: str, targets: list[dict], unit: str = "short", description: str = "", **extra
) -> dict:
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit, **extra.pop("defaults", {})}, "overrides": []},
        "options": extra.pop("options", {}),
        **extra,
    }


def text_panel(title: str, markdown: str) -> dict:
    return {"type": "text", "title": title, "options": {"mode": "markdown", "content": markdown}}


def dashboard(uid: str, title: str, description: str, panels: list[dict]) -> dict:
    laid_out = []
    for index, item in enumerate(panels):
        width = item.pop("width", 12)
        height = item.pop("height", 8)
        laid_out.append({**item, "id": index + 1, "gridPos": {"h": height, "w": width, "x": 0, "y": 0}})
    _flow(laid_out)
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["emotion-ops"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": []},
        "annotations": {"list": []},
        "panels": laid_out,
    }


def _flow(panels: list[dict]) -> None:
    """Place panels left to right, wrapping at Grafana's 24 columns."""
    x = y = row_height = 0
    for item in panels:
        grid = item["gridPos"]
        if x + grid["w"] > 24:
            x, y, row_height = 0, y + row_height, 0
        grid["x"], grid["y"] = x, y
        x += grid["w"]
        row_height = max(row_height, grid["h"])


def service_dashboard() -> dict:
    return dashboard(
        "emotion-service",
        "emotion-ops / Service",
        "Traffic, errors, latency, concurrency and batching of the BentoML service.",
        [
            panel(
                "timeseries",
                "Requests per second by endpoint",
                [target("emotion:requests:rate5m", "{{endpoint}}")],
                unit="reqps",
            ),
            panel(
                "timeseries",
                "Error ratio by status code",
                [
                    target(
                        f'sum by (http_response_code) (rate(bentoml_service_request_total{{{SERVICE}, http_response_code!~"2.."}}[5m]))'
                        f" / ignoring (http_response_code) group_left () sum(rate(bentoml_service_request_total{{{SERVICE}}}[5m]))",
                        "{{http_response_code}}",
                    )
                ],
                unit="percentunit",
                description="Share of all requests answered with each non-2xx code (4xx: client input; 5xx: ours).",
            ),
            panel(
                "timeseries",
                "/predict latency percentiles",
                [
                    target("emotion:request_latency_seconds:p50", "p50", "A"),
                    target("emotion:request_latency_seconds:p95", "p95", "B"),
                    target("emotion:request_latency_seconds:p99", "p99", "C"),
                ],
                unit="s",
                description="SLO: p95 under 250 ms (alert EmotionLatencyP95OverSLO).",
            ),
            panel(
                "stat",
                "5xx ratio (prediction endpoints)",
                [target("emotion:errors_5xx:ratio_rate5m", "5xx")],
                unit="percentunit",
                width=6,
            ),
            panel(
                "stat",
                "In-flight requests",
                [
                    target(
                        f'sum(bentoml_service_request_in_progress{{{SERVICE}, endpoint=~"/predict|/predict_batch"}})',
                        "in flight",
                    )
                ],
                width=6,
            ),
            panel(
                "timeseries",
                "Batch size (texts per forward pass)",
                [
                    # The in-process batcher's histogram, or BentoML's when the model runs as its own service.
                    target(
                        "(sum(rate(emotion_batch_size_sum[5m])) / sum(rate(emotion_batch_size_count[5m]))) or (sum(rate(bentoml_service_adaptive_batch_size_sum[5m])) / sum(rate(bentoml_service_adaptive_batch_size_count[5m])))",
                        "mean",
                        "A",
                    ),
                    target(
                        "histogram_quantile(0.95, sum by (le) (rate(emotion_batch_size_bucket[5m]))) or histogram_quantile(0.95, sum by (le) (rate(bentoml_service_adaptive_batch_size_bucket[5m])))",
                        "p95",
                        "B",
                    ),
                ],
            ),
            panel(
                "timeseries",
                "Prediction log: queue depth and write failures",
                [
                    target("sum(emotion_prediction_log_queue_depth)", "queued rows", "A"),
                    target(
                        "sum(increase(emotion_prediction_log_write_failures_total[5m]))",
                        "failed writes (5m)",
                        "B",
                    ),
                ],
            ),
        ],
    )


def model_dashboard() -> dict:
    return dashboard(
        "emotion-model",
        "emotion-ops / Model",
        "What the served model predicts, how sure it is, and how often it is right.",
        [
            panel(
                "timeseries",
                "Prediction mix by emotion",
                [target("emotion:prediction_share:ratio_rate5m", "{{emotion}}")],
                unit="percentunit",
                options={"stacking": {"mode": "normal"}},
            ),
            panel(
                "heatmap",
                "Confidence distribution",
                [target("sum by (le) (rate(emotion_prediction_confidence_bucket[5m]))", "{{le}}")],
                options={"calculate": False, "yAxis": {"unit": "percentunit"}},
            ),
            panel(
                "timeseries",
                "Uncertain share",
                [target("emotion:uncertain_share:ratio_rate5m", "uncertain")],
                unit="percentunit",
                description="Predictions under EMOTION_UNCERTAIN_BELOW confidence.",
            ),
            panel(
                "timeseries",
                "Live accuracy",
                [
                    target("emotion:feedback_accuracy:ratio_rate1h", "feedback at the service (1h)", "A"),
                    target(
                        "max by (model_version) (emotion_live_accuracy)",
                        "drift job window v{{model_version}}",
                        "B",
                    ),
                ],
                unit="percentunit",
                description="From POST /feedback labels; the floor is 0.85 (alert EmotionLiveAccuracyBelowFloor).",
            ),
            panel(
                "table",
                "Served model",
                [
                    target(
                        "max by (model_name, model_version, alias, base_model, quantized) (emotion_model_info) == 1",
                        instant=True,
                    )
                ],
                options={"showHeader": True},
                transformations=[{"id": "labelsToFields", "options": {"mode": "columns"}}],
            ),
            panel(
                "timeseries",
                "Input tokens and truncation",
                [
                    target(
                        "histogram_quantile(0.95, sum by (le) (rate(emotion_input_tokens_bucket[5m])))",
                        "p95 tokens",
                        "A",
                    ),
                    target("sum(rate(emotion_truncated_total[5m])) or vector(0)", "truncated texts/s", "B"),
                ],
            ),
        ],
    )


def drift_dashboard() -> dict:
    return dashboard(
        "emotion-drift",
        "emotion-ops / Drift",
        "Figures the drift job pushes after each run (Evidently reports on logged traffic).",
        [
            panel(
                "stat",
                "Dataset drift (latest run)",
                [target("max by (model_version) (emotion_drift_dataset_drift)", "v{{model_version}}")],
                width=6,
                defaults={
                    "mappings": [
                        {"type": "value", "options": {"0": {"text": "no drift"}, "1": {"text": "DRIFT"}}}
                    ]
                },
            ),
            panel(
                "stat",
                "Drifted share of columns",
                [
                    target(
                        "max by (model_version) (emotion_drift_share_drifted_columns)", "v{{model_version}}"
                    )
                ],
                unit="percentunit",
                width=6,
            ),
            panel(
                "stat",
                "Since the last run",
                [target("time() - max(emotion_drift_last_run_timestamp_seconds)", "age")],
                unit="s",
                width=6,
                description="Alert EmotionDriftJobStale fires after 3 hours.",
            ),
            panel(
                "stat",
                "Window rows / labelled",
                [
                    target("max(emotion_drift_window_rows)", "rows", "A"),
                    target("max(emotion_drift_labelled_rows)", "labelled", "B"),
                ],
                width=6,
            ),
            panel(
                "bargauge",
                "Drift score per column",
                [
                    target(
                        "max by (column, method) (emotion_drift_column_score)",
                        "{{column}} ({{method}})",
                        instant=True,
                    )
                ],
                description="Jensen-Shannon distance (threshold 0.1) or the text domain classifier's ROC AUC (0.55).",
            ),
            panel(
                "timeseries",
                "Columns drifted over time",
                [target("max by (column) (emotion_drift_column_drifted)", "{{column}}")],
            ),
            panel(
                "timeseries",
                "Live accuracy (drift job window)",
                [target("max by (model_version) (emotion_live_accuracy)", "v{{model_version}}")],
                unit="percentunit",
            ),
            panel(
                "timeseries",
                "Retrain triggered",
                [target("max(emotion_drift_retrain_triggered)", "triggered")],
            ),
            text_panel(
                "Where the reports are",
                "Each run writes a self-contained Evidently page and a JSON summary.\n\n"
                "- Service: **/reports/latest** (page), **/reports** (index with status and trigger decision)\n"
                "- CLI: `emotion-ops reports list`, `emotion-ops reports show latest`, "
                "`emotion-ops reports ack <id> --note ...`\n"
                "- Files: `EMOTION_REPORTS_DIR` (default `var/reports/<id>/drift.html`, `summary.json`)",
            ),
        ],
    )


DASHBOARDS = {"service.json": service_dashboard, "model.json": model_dashboard, "drift.json": drift_dashboard}


def render() -> dict[str, str]:
    return {name: json.dumps(build(), indent=2) + "\n" for name, build in DASHBOARDS.items()}


def main() -> None:
    FOLDER.mkdir(exist_ok=True)
    for name, content in render().items():
        (FOLDER / name).write_text(content)
        print(f"wrote {FOLDER / name}")


if __name__ == "__main__":
    main()
