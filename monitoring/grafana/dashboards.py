"""The Grafana dashboards, as code: ``python -m monitoring.grafana.dashboards`` rewrites the JSON
files in ``dashboards/`` that Grafana's provisioning loads (a test checks they are current).

Built with Grafana's own builders (grafana-foundation-sdk, the flavour for the Grafana version in
docker-compose.yml). Every query uses the recording rules in ``monitoring/prometheus/rules`` or
raw series the service and the drift job export; a test runs each one against a real Prometheus.
"""

from __future__ import annotations

from pathlib import Path

from grafana_foundation_sdk.builders import bargauge, heatmap, prometheus, stat, table, text, timeseries
from grafana_foundation_sdk.builders.common import StackingConfig
from grafana_foundation_sdk.builders.dashboard import Dashboard
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as schema
from grafana_foundation_sdk.models.common import StackingMode
from grafana_foundation_sdk.models.text import TextMode

DATASOURCE = schema.DataSourceRef(type_val="prometheus", uid="prometheus")
FOLDER = Path(__file__).parent / "dashboards"
SERVICE = 'service_name="emotion-service"'


def query(expr: str, legend: str = "__auto", instant: bool = False) -> prometheus.Dataquery:
    built = prometheus.Dataquery().datasource(DATASOURCE).expr(expr).legend_format(legend)
    return built.instant() if instant else built.range()


def panel(
    kind,
    title: str,
    *queries: prometheus.Dataquery,
    unit: str = "short",
    description: str = "",
    width: int = 12,
):
    built = kind.Panel().title(title).description(description).datasource(DATASOURCE).unit(unit)
    for index, target in enumerate(queries):
        built.with_target(target.ref_id(chr(ord("A") + index)))
    return built.span(width).height(8)


def dashboard(uid: str, title: str, description: str, *panels) -> Dashboard:
    board = (
        Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["emotion-ops"])
        .version(1)
        .refresh("30s")
        .time("now-6h", "now")
        .variables([])
        .annotations([])
    )
    # The SDK places each panel after the previous one and wraps once a row reaches 24 columns,
    # so every row here adds up to exactly 24.
    for index, item in enumerate(panels, 1):
        board.with_panel(item.id(index))
    return board


def service_dashboard() -> Dashboard:
    return dashboard(
        "emotion-service",
        "emotion-ops / Service",
        "Traffic, errors, latency, concurrency and batching of the BentoML service.",
        panel(
            timeseries,
            "Requests per second by endpoint",
            query("emotion:requests:rate5m", "{{endpoint}}"),
            unit="reqps",
        ),
        panel(
            timeseries,
            "Error ratio by status code",
            query(
                f'sum by (http_response_code) (rate(bentoml_service_request_total{{{SERVICE}, http_response_code!~"2.."}}[5m]))'
                f" / ignoring (http_response_code) group_left () sum(rate(bentoml_service_request_total{{{SERVICE}}}[5m]))",
                "{{http_response_code}}",
            ),
            unit="percentunit",
            description="Share of all requests answered with each non-2xx code (4xx: client input; 5xx: ours).",
        ),
        panel(
            timeseries,
            "/predict latency percentiles",
            *(query(f"emotion:request_latency_seconds:{p}", p) for p in ("p50", "p95", "p99")),
            unit="s",
            description="SLO: p95 under 250 ms (alert EmotionLatencyP95OverSLO).",
        ),
        panel(
            stat,
            "5xx ratio (prediction endpoints)",
            query("emotion:errors_5xx:ratio_rate5m", "5xx"),
            unit="percentunit",
            width=6,
        ),
        panel(
            stat,
            "In-flight requests",
            query(
                f'sum(bentoml_service_request_in_progress{{{SERVICE}, endpoint=~"/predict|/predict_batch"}})',
                "in flight",
            ),
            width=6,
        ),
        panel(
            timeseries,
            "Batch size (texts per forward pass)",
            query("sum(rate(emotion_batch_size_sum[5m])) / sum(rate(emotion_batch_size_count[5m]))", "mean"),
            query("histogram_quantile(0.95, sum by (le) (rate(emotion_batch_size_bucket[5m])))", "p95"),
        ),
        panel(
            timeseries,
            "Prediction log: queue depth and write failures",
            query("sum(emotion_prediction_log_queue_depth)", "queued rows"),
            query("sum(increase(emotion_prediction_log_write_failures_total[5m]))", "failed writes (5m)"),
        ),
        panel(
            timeseries,
            "Served against the model's in-process rate",
            query("emotion:served_texts:rate5m", "served texts/s"),
            query("emotion:in_process_texts:rate5m", "in-process texts/s (the model alone)"),
            unit="short",
            description="Texts answered per second, and what the workers' models could compute per second "
            "at the same batch sizes (texts per forward-pass second, times the workers).",
        ),
        panel(
            timeseries,
            "Served / in-process (model busy share)",
            query("emotion:served_to_in_process:ratio_rate5m", "served / in-process"),
            unit="percentunit",
            description="Share of the workers' time in forward passes. At saturation (p95 climbing), "
            "the rest is the request path: HTTP, validation, metrics, the log (emotion-ops bench path).",
        ),
    )


