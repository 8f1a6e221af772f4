"""Drift of logged traffic against the reference sample registered with the model.

One run reads a window of the prediction log (the last N rows, or a time range) for one model
version, and compares it with that version's ``reference.parquet`` in an Evidently report:

- ``text``: Evidently's text domain classifier (ROC AUC of telling current from reference);
- offline text descriptors: character length, word count, sentence count, non-letter share;
- ``emotion``: the predicted-label distribution;
- ``confidence``: the top-class probability.

Numerical and categorical columns use the Jensen-Shannon distance on both sides' histograms: it
is bounded in [0, 1], does not become hypersensitive on large windows as p-values do, and stays
defined when the reference has no variance (dair-ai/emotion's texts have no punctuation, so its
non-letter share is always 0). A fixed distance threshold is too tight for small windows,
though: 200 rows drawn from the reference itself already score over 0.1 on text length (Sturges
bins over both sides). So each column's threshold is the larger of the policy's and the 99th
percentile of the distance between the reference and bootstrap windows of the same size drawn
from it: a window passes it by chance once in a hundred runs.

The verdict is two tests that share one false-alarm budget (``false_alarm_rate``, 1 % by
default: the chance that a window of unshifted traffic is called drift, whatever its size from
``min_rows`` up), each at ``false_alarm_rate / tests`` (Bonferroni):

- **novelty share**: each logged row carries the model's novelty score and whether it is over
  the model's threshold (``core.inference.novelty``), which an unshifted row is with a known
  probability; a one-sided binomial test asks whether the window has more novel rows than
  that. A share test grows with the shifted share of the traffic, where a distance between
  distributions shrinks with it, so a small mix (one new customer) shows early;
- **predicted-label mix**: has any predicted label's share moved from the reference's (Fisher's
  exact test per label, Bonferroni over the labels): the model's output moving, whatever the
  inputs do.

Beside the verdict, two estimates a reviewer reads before any label comes:

- the **novel share** of the window, net of what unshifted traffic gives, with its interval
  (``estimated_novel_share``): "about 6 % (3-9 %) of this window is unlike anything the model
  knows";
- the window's **accuracy without labels** (``estimated_accuracy``, ATC: the share of rows whose
  top-class confidence is over the threshold at which the reference has as many rows as right
  answers), of the whole window and of its familiar and novel rows apart. Backtested in
  ``bench drift`` against windows with true labels. Single-label models only.

Rows without novelty (a model registered before it, or the service told not to score it) leave
the label test alone, with the whole budget. The Evidently column report is the human-readable
report beside the verdict: its columns say where traffic moved, but no longer decide (seven
columns, each tested at 1 %, called one window in ten of small unshifted ones drift).

A multi-label model is judged the same way on its most probable label; beside it the report
gives each label's frequency (the share of texts it was decided for, over its threshold: the
shares need not sum to 1), and live quality compares decided label sets with the feedback's
(exact match, micro- and macro-F1 over labels).

Memory stays bounded however large the window: the rows come as a stream (the monitor job reads
them from the store in chunks, each text cut to ``sample_text_chars``); exact counts (rows,
predicted labels, feedback confusion) are kept over the whole window, and a uniform reservoir
sample of at most ``sample_rows`` rows goes into the Evidently report.

Pure: no database, no registry; ``monitoring.job`` brings the rows and the reference.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import random
import re
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial import distance

from core.labels import decided_label_sets, decided_labels
from core.settings import monitor_default
from core.store import CHUNK_ROWS, TrafficWindow

log = logging.getLogger(__name__)

TEXT = "text"
EMOTION = "emotion"
CONFIDENCE = "confidence"
DESCRIPTOR_COLUMNS = ("text_length", "word_count", "sentence_count", "non_letter_share")
MONITORED_COLUMNS = (TEXT, *DESCRIPTOR_COLUMNS, EMOTION, CONFIDENCE)
DISTANCE_METHOD = "jensenshannon"
VERDICT_DRIFT = "drift"
VERDICT_NO_DRIFT = "no_drift"
VERDICT_NOT_ENOUGH_DATA = "not_enough_data"


@dataclass(frozen=True)
class DriftPolicy:
    """How drift is decided: thresholds per column kind and the dataset-level share."""

    # What the settings set defaults to the settings' own default (MonitorSettings).
    drift_share: float = monitor_default("drift_share")  # dataset drift at this share of columns
    distance_threshold: float = monitor_default("drift_distance_threshold")  # Jensen-Shannon distance
    text_method: str = "abs_text_content_drift"  # domain classifier ROC AUC vs a fixed threshold
    text_threshold: float = monitor_default("drift_text_threshold")
    min_rows: int = monitor_default("drift_min_rows")
    sample_rows: int = monitor_default("drift_sample_rows")
    sample_bytes: int = monitor_default("drift_sample_bytes")  # texts are cut to keep a sample under it
    null_quantile: float = 0.99  # window-size-aware thresholds: chance drift in 1 run of 100
    null_rounds: int = 100
    # The chance an unshifted window is called drift, all tests together.
    false_alarm_rate: float = monitor_default("drift_false_alarm_rate")
    novel_rows_shown: int = 20  # the most novel rows the report lists


@dataclass
class WindowSample:
    """What one streaming pass over a window keeps: exact counts and a bounded sample."""

    sample: pd.DataFrame
    total_rows: int
    labelled_rows: int
    emotion_counts: Counter
    confusion: Counter  # (true label, predicted label) -> count, over labelled rows
    first_at: datetime | None
    last_at: datetime | None
    # Texts each label was decided for (multi-label: several per text; else emotion_counts).
    label_counts: Counter = field(default_factory=Counter)
    scored_rows: int = 0  # rows with a novelty score
    novel_rows: int = 0
    novel_emotions: Counter = field(default_factory=Counter)  # how the model labelled novel rows
    most_novel: list = field(default_factory=list)  # (novelty, text, emotion), most novel first
    confident_rows: int | None = None  # over the ATC threshold (None: not counted)
    confident_scored_rows: int | None = None  # of them, with a novelty score
    confident_novel_rows: int | None = None  # of those, novel

    @property
    def sampled(self) -> bool:
        return len(self.sample) < self.total_rows


def sample_text_chars(policy: DriftPolicy, chunk_rows: int = CHUNK_ROWS) -> int:
    """How much of each text to read: the sample and one chunk in flight stay under
    ``policy.sample_bytes``, so a window of very long texts cannot exhaust memory."""
    return max(64, policy.sample_bytes // (policy.sample_rows + chunk_rows))


def sample_window(
    rows: Iterable[tuple],
    sample_rows: int,
    seed: int = 0,
    thresholds: dict[str, float] | None = None,
    shown: int = 20,
    confidence_threshold: float | None = None,
) -> WindowSample:
    """One pass over the window's rows (created_at, text, emotion, confidence, feedback_label,
    novelty, novel), newest first: exact counts, the ``shown`` most novel rows, and a uniform
    reservoir sample of at most ``sample_rows``.

    With a multi-label model's ``thresholds`` each row also carries its probabilities, and its
    decided labels are counted and compared with the feedback's. With ``confidence_threshold``
    (ATC's, ``atc_threshold``) the rows over it are counted, familiar and novel apart."""
    rng = random.Random(seed)
    reservoir: list[tuple] = []
    emotion_counts: Counter = Counter()
    label_counts: Counter = Counter()
    novel_emotions: Counter = Counter()
    confusion: Counter = Counter()
    most_novel: list[tuple] = []  # a min-heap of the most novel rows seen
    total = labelled = scored = novel_total = 0
    confident: Counter = Counter()  # rows over the ATC threshold: all, scored, novel
    first_at = last_at = None
    for created_at, text, emotion, confidence, feedback_label, novelty, novel, *probabilities in rows:
        total += 1
        emotion_counts[emotion] += 1
        if novelty is not None:
            scored += 1
            if novel:
                novel_total += 1
                novel_emotions[emotion] += 1
            entry = (float(novelty), total, text, emotion)
            if len(most_novel) < shown:
                heapq.heappush(most_novel, entry)
            elif most_novel and entry > most_novel[0]:
                heapq.heapreplace(most_novel, entry)
        if confidence_threshold is not None and float(confidence) > confidence_threshold:
            confident["all"] += 1
            if novelty is not None:  # rows without a score are neither familiar nor novel
                confident["scored"] += 1
                confident["novel"] += bool(novel)
        decided = decided_labels(probabilities[0], thresholds) if thresholds else emotion
        label_counts.update(decided.split(",") if thresholds else (decided,))
        if feedback_label is not None:
            labelled += 1
            confusion[(feedback_label, decided)] += 1
        last_at = last_at or created_at  # newest first
        first_at = created_at
        row = (text, emotion, float(confidence))
        # Algorithm R: every row of the window ends up in the sample with equal chance.
        if len(reservoir) < sample_rows:
            reservoir.append(row)
        else:
            slot = rng.randrange(total)
            if slot < sample_rows:
                reservoir[slot] = row
    sample = pd.DataFrame(reservoir, columns=[TEXT, EMOTION, CONFIDENCE])
    ranked = [(novelty, text, emotion) for novelty, _, text, emotion in sorted(most_novel, reverse=True)]
    return WindowSample(
        sample,
        total,
        labelled,
        emotion_counts,
        confusion,
        first_at,
        last_at,
        label_counts,
        scored,
        novel_total,
        novel_emotions,
        ranked,
        confident_rows=confident["all"] if confidence_threshold is not None else None,
        confident_scored_rows=confident["scored"] if confidence_threshold is not None else None,
        confident_novel_rows=confident["novel"] if confidence_threshold is not None else None,
    )


def classification_scores(confusion: Counter, labels: tuple[str, ...]) -> dict[str, float]:
    """Accuracy and macro-F1 from (true, predicted) counts; macro over labels seen either side."""
    total = sum(confusion.values())
    correct = sum(count for (truth, predicted), count in confusion.items() if truth == predicted)
    seen = sorted({label for pair in confusion for label in pair} | set(labels))
    f1s = []
    for label in seen:
        tp = confusion.get((label, label), 0)
        fp = sum(c for (t, p), c in confusion.items() if p == label and t != label)
        fn = sum(c for (t, p), c in confusion.items() if t == label and p != label)
        if tp + fp + fn == 0:
            continue  # a label absent from both truth and prediction does not count
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return {
        "accuracy": correct / total if total else math.nan,
        "macro_f1": sum(f1s) / len(f1s) if f1s else math.nan,
    }


def multilabel_scores(confusion: Counter, labels: tuple[str, ...]) -> dict[str, float]:
    """Exact-match accuracy, micro- and macro-F1 from (true labels, decided labels) counts, each
    side a comma-joined set; macro over labels seen either side."""
    total = sum(confusion.values())
    counts = {label: [0, 0, 0] for label in labels}  # tp, fp, fn
    exact = 0
    for (truth, predicted), count in confusion.items():
        true_set, predicted_set = set(truth.split(",")), set(predicted.split(","))
        exact += count * (true_set == predicted_set)
        for label in true_set | predicted_set:
            tally = counts.setdefault(label, [0, 0, 0])
            tally[0] += count * (label in true_set and label in predicted_set)
            tally[1] += count * (label in predicted_set and label not in true_set)
            tally[2] += count * (label in true_set and label not in predicted_set)
    seen = [tally for tally in counts.values() if sum(tally)]
    tp, fp, fn = (sum(tally[i] for tally in seen) for i in range(3))
    f1s = [2 * t / (2 * t + p + n) for t, p, n in seen]
    return {
        "accuracy": exact / total if total else math.nan,
        "micro_f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan,
        "macro_f1": sum(f1s) / len(f1s) if f1s else math.nan,
    }


def reference_label_frequency(reference: pd.DataFrame, thresholds: dict[str, float]) -> dict[str, float]:
    """Each label's share of reference texts it is decided for (from the ``p_<label>`` columns)."""
    counts = Counter(
        label for decided in reference_decided(reference, thresholds) for label in decided.split(",")
    )
    return frequency(counts, len(reference))


def reference_decided(reference: pd.DataFrame, thresholds: dict[str, float]) -> list[str]:
    """The reference rows' decided labels, from their ``p_<label>`` columns."""
    columns = [column for column in reference.columns if column.startswith("p_")]
    return decided_label_sets(
        reference[columns].to_numpy(dtype=np.float64), [column[2:] for column in columns], thresholds
    )


def frequency(counts: Counter, rows: int) -> dict[str, float]:
    """Per label, the share of ``rows`` texts it was decided for (multi-label: need not sum to 1)."""
    return {str(label): round(count / rows, 4) for label, count in sorted(counts.items())} if rows else {}


def novelty_test(scored_rows: int, novel_rows: int, expected_share: float, alpha: float) -> dict:
    """One-sided binomial test: more novel rows than unshifted traffic gives by chance?"""
    p_value = stats.binomtest(novel_rows, scored_rows, expected_share, alternative="greater").pvalue
    return {
        "test": "binomial, one-sided",
        "rows": scored_rows,
        "novel_rows": novel_rows,
        "share": round(novel_rows / scored_rows, 4),
        "expected_share": round(expected_share, 6),
        "p_value": float(p_value),
        "alpha": alpha,
        "drifted": bool(p_value < alpha),
    }


def estimated_novel_share(
    scored_rows: int, novel_rows: int, expected_share: float, level: float = 0.95
) -> dict:
    """The share of the window unlike anything the model knows, with its interval.

    A window of which a share ``s`` is novel has ``s + (1 - s) * e`` rows over the threshold if
    every novel text crosses it (``e``: the unshifted share); so ``s = (p - e) / (1 - e)``, here
    with ``p``'s Clopper-Pearson interval. A novel text that stays under the threshold is not
    counted: this is the share the score can see, a floor on the true one."""
    interval = stats.binomtest(novel_rows, scored_rows).proportion_ci(level, method="exact")

    def novel(p: float) -> float:
        return round(min(1.0, max(0.0, (p - expected_share) / (1 - expected_share))), 4)

    return {
        "estimate": novel(novel_rows / scored_rows),
        "low": novel(interval.low),
        "high": novel(interval.high),
        "level": level,
    }


def atc_threshold(reference: pd.DataFrame) -> float | None:
    """ATC (average thresholded confidence, Garg et al. 2022): the top-class confidence over
    which the reference has as many rows as the model got right in it; a window's rows over it
    estimate its accuracy. None without a labelled reference."""
    if not len(reference) or "label" not in reference:
        return None
    confidence = np.sort(reference[CONFIDENCE].to_numpy(dtype=float))
    wrong = int((reference["label"] != reference[EMOTION]).sum())
    # The wrong-th lowest: exactly len - wrong reference rows are over it (ties aside).
    return float(confidence[wrong - 1]) if wrong else float(confidence[0]) - 1e-9


def estimated_accuracy(window: WindowSample, threshold: float, level: float = 0.95) -> dict | None:
    """Live accuracy without labels (ATC), of the whole window and of its familiar and novel
    rows apart, with a Wilson interval from the window's own size (the estimator's own bias,
    measured in ``bench drift``, is not in it)."""
    if window.confident_rows is None or not window.total_rows:
        return None

    def part(over: int, rows: int) -> dict | None:
        if not rows:
            return None
        interval = stats.binomtest(over, rows).proportion_ci(level, method="wilson")
        return {
            "estimate": round(over / rows, 4),
            "low": round(float(interval.low), 4),
            "high": round(float(interval.high), 4),
            "rows": rows,
        }

    novel_over = window.confident_novel_rows or 0
    familiar_over = (window.confident_scored_rows or 0) - novel_over
    return {
        "method": "ATC",
        "threshold": round(threshold, 6),
        "level": level,
        "all": part(window.confident_rows, window.total_rows),
        "familiar": part(familiar_over, window.scored_rows - window.novel_rows)
        if window.scored_rows
        else None,
        "novel": part(novel_over, window.novel_rows) if window.scored_rows else None,
    }


def label_mix_test(window: Counter, reference: Counter, alpha: float) -> dict:
    """Has any predicted label's share moved from the reference's? Per label, Fisher's exact test
    of its count in the window against the reference (two-sided), Bonferroni over the labels.

    One emotion's share doubling is the shift this must see; an omnibus chi-square spreads that
    over every label's degree of freedom (at 500 rows it caught love 8 -> 16 % in 54 % of
    windows), and its approximation is loose on the rare labels of 100-row windows."""
    labels = sorted(label for label in set(window) | set(reference) if window[label] + reference[label])
    rows, reference_rows = sum(window.values()), sum(reference.values())
    moved, smallest = None, 1.0
    for label in labels:
        table = [[window[label], rows - window[label]], [reference[label], reference_rows - reference[label]]]
        p_value = float(stats.fisher_exact(table).pvalue)
        if p_value < smallest:
            moved, smallest = label, p_value
    p_value = min(1.0, smallest * len(labels)) if len(labels) > 1 and rows and reference_rows else 1.0
    return {
        "test": "Fisher's exact per label, Bonferroni",
        "labels": len(labels),
        "most_moved": moved,
        "share": round(window[moved] / rows, 4) if moved and rows else None,
        "reference_share": round(reference[moved] / reference_rows, 4) if moved and reference_rows else None,
        "p_value": p_value,
        "alpha": alpha,
        "drifted": p_value < alpha,
    }


def verdict_tests(
    window: WindowSample, reference: pd.DataFrame, expected_share: float | None, policy: DriftPolicy
) -> dict[str, dict]:
    """The tests that decide the verdict, sharing ``policy.false_alarm_rate`` equally."""
    with_novelty = expected_share is not None and window.scored_rows >= policy.min_rows
    alpha = policy.false_alarm_rate / (2 if with_novelty else 1)
    tests = {"label_mix": label_mix_test(window.emotion_counts, Counter(reference[EMOTION]), alpha)}
    if with_novelty and expected_share is not None:
        tests["novelty_share"] = novelty_test(window.scored_rows, window.novel_rows, expected_share, alpha)
    return tests


@dataclass
class ColumnDrift:
    column: str
    score: float
    method: str
    threshold: float
    drifted: bool


@dataclass
class DriftResult:
    """The verdict of one run; ``summary()`` is the JSON that goes beside the HTML report."""

    report_id: str
    created_at: datetime
    model_name: str
    model_version: str
    window: dict
    verdict: str
    policy: DriftPolicy
    window_rows: int
    analysed_rows: int
    reference_rows: int
    labelled_rows: int
    longest_text_chars: int = 0  # of the analysed texts, each read cut to sample_text_chars
    columns: list[ColumnDrift] = field(default_factory=list)
    drifted_share: float | None = None
    emotion_share: dict = field(default_factory=dict)
    label_frequency: dict | None = None  # multi-label: per label, share of texts decided for it
    tests: dict = field(default_factory=dict)  # the verdict's tests, each with its p-value
    novelty: dict | None = None  # the novel rows: share, the most novel, how they are labelled
    quality: dict | None = None
    estimated_accuracy: dict | None = None  # ATC: the window's accuracy without labels
    html_path: str | None = None
    quality_html_path: str | None = None
    duration_seconds: float = 0.0

    @property
    def dataset_drift(self) -> bool | None:
        if self.verdict == VERDICT_NOT_ENOUGH_DATA:
            return None
        return self.verdict == VERDICT_DRIFT

    @property
    def live_accuracy(self) -> float | None:
        """Single-label accuracy on feedback; None for a multi-label model, whose exact match of
        whole label sets is no accuracy to hold to the single-label floor."""
        if not self.quality or "micro_f1" in self.quality:
            return None
        return self.quality["accuracy"]

    def summary(self) -> dict:
        return {
            "report_id": self.report_id,
            "created_at": self.created_at.isoformat(timespec="seconds"),
            "model": {"name": self.model_name, "version": self.model_version},
            "window": self.window,
            "verdict": self.verdict,
            "dataset_drift": self.dataset_drift,
            "drift_share_threshold": self.policy.drift_share,
            "drifted_columns": [c.column for c in self.columns if c.drifted],
            "drifted_share": self.drifted_share,
            "columns": {
                c.column: {
                    "score": c.score,
                    "method": c.method,
                    "threshold": c.threshold,
                    "drifted": c.drifted,
                }
                for c in self.columns
            },
            "counts": {
                "window_rows": self.window_rows,
                "analysed_rows": self.analysed_rows,
                "sampled": self.analysed_rows < self.window_rows,
                "reference_rows": self.reference_rows,
                "labelled_rows": self.labelled_rows,
                "longest_text_chars": self.longest_text_chars,
                "min_rows": self.policy.min_rows,
            },
            "emotion_share": self.emotion_share,
            "label_frequency": self.label_frequency,
            "tests": self.tests,
            "novelty": self.novelty,
            "quality": self.quality,
            "estimated_accuracy": self.estimated_accuracy,
            "html": self.html_path,
            "quality_html": self.quality_html_path,
            "duration_seconds": round(self.duration_seconds, 2),
        }


def _descriptors():
    # Offline only: Evidently's Sentiment and OOV descriptors call nltk.download.
    from evidently.descriptors import NonLetterCharacterPercentage, SentenceCount, TextLength, WordCount

    return [
        TextLength(TEXT, alias="text_length"),
        WordCount(TEXT, alias="word_count"),
        SentenceCount(TEXT, alias="sentence_count"),
        NonLetterCharacterPercentage(TEXT, alias="non_letter_share"),
    ]


def _column_rule(column: str, policy: DriftPolicy) -> tuple[str, float]:
    if column == TEXT:
        return policy.text_method, policy.text_threshold
    return DISTANCE_METHOD, policy.distance_threshold


def js_distance(reference: pd.Series, current: pd.Series, categorical: bool) -> float:
    """The Jensen-Shannon distance Evidently's ``jensenshannon`` method reports (natural log):
    a numerical column with over 20 distinct reference values on shared Sturges bins, any other
    on the share of each value."""
    if not categorical and reference.nunique() > 20:
        bins = np.histogram_bin_edges(
            np.concatenate([reference.to_numpy(), current.to_numpy()]), bins="sturges"
        )
        expected = np.histogram(reference, bins)[0] / len(reference)
        observed = np.histogram(current, bins)[0] / len(current)
    else:
        keys = sorted(set(reference.dropna().unique()) | set(current.dropna().unique()), key=str)
        expected = reference.value_counts().reindex(keys, fill_value=0).to_numpy() / len(reference)
        observed = current.value_counts().reindex(keys, fill_value=0).to_numpy() / len(current)
    return float(distance.jensenshannon(expected, observed))


def null_thresholds(reference: pd.DataFrame, window_rows: int, policy: DriftPolicy) -> dict[str, float]:
    """Per distance column: the larger of the policy's threshold and the ``null_quantile`` of the
    distance between the reference and same-size bootstrap windows drawn from it (no drift)."""
    rng = np.random.default_rng(0)
    thresholds = {}
    for column in (*DESCRIPTOR_COLUMNS, EMOTION, CONFIDENCE):
        values = reference[column].reset_index(drop=True)
        scores = [
            js_distance(values, values.iloc[rng.integers(0, len(values), window_rows)], column == EMOTION)
            for _ in range(policy.null_rounds)
        ]
        chance = float(np.nan_to_num(np.quantile(scores, policy.null_quantile)))
        thresholds[column] = round(max(policy.distance_threshold, chance), 4)
    return thresholds


def drift_report(reference: pd.DataFrame, current: pd.DataFrame, policy: DriftPolicy):
    """Run the Evidently drift report; returns (snapshot, per-column results, drifted share)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(
        text_columns=[TEXT], numerical_columns=[CONFIDENCE], categorical_columns=[EMOTION]
    )
    methods = {column: _column_rule(column, policy) for column in MONITORED_COLUMNS}
    columns = [TEXT, EMOTION, CONFIDENCE]
    with warnings.catch_warnings():
        # Constant descriptor columns (every reference text is one sentence) make numpy warn.
        warnings.simplefilter("ignore", RuntimeWarning)
        reference_data = Dataset.from_pandas(
            reference[columns].reset_index(drop=True), data_definition=definition, descriptors=_descriptors()
        )
        current_data = Dataset.from_pandas(
            current[columns].reset_index(drop=True), data_definition=definition, descriptors=_descriptors()
        )
        for column, threshold in null_thresholds(reference_data.as_dataframe(), len(current), policy).items():
            methods[column] = (DISTANCE_METHOD, threshold)
        preset = DataDriftPreset(
            columns=list(MONITORED_COLUMNS),
            drift_share=policy.drift_share,
            per_column_method={column: method for column, (method, _) in methods.items()},
            per_column_threshold={column: threshold for column, (_, threshold) in methods.items()},
        )
        snapshot = Report([preset]).run(current_data, reference_data)

    results: list[ColumnDrift] = []
    share = None
    for metric in snapshot.dict()["metrics"]:
        config = metric.get("config", {})
        kind = config.get("type", "")
        if kind.endswith(":ValueDrift"):
            column = config["column"]
            method, threshold = methods[column]
            score = float(metric["value"])
            results.append(ColumnDrift(column, score, method, threshold, score >= threshold))
        elif kind.endswith(":DriftedColumnsCount"):
            share = float(metric["value"]["share"])
    order = {column: index for index, column in enumerate(MONITORED_COLUMNS)}
    results.sort(key=lambda c: order[c.column])
    return snapshot, results, share


def quality_report(reference: pd.DataFrame, labelled: pd.DataFrame, labels: tuple[str, ...]):
    """Evidently's classification report: labelled traffic against the reference sample."""
    from evidently import DataDefinition, Dataset, MulticlassClassification, Report
    from evidently.presets import ClassificationPreset

    definition = DataDefinition(
        categorical_columns=["label", EMOTION],
        classification=[MulticlassClassification(target="label", prediction_labels=EMOTION)],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Report([ClassificationPreset()]).run(
            Dataset.from_pandas(
                labelled[["label", EMOTION]].reset_index(drop=True), data_definition=definition
            ),
            Dataset.from_pandas(
                reference[["label", EMOTION]].reset_index(drop=True), data_definition=definition
            ),
        )


def share(counts: Counter | pd.Series) -> dict[str, float]:
    total = sum(counts.values()) if isinstance(counts, Counter) else int(counts.sum())
    items = counts.items()
    return {str(label): round(count / total, 4) for label, count in sorted(items)} if total else {}


def analyse(
    rows: Iterable[tuple],
    window: TrafficWindow,
    reference: pd.DataFrame,
    labels: tuple[str, ...],
    model_name: str,
    policy: DriftPolicy,
    output_dir: Path,
    thresholds: dict[str, float] | None = None,
    expected_novel_share: float | None = None,
    recent_novelty: list[dict] | None = None,
) -> DriftResult:
    """One drift run over ``rows`` (the window's, from ``PredictionStore.stream_window``): decide,
    write the HTML report(s) and the JSON summary. ``thresholds``: a multi-label model's (its
    rows then carry their probabilities). ``expected_novel_share``: the share of novel rows in
    unshifted traffic (the model card's; None: the model has no novelty index);
    ``recent_novelty``: the share in the version's earlier reports, listed beside this one."""
    started = time.perf_counter()
    created_at = datetime.now(UTC)
    report_id = f"{created_at:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    # Single-label: ATC on the top-class confidence (a multi-label model's has no accuracy to
    # estimate this way; its decided sets are judged on feedback alone).
    confidence_threshold = None if thresholds else atc_threshold(reference)
    window_data = sample_window(
        rows,
        policy.sample_rows,
        thresholds=thresholds,
        shown=policy.novel_rows_shown,
        confidence_threshold=confidence_threshold,
    )
    result = DriftResult(
        report_id=report_id,
        created_at=created_at,
        model_name=model_name,
        model_version=window.model_version,
        window={
            **window.describe(),
            "first_at": window_data.first_at.isoformat() if window_data.first_at else None,
            "last_at": window_data.last_at.isoformat() if window_data.last_at else None,
        },
        verdict=VERDICT_NOT_ENOUGH_DATA,
        policy=policy,
        window_rows=window_data.total_rows,
        analysed_rows=len(window_data.sample),
        reference_rows=len(reference),
        labelled_rows=window_data.labelled_rows,
        longest_text_chars=int(window_data.sample[TEXT].str.len().max()) if window_data.total_rows else 0,
        emotion_share={
            "current": share(window_data.emotion_counts),
            "reference": share(reference[EMOTION].value_counts()),
        },
    )
    if window_data.scored_rows:
        result.novelty = {
            "scored_rows": window_data.scored_rows,
            "novel_rows": window_data.novel_rows,
            "share": round(window_data.novel_rows / window_data.scored_rows, 4),
            "expected_share": expected_novel_share,
            "estimated_share": estimated_novel_share(
                window_data.scored_rows, window_data.novel_rows, expected_novel_share
            )
            if expected_novel_share is not None
            else None,
            # How the model labelled the novel rows: what the new traffic is taken for.
            "novel_emotions": dict(window_data.novel_emotions.most_common()),
            "most_novel": [
                {"novelty": round(score, 4), "text": text, "emotion": emotion}
                for score, text, emotion in window_data.most_novel
            ],
            "recent_shares": list(recent_novelty or []),
        }
    if confidence_threshold is not None:
        result.estimated_accuracy = estimated_accuracy(window_data, confidence_threshold)
    if thresholds:
        result.label_frequency = {
            "current": frequency(window_data.label_counts, window_data.total_rows),
            "reference": reference_label_frequency(reference, thresholds),
        }
    run_dir = output_dir / report_id
    run_dir.mkdir(parents=True, exist_ok=True)

    if window_data.labelled_rows and thresholds:
        decided = reference_decided(reference, thresholds)
        reference_scores = multilabel_scores(Counter(zip(reference["label"], decided, strict=True)), labels)
        result.quality = {
            **multilabel_scores(window_data.confusion, labels),
            "labelled_rows": window_data.labelled_rows,
            "reference_accuracy": reference_scores["accuracy"],
            "reference_macro_f1": reference_scores["macro_f1"],
            "reference_micro_f1": reference_scores["micro_f1"],
        }
        # Evidently's classification page is single-label: the figures above are the report.
    elif window_data.labelled_rows:
        reference_scores = classification_scores(
            Counter(zip(reference["label"], reference[EMOTION], strict=True)), labels
        )
        result.quality = {
            **classification_scores(window_data.confusion, labels),
            "labelled_rows": window_data.labelled_rows,
            "reference_accuracy": reference_scores["accuracy"],
            "reference_macro_f1": reference_scores["macro_f1"],
        }
        labelled = pd.DataFrame(
            [(t, p) for (t, p), n in window_data.confusion.items() for _ in range(n)],
            columns=["label", EMOTION],
        )
        try:
            quality_html = run_dir / "quality.html"
            write_report_html(quality_report(reference, labelled, labels), quality_html)
            result.quality_html_path = str(quality_html)
        except Exception as error:  # the figures above stand without Evidently's page
            log.warning("classification report failed: %s", error)

    if window_data.total_rows >= policy.min_rows:
        snapshot, columns, drifted_share = drift_report(reference, window_data.sample, policy)
        result.columns = columns
        result.drifted_share = drifted_share
        result.tests = verdict_tests(window_data, reference, expected_novel_share, policy)
        drifted = any(test["drifted"] for test in result.tests.values())
        result.verdict = VERDICT_DRIFT if drifted else VERDICT_NO_DRIFT
        html = run_dir / "drift.html"
        try:
            write_report_html(snapshot, html)
            result.html_path = str(html)
        except Exception as error:  # the verdict and the trigger stand without Evidently's page
            log.warning("drift report page not written: %s", error)

    result.duration_seconds = time.perf_counter() - started
    (run_dir / "summary.json").write_text(json.dumps(result.summary(), indent=2, default=str))
    return result


# Evidently's page holds its data as JSON in a <script> block: "var <id> = {...};" then
# "var additional_graphs_<id> = {...};". json.dumps writes no raw newline, so each JSON ends
# exactly where its line does, whatever the logged texts inside it hold.
_DATA_BLOCK = re.compile(
    r"(<script>\n\s*var (metric_[0-9a-f]+) = )(.*?)(;\n\s*var additional_graphs_\2 = )(.*?)(;\n</script>)",
    re.S,
)


def script_safe_json(encoded: str) -> str:
    """JSON text that no HTML parser can end early: ``<``, ``>`` and ``&`` (which only ever
    stand inside strings in JSON) as ``\\u`` escapes, the same strings to the script."""
    return encoded.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def write_report_html(snapshot, path: Path) -> None:
    """Save an Evidently report page with its data escaped for the <script> block it sits in.

    Evidently embeds logged texts verbatim, so a text holding ``</script><img onerror=...>``
    would end the block and run as markup in a reviewer's browser (stored XSS). A page whose
    data block is not where this expects it (another Evidently) is not written at all."""
    page = snapshot.get_html_str(as_iframe=False)
    found = _DATA_BLOCK.search(page)
    if found is None or _DATA_BLOCK.search(page, found.end()) is not None:
        raise RuntimeError("Evidently's report page has an unexpected layout: not written unescaped")
    head, dashboard, middle, graphs, tail = found.group(1, 3, 4, 5, 6)
    safe = head + script_safe_json(dashboard) + middle + script_safe_json(graphs) + tail
    path.write_text(page[: found.start()] + safe + page[found.end() :], encoding="utf-8")
