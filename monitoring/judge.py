"""Judge files of texts without serving them: ``emotion-ops drift --input FILE [FILE ...]``.

Each file (CSV, JSONL or Parquet with a ``text`` column) goes through the champion as the
service would run it (PyTorch, its novelty index calibrated for that runtime), and through the
drift verdict's own tests against the champion's reference: is this data like what the model
knows? The model and its index load once for all the files.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from core.registry import connect, load_bundle
from core.settings import MonitorSettings
from monitoring.drift import (
    VERDICT_DRIFT,
    VERDICT_NO_DRIFT,
    VERDICT_NOT_ENOUGH_DATA,
    DriftPolicy,
    sample_window,
    verdict_tests,
)

READERS = {
    ".csv": pd.read_csv,
    ".jsonl": lambda path: pd.read_json(path, lines=True),
    ".parquet": pd.read_parquet,
}
SHOWN_ROWS = 5
CHUNK_TEXTS = 4096  # texts classified at once: novelty's similarity matrix stays small


class InputError(ValueError):
    """A file that cannot be judged; the message says why."""


def read_texts(path: Path) -> list[str]:
    """The non-blank texts of a file's ``text`` column."""
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise InputError(f"{path}: expected a .csv, .jsonl or .parquet file")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        frame = reader(path)
    except (ValueError, OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read it ({error})") from None
    if "text" not in frame.columns:
        raise InputError(f"{path}: needs a 'text' column; found {list(frame.columns)}")
    texts = frame["text"].dropna().astype(str)
    return texts[texts.str.strip() != ""].tolist()


def judge_files(settings: MonitorSettings, paths: list[Path], policy: DriftPolicy) -> Iterator[dict]:
    """One verdict per file, against the champion's reference (files are read as they come)."""
    from core.inference.runtime import load_predictor

    for path in paths:  # every file readable before the model loads: a typo fails in a second
        read_texts(path)
    bundle = load_bundle(connect(settings), settings)
    predictor = load_predictor(bundle.model_dir, max_length=bundle.card["max_length"])
    predictor.novelty = bundle.novelty_index(predictor, "torch-fp32")
    expected = predictor.novelty.expected_share if predictor.novelty is not None else None
    reference = bundle.reference()
    for path in paths:
        texts = read_texts(path)
        rows = [
            (None, text, p.emotion, p.confidence, None, p.novelty, p.novel)
            for start in range(0, len(texts), CHUNK_TEXTS)
            for text, p in zip(
                texts[start : start + CHUNK_TEXTS],
                predictor.predict(texts[start : start + CHUNK_TEXTS]),
                strict=True,
            )
        ]
        window = sample_window(rows, sample_rows=1, shown=SHOWN_ROWS)
        result = {
            "file": str(path),
            "rows": len(texts),
            "model": {"name": bundle.name, "version": bundle.version},
            "verdict": VERDICT_NOT_ENOUGH_DATA,
        }
        if len(texts) >= policy.min_rows:
            tests = verdict_tests(window, reference, expected, policy)
            drifted = any(test["drifted"] for test in tests.values())
            result["verdict"] = VERDICT_DRIFT if drifted else VERDICT_NO_DRIFT
            result["tests"] = tests
        if window.scored_rows:
            result["novel_share"] = round(window.novel_rows / window.scored_rows, 4)
            result["expected_novel_share"] = None if expected is None else round(expected, 6)
            result["novel_emotions"] = dict(window.novel_emotions.most_common())
            result["most_novel"] = [
                {"novelty": round(score, 4), "text": text, "emotion": emotion}
                for score, text, emotion in window.most_novel
            ]
        result["emotion_share"] = {
            label: round(count / len(texts), 4) for label, count in window.emotion_counts.most_common()
        } if texts else {}  # fmt: skip
        yield result


def as_line(result: dict) -> str:
    return json.dumps(result, ensure_ascii=False)
