"""The drift job timed on large windows: ``size`` logged rows written to a fresh SQLite log,
then one drift run over them in a child process of its own (its peak RSS is the job's)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from core.registry import connect, load_bundle
from core.settings import MonitorSettings, ServiceSettings
from core.store import Store, TrafficWindow
from core.store.rows import prediction_row

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def drift_timing(
    settings: ServiceSettings, bundle, texts: list[str], sizes: tuple[int, ...], work: Path
) -> list[dict]:
    """Time the drift job on ``sizes`` logged rows, each run in a fresh process for its peak RSS."""
    predictor = bundle.predictor(batch_size=64)
    predictions = predictor.predict(texts)
    results = []
    for size in sizes:
        url = f"sqlite:///{work / f'drift-{size}.db'}"
        store = Store.open(url).predictions
        start = datetime.now(UTC) - timedelta(hours=1)
        rows = []
        for index in range(size):
            prediction = predictions[index % len(predictions)]
            rows.append(
                prediction_row(
                    request_id=str(uuid.uuid4()),
                    created_at=start + timedelta(milliseconds=index),
                    model_name=bundle.name,
                    model_version=bundle.version,
                    text=texts[index % len(texts)],
                    emotion=prediction.emotion,
                    confidence=prediction.confidence,
                    probabilities=prediction.probabilities,
                    latency_ms=10.0,
                    truncated=prediction.truncated,
                    tokens=prediction.tokens,
                    uncertain=False,
                )
            )
            if len(rows) == 10_000:
                store.insert_many(rows)
                rows = []
        store.insert_many(rows)
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.drift_job",
                "--drift-child",
                url,
                str(size),
                str(work / "reports"),
            ],
            cwd=PROJECT_ROOT,
            env={**os.environ, "EMOTION_VAR_DIR": str(settings.var_dir)},
            capture_output=True,
            text=True,
            check=True,
        )
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return results


def _drift_child(url: str, size: int, output: str) -> None:
    """Child process: one drift run over the last ``size`` rows; prints seconds and peak RSS."""
    # The drift job's own imports (Evidently) count toward the child's peak memory.
    from monitoring.drift import analyse, sample_text_chars
    from monitoring.policy import drift_policy

    settings = MonitorSettings()
    bundle = load_bundle(connect(settings), settings)
    reference = bundle.reference()
    policy = drift_policy(settings)
    window = TrafficWindow(bundle.version, rows=size)
    started = time.perf_counter()
    result = analyse(
        Store.connect(url).predictions.stream_window(window, max_chars=sample_text_chars(policy)),
        window,
        reference,
        bundle.labels,
        bundle.name,
        policy,
        Path(output),
    )
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "rows": size,
                "analysed_rows": result.analysed_rows,
                "verdict": result.verdict,
                "seconds": round(seconds, 1),
                "peak_rss_mb": round(peak_mb),
                "torch_loaded": "torch" in sys.modules,  # the drift job needs none: it must not count
            }
        )
    )


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--drift-child":
        _drift_child(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        sys.exit("usage: emotion-ops bench (this module's own entry is for its drift child process)")
