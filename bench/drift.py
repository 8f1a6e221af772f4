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
from monitoring.drift import DriftPolicy, atc_threshold, estimated_accuracy, sample_window, verdict_tests

SHARES = (0.05, 0.10, 0.20, 1.0)
SIZES = (100, 500)
DOUBLED = ("anger", "love")


@dataclass(frozen=True)
class Pool:
    """Classified texts: what the service would log for each."""

    emotions: np.ndarray
    novelty: np.ndarray
    novel: np.ndarray
    labels: np.ndarray  # the true label (dair-ai test, six-label Reddit comments) or ''
    confidence: np.ndarray

    def rows(self, indices: np.ndarray) -> list[tuple]:
        return [
            (
                None,
                "",
                self.emotions[i],
                float(self.confidence[i]),
                None,
                float(self.novelty[i]),
                bool(self.novel[i]),
            )
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
        confidence=np.array([p.confidence for p in predictions], dtype=np.float64),
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
    with_grid: bool = True,
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

    progress("accuracy without labels: ATC backtest")
    labelled_reddit = _goemotions_six_label_dev(folder)
    reddit_labelled = classify(predictor, labelled_reddit["text"].tolist(), labelled_reddit["label"].tolist())
    backtest = atc_backtest(unshifted, reddit_labelled, reference, windows, rng)
    grid = None
    if with_grid and not reddit_texts:
        progress("grid: no Reddit comment to mix in; left out")
    elif with_grid:
        grid = measure_grid(bundle, test, reddit_texts, policy, windows, seed, progress)

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
        "accuracy_estimate": backtest,
        "grid": grid,
    }
    (output / "drift.json").write_text(json.dumps(summary, indent=2))
    (output / "drift.md").write_text(to_markdown(summary))
    return output


def atc_backtest(
    unshifted: Pool, reddit: Pool, reference, windows: int, rng: np.random.Generator, size: int = 500
) -> list[dict]:
    """The label-free accuracy estimate (``monitoring.drift.estimated_accuracy``, ATC) against
    the true accuracy of windows of dair-ai test texts with six-label Reddit comments mixed in."""
    threshold = atc_threshold(reference)
    assert threshold is not None, "the reference has no labels"
    rows = []
    for share in (0.0, *SHARES):
        if share and not len(reddit.labels):  # no six-label comment to mix in
            continue
        errors: list[float] = []
        familiar_errors: list[float] = []
        novel_errors: list[float] = []
        for _ in range(windows):
            shifted = rng.binomial(size, share) if share < 1 else size
            parts = [
                (unshifted, _draw(rng, len(unshifted.labels), size - shifted)),
                (reddit, _draw(rng, len(reddit.labels), shifted)),
            ]
            window = sample_window(
                [row for pool, chosen in parts for row in pool.rows(chosen)],
                sample_rows=1,
                shown=0,
                confidence_threshold=threshold,
            )
            estimate = estimated_accuracy(window, threshold)
            assert estimate is not None and estimate["all"] is not None
            right = np.concatenate([pool.emotions[chosen] == pool.labels[chosen] for pool, chosen in parts])
            novel = np.concatenate([pool.novel[chosen] for pool, chosen in parts])
            errors.append(estimate["all"]["estimate"] - right.mean())
            for part, mask, kept in (("familiar", ~novel, familiar_errors), ("novel", novel, novel_errors)):
                if estimate[part] is not None and mask.sum() >= 20:
                    kept.append(estimate[part]["estimate"] - right[mask].mean())
        error = np.array(errors)
        rows.append(
            {
                "rows": size,
                "share": share,
                "within_3pt": round(float((np.abs(error) <= 0.03).mean()), 4),
                "mean_error": round(float(error.mean()), 4),
                "mean_absolute_error": round(float(np.abs(error).mean()), 4),
                "familiar_mean_error": round(float(np.mean(familiar_errors)), 4) if familiar_errors else None,
                "novel_mean_error": round(float(np.mean(novel_errors)), 4) if novel_errors else None,
                "novel_windows": len(novel_errors),
            }
        )
    return rows


