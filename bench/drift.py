"""``emotion-ops bench drift``: how early the drift verdict sees a shift, and how often it cries wolf.

The champion classifies every dair-ai/emotion test text (unshifted traffic) and every GoEmotions
dev comment (the shift) once, on the served runtime and precision with its novelty index, as the
service would log them. Windows are then drawn from those rows and judged by the verdict's own
tests (``monitoring.drift.verdict_tests``), so thousands of windows take seconds:

- power: the share of windows called drift when ``share`` of their rows are Reddit comments
  (5, 10, 20 and 100 %), for 100- and 500-row windows;
- a label-prior shift: one emotion's share doubled (anger, love) with test texts only;
- false alarms: windows of test texts alone (``windows`` of each size; 1,000 or more, since fewer
  cannot show a rate of 1 %).

Each figure comes with its Wilson 95 % interval. Results go to ``var/bench/<time>/drift.json`` and
``drift.md``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.data import default_goemotions
from bench.processes import machine_facts
from core.registry import connect, load_bundle
from core.settings import MonitorSettings, ServiceSettings
from monitoring.drift import DriftPolicy, sample_window, verdict_tests

SHARES = (0.05, 0.10, 0.20, 1.0)
SIZES = (100, 500)
DOUBLED = ("anger", "love")


@dataclass(frozen=True)
class Pool:
    """Classified texts: what the service would log for each."""

    emotions: np.ndarray
    novelty: np.ndarray
    novel: np.ndarray
    labels: np.ndarray  # the true label (dair-ai test) or '' (Reddit comments)

    def rows(self, indices: np.ndarray) -> list[tuple]:
        return [
            (None, "", self.emotions[i], 1.0, None, float(self.novelty[i]), bool(self.novel[i]))
            for i in indices
        ]


def wilson(hits: int, total: int, z: float = 1.96) -> tuple[float, float]:
    if not total:
        return (0.0, 1.0)
    share = hits / total
    centre = (share + z * z / (2 * total)) / (1 + z * z / total)
    half = z * np.sqrt(share * (1 - share) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return (max(0.0, centre - half), min(1.0, centre + half))


def classify(predictor, texts: list[str], labels: list[str]) -> Pool:
    predictions = predictor.predict(texts)
    return Pool(
        emotions=np.array([p.emotion for p in predictions]),
        novelty=np.array([p.novelty for p in predictions], dtype=np.float64),
        novel=np.array([p.novel for p in predictions], dtype=bool),
        labels=np.array(labels),
    )


def judged(pool_rows: list[tuple], reference, expected: float, policy: DriftPolicy) -> dict[str, bool]:
    window = sample_window(pool_rows, sample_rows=1, shown=0)
    tests = verdict_tests(window, reference, expected, policy)
    return {
        "verdict": any(t["drifted"] for t in tests.values()),
        **{n: t["drifted"] for n, t in tests.items()},
    }


def run(
    settings: ServiceSettings,
    dair_test: str,
    goemotions: str | None = None,
    windows: int = 1000,
    seed: int = 0,
    output_root: Path | None = None,
    progress=print,
) -> Path:
    """Classify the test texts and the Reddit comments once, judge ``windows`` windows of each
    case; returns the folder with drift.json and drift.md."""
    from core.inference.runtime import load_predictor
    from monitoring.policy import drift_policy
    from training.data import load_emotion_dataset

    folder = goemotions or default_goemotions()
    if folder is None:
        raise ValueError(
            "no GoEmotions folder in data/goemotions or beside the checkout: pass --goemotions DIR"
        )
    policy = drift_policy(MonitorSettings())
    bundle = load_bundle(connect(settings), settings)
    variant = f"{settings.runtime}-{'int8' if settings.quantize else 'fp32'}"
    predictor = load_predictor(
        bundle.model_dir,
        runtime=settings.runtime,
        quantize=settings.quantize,
        max_length=bundle.card["max_length"],
    )
    predictor.novelty = bundle.novelty_index(predictor, variant)
    if predictor.novelty is None:
        raise ValueError(
            f"{bundle.name} v{bundle.version} has no novelty index (registered before it); retrain it"
        )
    expected = predictor.novelty.expected_share
    reference = bundle.reference()

    test = load_emotion_dataset(dair_test, splits=("test",)).splits["test"]
    reddit_texts = _goemotions_dev(folder)
    progress(f"classifying {len(test)} test texts and {len(reddit_texts)} Reddit comments ({variant})")
    started = time.perf_counter()
    unshifted = classify(predictor, test["text"].tolist(), test["label"].tolist())
    reddit = classify(predictor, reddit_texts, [""] * len(reddit_texts))
    per_text_ms = (time.perf_counter() - started) * 1000 / (len(test) + len(reddit_texts))

    rng = np.random.default_rng(seed)
    results: dict[str, list[dict[str, Any]]] = {"power": [], "label_shift": [], "false_alarms": []}
    judge_seconds, judged_windows = 0.0, 0
    for size in SIZES:
        progress(f"{windows} windows of {size} rows per case")
        for share in (0.0, *SHARES):
            hits: Counter = Counter()
            for _ in range(windows):
                shifted = rng.binomial(size, share) if share < 1 else size
                rows = unshifted.rows(_draw(rng, len(unshifted.emotions), size - shifted))
                rows += reddit.rows(_draw(rng, len(reddit.emotions), shifted))
                clock = time.perf_counter()
                hits.update(
                    name for name, drifted in judged(rows, reference, expected, policy).items() if drifted
                )
                judge_seconds += time.perf_counter() - clock
                judged_windows += 1
            key = "false_alarms" if share == 0 else "power"
            results[key].append(_row(size, share, hits, windows))
        for emotion in DOUBLED:
            hits = Counter()
            is_emotion = np.flatnonzero(unshifted.labels == emotion)
            others = np.flatnonzero(unshifted.labels != emotion)
            base_share = len(is_emotion) / len(unshifted.labels)
            for _ in range(windows):
                chosen = rng.binomial(size, min(1.0, 2 * base_share))
                indices = np.concatenate(
                    [
                        is_emotion[_draw(rng, len(is_emotion), chosen)],
                        others[_draw(rng, len(others), size - chosen)],
                    ]
                )
                hits.update(
                    name
                    for name, drifted in judged(unshifted.rows(indices), reference, expected, policy).items()
                    if drifted
                )
            results["label_shift"].append(
                {
                    **_row(size, 2 * base_share, hits, windows),
                    "emotion": emotion,
                    "from_share": round(base_share, 4),
                }
            )

    output = (output_root or settings.var_dir / "bench") / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    output.mkdir(parents=True, exist_ok=True)
    summary = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "model": {"name": bundle.name, "version": bundle.version, "variant": variant},
        "novelty": predictor.novelty.describe(),
        "false_alarm_rate": policy.false_alarm_rate,
        "windows_per_case": windows,
        "unshifted_rows": len(test),
        "reddit_rows": len(reddit_texts),
        "novel_share": {
            "dair_test": round(float(unshifted.novel.mean()), 4),
            "reddit": round(float(reddit.novel.mean()), 4),
        },
        "ms_per_text_classified": round(per_text_ms, 3),
        "ms_per_window_judged": round(judge_seconds * 1000 / max(judged_windows, 1), 3),
        **results,
    }
    (output / "drift.json").write_text(json.dumps(summary, indent=2))
    (output / "drift.md").write_text(to_markdown(summary))
    return output


def _draw(rng: np.random.Generator, pool: int, count: int) -> np.ndarray:
    """``count`` row numbers of ``pool``: without replacement, unless the pool is smaller."""
    return rng.choice(pool, count, replace=count > pool)


def _row(size: int, share: float, hits: Counter, windows: int) -> dict:
    low, high = wilson(hits["verdict"], windows)
    return {
        "rows": size,
        "share": round(share, 4),
        "flagged": round(hits["verdict"] / windows, 4),
        "interval": [round(low, 4), round(high, 4)],
        "by_novelty": round(hits["novelty_share"] / windows, 4),
        "by_label_mix": round(hits["label_mix"] / windows, 4),
    }


def _goemotions_dev(folder: str) -> list[str]:
    import csv

    path = Path(folder) / "dev.tsv"
    if not path.is_file():
        raise ValueError(f"no {path}: pass --goemotions DIR (labels.txt, dev.tsv)")
    with path.open(encoding="utf-8", newline="") as handle:
        return [
            row[0]
            for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            if row and row[0].strip()
        ]


def to_markdown(summary: dict) -> str:
    machine, novelty = summary["machine"], summary["novelty"]
    lines = [
        f"Measured {summary['measured_at']} on {machine['cpus']} CPUs ({machine['processor']}), model "
        f"{summary['model']['name']} v{summary['model']['version']} on {summary['model']['variant']}; "
        "novelty: "
        f"{novelty['neighbours']} nearest of {novelty['index_rows']} train texts, threshold set on "
        f"{novelty['calibration_rows']} validation texts "
        f"(expected novel share {novelty['expected_share']:.2%}). "
        f"Novel share: dair-ai test {summary['novel_share']['dair_test']:.2%}, Reddit comments "
        f"{summary['novel_share']['reddit']:.2%}. False-alarm budget {summary['false_alarm_rate']:.0%}, "
        f"{summary['windows_per_case']} windows per case.",
        "",
        "| window rows | Reddit share | flagged | 95 % interval | by novelty | by label mix |",
        "| ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for row in summary["false_alarms"] + summary["power"]:
        low, high = row["interval"]
        lines.append(
            f"| {row['rows']} | {row['share']:.0%} | {row['flagged']:.1%} | {low:.1%} to {high:.1%} | "
            f"{row['by_novelty']:.1%} | {row['by_label_mix']:.1%} |"
        )
    lines += [
        "",
        "| window rows | emotion doubled | share | flagged | 95 % interval | by novelty | by label mix |",
        "| ---: | --- | --- | ---: | --- | ---: | ---: |",
    ]
    for row in summary["label_shift"]:
        low, high = row["interval"]
        lines.append(
            f"| {row['rows']} | {row['emotion']} | {row['from_share']:.0%} → {row['share']:.0%} | "
            f"{row['flagged']:.1%} | "
            f"{low:.1%} to {high:.1%} | {row['by_novelty']:.1%} | {row['by_label_mix']:.1%} |"
        )
    lines += [
        "",
        f"Time: {summary['ms_per_text_classified']} ms per text to classify and score "
        "(once, where the model runs), "
        f"{summary['ms_per_window_judged']} ms per window to judge.",
    ]
    return "\n".join(lines) + "\n"