def model_dashboard() -> Dashboard:
    return dashboard(
        "emotion-model",
        "emotion-ops / Model",
        "What the served model predicts, how sure it is, and how often it is right.",
        panel(
            timeseries,
            "Prediction mix by emotion",
            query("emotion:prediction_share:ratio_rate5m", "{{emotion}}"),
            unit="percentunit",
        ).stacking(StackingConfig().mode(StackingMode.NORMAL)),
        panel(
            heatmap,
            "Confidence distribution",
            query("sum by (le) (rate(emotion_prediction_confidence_bucket[5m]))", "{{le}}"),
        )
        .calculate(False)
        .y_axis(heatmap.YAxisConfig().unit("percentunit")),
        panel(
            timeseries,
            "Uncertain share",
            query("emotion:uncertain_share:ratio_rate5m", "uncertain"),
            unit="percentunit",
            description="Predictions under EMOTION_UNCERTAIN_BELOW confidence.",
        ),
        panel(
            timeseries,
            "Live accuracy",
            query("emotion:feedback_accuracy:ratio_rate1h", "feedback at the service (1h)"),
            query("max by (model_version) (emotion_live_accuracy)", "drift job window v{{model_version}}"),
            unit="percentunit",
            description="From POST /feedback labels; the floor is 0.85 (alert EmotionLiveAccuracyBelowFloor).",
        ),
        panel(
            table,
            "Served model",
            query(
                "max by (model_name, model_version, alias, base_model, quantized) (emotion_model_info) == 1",
                instant=True,
            ),
        )
        .show_header(True)
        .with_transformation(
            schema.DataTransformerConfig(id_val="labelsToFields", options={"mode": "columns"})
        ),
        panel(
            timeseries,
            "Input tokens and truncation",
            query(
                "histogram_quantile(0.95, sum by (le) (rate(emotion_input_tokens_bucket[5m])))", "p95 tokens"
            ),
            query("sum(rate(emotion_truncated_total[5m])) or vector(0)", "truncated texts/s"),
        ),
        panel(
            timeseries,
            "Label frequency",
            query("emotion:label_frequency:ratio_rate5m", "{{emotion}}"),
            unit="percentunit",
            description="Share of texts each label is decided for; a multi-label model's shares need "
            "not sum to 1 (a single-label model's are the prediction mix).",
            width=24,
        ),
    )


