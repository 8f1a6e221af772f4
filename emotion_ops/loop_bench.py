"""``emotion-ops bench loop``: the monitoring loop end to end, measured.

From the current champion: serve it (the way ``emotion-ops serve`` does, with a fresh prediction
log), replay ``comments`` GoEmotions train comments through ``/predict_batch`` and send each one's
label to ``/feedback``, then run the monitor once in local mode with promotion on (drift, the
retrain policy, a retrain on data plus feedback, the gate on each set, the alias move). Before
and after, the champion is scored on GoEmotions dev (its rows that map onto the six emotions)
and on the dair-ai/emotion test split. Results go to ``var/bench/<time>/loop.json`` and
``loop.md``.

It acts on the configured registry: a retrained model that passes the gate becomes its champion
(as ``EMOTION_RETRAIN_AUTO_PROMOTE=true`` would); ``emotion-ops rollback`` moves it back.
"""

from __future__ import annotations

import json
import os
import platform
import random
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from core.registry import connect, load_bundle
from core.settings import DATA_DIR_CANDIDATES, MonitorSettings, ServiceSettings
from emotion_ops.processes import bentoml_ready, free_port, processor_name, running_process
from service.launch import serve_command

GOEMOTIONS_CANDIDATES = tuple(candidate.with_name("goemotions") for candidate in DATA_DIR_CANDIDATES)
BATCH = 64


def default_goemotions() -> str | None:
    for candidate in GOEMOTIONS_CANDIDATES:
        if (candidate / "labels.txt").is_file():
            return str(candidate.resolve())
    return None


def run(
    settings: MonitorSettings,
    goemotions: str,
    comments: int = 2000,
    seed: int = 0,
    output_root: Path | None = None,
    progress=print,
) -> Path:
    """Replay, monitor once, score before and after; returns the folder with loop.json/.md."""
    from monitoring.job import monitor_once
    from training.data import load_emotion_dataset
    from training.promote import evaluate_bundle

    started_at = datetime.now(UTC)
    steps: dict[str, float] = {}
    clock = time.perf_counter()
    shifted = load_emotion_dataset(goemotions, splits=("train", "validation", "test"), label_set="six")
    pool = shifted.splits["train"]
    if comments > len(pool):
        raise ValueError(f"--comments {comments}: the GoEmotions train split has {len(pool)} six-label rows")
    # The data the champion was trained on, without any GoEmotions part of it.
    originals = [part for part in settings.resolve_data_source().split(",") if part.strip()]
    original = load_emotion_dataset(
        next((part for part in originals if not (Path(part) / "labels.txt").is_file()), originals[0]),
        splits=("test",),
    )
    evaluation_sets = {
        "GoEmotions dev (six-label rows)": _only_test(shifted),
        "dair-ai/emotion test": original,
    }
    replay = pool.sample(n=comments, random_state=seed).reset_index(drop=True)
    client = connect(settings)
    before = load_bundle(client, settings)
    if set(shifted.labels) - set(before.labels):
        raise ValueError(
            f"the champion predicts {list(before.labels)}; the loop replays GoEmotions mapped onto "
            f"{list(shifted.labels)}, whose labels it must know to take them as feedback"
        )
    scores_before = {name: evaluate_bundle(before, data) for name, data in evaluation_sets.items()}
    steps["score the champion"] = time.perf_counter() - clock

    output = (output_root or settings.var_dir / "bench") / started_at.strftime("%Y%m%dT%H%M%SZ")
    output.mkdir(parents=True, exist_ok=True)
    log_url = f"sqlite:///{output / 'predictions.db'}"
    api_key = secrets.token_hex(16)
    port = free_port()
    serving = ServiceSettings(var_dir=settings.var_dir, host="127.0.0.1", port=port, api_key=api_key)
    command, env = serve_command(serving)
    env = {**env, "EMOTION_PREDICTION_LOG_URL": log_url, "EMOTION_LOG_SAMPLE_RATE": "1"}
    url = f"http://127.0.0.1:{port}"
    progress(f"loop: serving version {before.version}, replaying {comments} GoEmotions comments with labels")
    clock = time.perf_counter()
    with running_process(command, env, bentoml_ready(url, api_key), output / "serve.log", 300):
        steps["start the service"] = time.perf_counter() - clock
        clock = time.perf_counter()
        _replay(url, api_key, replay)
        steps["replay comments + feedback"] = time.perf_counter() - clock

    progress("loop: monitor once (drift, policy, retrain, gate, promotion)")
    monitor_settings = settings.model_copy(
        update={
            "prediction_log_url": log_url,
            "reports_dir": output / "reports",
            "retrain_mode": "local",
            "retrain_auto_promote": True,
            "drift_window_rows": comments,
            "pushgateway_url": None,
        }
    )
    clock = time.perf_counter()
    outcome = monitor_once(monitor_settings)
    steps["monitor once"] = time.perf_counter() - clock

    clock = time.perf_counter()
    after = load_bundle(client, settings)
    scores_after = (
        scores_before
        if after.version == before.version
        else {name: evaluate_bundle(after, data) for name, data in evaluation_sets.items()}
    )
    steps["score the new champion"] = time.perf_counter() - clock

    result = outcome.result
    results = {
        "measured_at": started_at.isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "processor": processor_name(), "platform": platform.platform()},
        "comments": comments,
        "champion_before": before.version,
        "champion_after": after.version,
        "drift": {
            "verdict": result.verdict,
            "drifted_share": result.drifted_share,
            "drifted_columns": [c.column for c in result.columns if c.drifted],
            "live_accuracy": result.live_accuracy,
            "labelled_rows": result.labelled_rows,
        },
        "decision": {"retrain": outcome.decision.retrain, "reason": outcome.decision.reason},
        "action": outcome.action,
        "scores": {
            name: {
                "rows": len(data.splits["test"]),
                "accuracy_before": scores_before[name].accuracy,
                "accuracy_after": scores_after[name].accuracy,
                "macro_f1_before": scores_before[name].macro_f1,
                "macro_f1_after": scores_after[name].macro_f1,
            }
            for name, data in evaluation_sets.items()
        },
        "seconds": {step: round(seconds, 1) for step, seconds in steps.items()},
    }
    (output / "loop.json").write_text(json.dumps(results, indent=2))
    markdown = to_markdown(results)
    (output / "loop.md").write_text(markdown)
    (output.parent / "loop-latest.md").write_text(markdown)
    return output