def measure_grid(
    bundle, test, reddit_texts: list[str], policy: DriftPolicy, windows: int, seed: int, progress
) -> list[dict]:
    """``bench.drift_grid`` on this champion: one PyTorch fp32 pass per text set (the fine-tuned
    model, then its base encoder where it is available offline)."""
    import pandas as pd
    from transformers import AutoModel, AutoTokenizer

    from bench.drift_grid import TextSets, draw_windows, layer_token_means, run_grid
    from core.artifact import NOVELTY_REFERENCE
    from core.inference.runtime import load_predictor
    from core.settings import TrainingSettings
    from monitoring.drift import label_mix_test
    from training.base_model import BaseModelError, resolve_base_model

    texts = pd.read_parquet(bundle.local_dir / "artifacts" / NOVELTY_REFERENCE)
    sets = {
        "index": texts.loc[texts["role"] == "index", "text"].tolist(),
        "calibration": texts.loc[texts["role"] == "calibration", "text"].tolist(),
        "unshifted": test["text"].tolist(),
        "reddit": reddit_texts,
    }
    max_length = bundle.card["max_length"]
    tuned_model = load_predictor(bundle.model_dir, max_length=max_length)
    progress("grid: every layer of the fine-tuned model over the index, calibration, test and Reddit texts")
    started = time.perf_counter()
    tuned_out = {
        name: layer_token_means(tuned_model.model, tuned_model.tokenizer, chosen, max_length)
        for name, chosen in sets.items()
    }
    tuned_ms = (time.perf_counter() - started) * 1000 / sum(map(len, sets.values()))
    tuned = TextSets(**{name: means for name, (means, _) in tuned_out.items()})
    base = None
    try:
        training = TrainingSettings()
        located = resolve_base_model(training.base_model, training.base_model_cache)
        progress(f"grid: the base encoder ({located.name})")
        encoder = AutoModel.from_pretrained(located.path).eval()
        tokenizer = AutoTokenizer.from_pretrained(located.path)
        base = TextSets(
            **{
                name: layer_token_means(encoder, tokenizer, chosen, max_length)[0]
                for name, chosen in sets.items()
            }
        )
    except (BaseModelError, OSError) as error:
        progress(f"grid: no base encoder ({error}); its rows are left out")

    labels = tuned_model.labels
    emotions = {name: np.array(labels)[classes] for name, (_, classes) in tuned_out.items()}
    rng = np.random.default_rng(seed + 1)
    order = rng.permutation(len(sets["unshifted"]))
    half_a, half_b = order[: len(order) // 2], order[len(order) // 2 :]
    drawn = draw_windows(rng, half_b, len(sets["reddit"]), windows)
    reference = Counter(bundle.reference()["emotion"])
    alpha = policy.false_alarm_rate / 2
    label_mix = {
        case: np.array(
            [
                label_mix_test(
                    Counter(emotions["unshifted"][a]) + Counter(emotions["reddit"][b]), reference, alpha
                )["drifted"]
                for a, b in chosen
            ]
        )
        for case, chosen in drawn.cases.items()
    }
    index_classes = tuned_out["index"][1]
    assert index_classes is not None  # a classifier has logits
    rows = run_grid(
        tuned,
        base,
        index_classes,
        label_mix,
        half_a,
        half_b,
        drawn,
        policy.false_alarm_rate,
        null_windows=windows,
        rng=rng,
        progress=progress,
    )
    for row in rows:
        row["second_forward"] = row["representation"].startswith("base") or "+ base" in row["representation"]
    progress(f"grid: {tuned_ms:.2f} ms per text for the fine-tuned pass (PyTorch fp32, every layer kept)")
    return rows


def _goemotions_six_label_dev(folder: str):
    """GoEmotions dev comments whose labels map onto the six emotions, with that label."""
    from training.data import load_emotion_dataset

    return load_emotion_dataset(folder, splits=("validation",), label_set="six").splits["validation"]


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
        f"{_method(novelty)} over {novelty['index_rows']} train texts, threshold set on "
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
        "",
        "Accuracy without labels (ATC, threshold from the reference), 500-row windows of dair-ai "
        "test texts with six-label GoEmotions dev comments mixed in; error = estimate - true:",
        "",
        "| Reddit share | within 3 pt | mean error | mean absolute error | familiar rows' error "
        "| novel rows' error |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in summary["accuracy_estimate"]:
        lines.append(
            f"| {row['share']:.0%} | {row['within_3pt']:.1%} | {row['mean_error']:+.1%} | "
            f"{row['mean_absolute_error']:.1%} | {_signed(row['familiar_mean_error'])} | "
            f"{_signed(row['novel_mean_error'])} |"
        )
    if summary.get("grid"):
        from bench.drift_grid import grid_markdown

        lines += [
            "",
            "The grid (PyTorch fp32 features; windows from half the test texts, Higher Criticism's "
            "null from the other half; FA = false alarms; 'Reddit over 1 %' = GoEmotions dev "
            "comments over the 1 % threshold):",
            "",
            *grid_markdown(summary["grid"]),
        ]
    return "\n".join(lines) + "\n"


def _method(novelty: dict) -> str:
    if "method" not in novelty:  # a run from before the layer mean
        return f"the {novelty['neighbours']} nearest (cosine, last layer)"
    if novelty["method"] == "knn":
        return f"the {novelty['neighbours']} nearest (cosine, layer mean)"
    return f"Mahalanobis to the nearest of {novelty['classes']} class centres (layer mean)"


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1%}"