def drift_dashboard() -> Dashboard:
    return dashboard(
        "emotion-drift",
        "emotion-ops / Drift",
        "Figures the drift job pushes after each run (Evidently reports on logged traffic).",
        panel(
            stat,
            "Dataset drift (latest run)",
            query("max by (model_version) (emotion_drift_dataset_drift)", "v{{model_version}}"),
            width=6,
        ).mappings(
            [
                schema.ValueMap(
                    options={
                        "0": schema.ValueMappingResult(text="no drift"),
                        "1": schema.ValueMappingResult(text="DRIFT"),
                    }
                )
            ]
        ),
        panel(
            stat,
            "Drifted share of columns",
            query("max by (model_version) (emotion_drift_share_drifted_columns)", "v{{model_version}}"),
            unit="percentunit",
            width=6,
        ),
        panel(
            stat,
            "Since the last run",
            query("time() - max(emotion_drift_last_run_timestamp_seconds)", "age"),
            unit="s",
            width=6,
            description="Alert EmotionDriftJobStale fires after 3 hours.",
        ),
        panel(
            stat,
            "Window rows / labelled",
            query("max(emotion_drift_window_rows)", "rows"),
            query("max(emotion_drift_labelled_rows)", "labelled"),
            width=6,
        ),
        panel(
            bargauge,
            "Drift score per column",
            query(
                "max by (column, method) (emotion_drift_column_score)",
                "{{column}} ({{method}})",
                instant=True,
            ),
            description="Jensen-Shannon distance (threshold 0.1) or the text domain classifier's ROC AUC (0.55).",
        ),
        panel(
            timeseries,
            "Columns drifted over time",
            query("max by (column) (emotion_drift_column_drifted)", "{{column}}"),
        ),
        panel(
            timeseries,
            "Live quality (drift job window)",
            query("max by (model_version) (emotion_live_accuracy)", "accuracy v{{model_version}}"),
            query("max by (model_version) (emotion_live_macro_f1)", "macro-F1 v{{model_version}}"),
            query("max by (model_version) (emotion_live_micro_f1)", "micro-F1 v{{model_version}}"),
            unit="percentunit",
            description="On feedback-labelled rows; a multi-label model's accuracy is the exact match "
            "of label sets, its F1s are over labels.",
        ),
        panel(timeseries, "Retrain triggered", query("max(emotion_drift_retrain_triggered)", "triggered")),
        panel(
            bargauge,
            "Label frequency: window vs reference",
            query(
                "max by (emotion, side) (emotion_drift_label_frequency)",
                "{{emotion}} ({{side}})",
                instant=True,
            ),
            unit="percentunit",
            description="Share of texts each label was decided for (a multi-label model's need not sum to 1).",
            width=12,
        ),
        panel(
            timeseries,
            "Novel texts (share of the window)",
            query("max by (model_version) (emotion_drift_novelty_share)", "novel v{{model_version}}"),
            query(
                "max by (model_version) (emotion_drift_novelty_expected_share)",
                "unshifted traffic v{{model_version}}",
            ),
            unit="percentunit",
            description="Texts unlike the model's training data (over its novelty threshold); about 1 % of "
            "unshifted traffic is. Alert EmotionNovelTraffic fires at three times that.",
        ),
        panel(
            timeseries,
            "Novel share of the window (estimate, 95 % interval)",
            query(
                "max by (model_version, bound) (emotion_drift_novel_share_estimate)",
                "{{bound}} v{{model_version}}",
            ),
            unit="percentunit",
            description="The share of the window unlike anything the model knows, net of the share "
            "unshifted traffic has over the threshold: a floor (a novel text under the threshold is "
            "not counted).",
        ),
        panel(
            timeseries,
            "Accuracy estimated without labels (ATC)",
            query(
                "max by (model_version, part) (emotion_estimated_accuracy)",
                "{{part}} v{{model_version}}",
            ),
            query("max by (model_version) (emotion_live_accuracy)", "live (feedback) v{{model_version}}"),
            unit="percentunit",
            description="From the model's confidence, calibrated on the reference split, for all the "
            "window's texts and its familiar and novel ones apart; it reads high on novel texts "
            "(docs/performance.md). Alert EmotionEstimatedAccuracyBelowFloor fires under 85 %.",
        ),
        panel(
            timeseries,
            "Verdict tests (p-value)",
            query("max by (test) (emotion_drift_test_p_value)", "{{test}}"),
            description="The verdict is drift when a test's p-value is under its share of "
            "EMOTION_DRIFT_FALSE_ALARM_RATE (0.01, split between the tests).",
        ),
        text.Panel()
        .title("Where the reports are")
        .mode(TextMode.MARKDOWN)
        .content(
            "Each run writes a self-contained Evidently page and a JSON summary.\n\n"
            "- Service: **/reports/latest** (page), **/reports** (index with status and trigger decision)\n"
            "- CLI: `emotion-ops reports list`, `emotion-ops reports show latest`, "
            "`emotion-ops reports ack <id> --note ...`\n"
            "- Files: `EMOTION_REPORTS_DIR` (default `var/reports/<id>/drift.html`, `summary.json`)"
        )
        .span(12)
        .height(8),
    )


DASHBOARDS = {"service.json": service_dashboard, "model.json": model_dashboard, "drift.json": drift_dashboard}


def render() -> dict[str, str]:
    encoder = JSONEncoder(indent=2)
    return {name: encoder.encode(build().build()) + "\n" for name, build in DASHBOARDS.items()}


def main() -> None:
    FOLDER.mkdir(exist_ok=True)
    for name, content in render().items():
        (FOLDER / name).write_text(content)
        print(f"wrote {FOLDER / name}")


if __name__ == "__main__":
    main()