def _only_test(dataset):
    from training.data import EmotionDataset

    return EmotionDataset(
        splits={"test": dataset.splits["test"]}, labels=dataset.labels, source=dataset.source
    )


def _replay(url: str, api_key: str, replay) -> None:
    """Each comment through /predict_batch, then its label through /feedback, as a client would."""
    headers = {"x-api-key": api_key}
    rows = list(replay.itertuples(index=False))
    random.Random(0).shuffle(rows)
    with httpx.Client(base_url=url, headers=headers, timeout=120) as http:
        for start in range(0, len(rows), BATCH):
            chunk = rows[start : start + BATCH]
            answered = http.post("/predict_batch", json={"texts": [row.text for row in chunk]})
            answered.raise_for_status()
            for row, prediction in zip(chunk, answered.json(), strict=True):
                sent = http.post(
                    "/feedback", json={"request_id": prediction["request_id"], "label": row.label}
                )
                if sent.status_code not in (200, 202):
                    raise ValueError(f"the service refused feedback ({sent.status_code}): {sent.text}")


def to_markdown(results: dict) -> str:
    machine = results["machine"]
    drift = results["drift"]
    lines = [
        f"Measured {results['measured_at']} on {machine['cpus']} CPUs ({machine['processor']}): "
        f"{results['comments']} GoEmotions train comments replayed with their labels as feedback, "
        f"then one monitor cycle in local mode with promotion on; champion v{results['champion_before']} "
        f"→ v{results['champion_after']}.",
        "",
        "| evaluation set | rows | accuracy before | accuracy after | change "
        "| macro-F1 before | macro-F1 after |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, s in results["scores"].items():
        change = 100 * (s["accuracy_after"] - s["accuracy_before"])
        lines.append(
            f"| {name} | {s['rows']} | {100 * s['accuracy_before']:.2f} % "
            f"| {100 * s['accuracy_after']:.2f} % | {change:+.2f} pt "
            f"| {s['macro_f1_before']:.4f} | {s['macro_f1_after']:.4f} |"
        )
    live = "" if drift["live_accuracy"] is None else f", live accuracy {100 * drift['live_accuracy']:.1f} %"
    lines += [
        "",
        f"- drift: **{drift['verdict']}** (drifted share {drift['drifted_share']}, columns "
        f"{', '.join(drift['drifted_columns']) or 'none'}{live} on {drift['labelled_rows']} labels)",
        f"- decision: {'retrain' if results['decision']['retrain'] else 'hold'}: "
        f"{results['decision']['reason']}",
        f"- action (retrain and gate): {results['action'] or 'none'}",
        "",
        "| step | seconds |",
        "| --- | ---: |",
        *(f"| {step} | {seconds} |" for step, seconds in results["seconds"].items()),
    ]
    return "\n".join(lines) + "\n"
