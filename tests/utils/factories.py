"""Small, fast stand-ins for real data and models, built in a temp folder so no test needs a hub."""

from __future__ import annotations

import inspect
import random
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from core.store.rows import prediction_row
from training.train import TrainingConfig

# max_length stays under the tiny model's 64 positions; long texts get truncated. Two threads,
# whatever an earlier test left torch at: the thread count changes the sums, so the tiny model,
# and the label-noise test on it fails when trained on one (test order decided it).
TINY_TRAINING = TrainingConfig(
    epochs=15, learning_rate=1e-2, batch_size=16, patience=100, seed=1, max_length=32, threads=2
)

_ROW_FIELDS = set(inspect.signature(prediction_row).parameters)


def logged_row(**fields) -> dict:
    """One row of the prediction log as the service writes it (``prediction_row``), with plain
    defaults for whatever is not given; other columns given (``feedback_label``, ``feedback_at``)
    are set on it too."""
    given = {
        "request_id": str(uuid.uuid4()),
        "created_at": datetime.now(UTC),
        "model_name": "emotion-classifier",
        "model_version": "1",
        "text": "i feel happy",
        "emotion": "joy",
        "confidence": 0.9,
        "probabilities": {},
        "latency_ms": 1.0,
        "truncated": False,
        "tokens": 5,
        "uncertain": False,
        **fields,
    }
    row = prediction_row(**{name: value for name, value in given.items() if name in _ROW_FIELDS})
    return {**row, **{name: value for name, value in given.items() if name not in _ROW_FIELDS}}


# Each emotion gets its own cue words, so a two-layer model learns the task in a few dozen steps.
CUE_WORDS = {
    "sadness": ["sad", "lonely", "gloomy"],
    "joy": ["happy", "glad", "cheerful"],
    "love": ["love", "adore", "cherish"],
    "anger": ["angry", "furious", "mad"],
    "fear": ["afraid", "scared", "nervous"],
    "surprise": ["surprised", "amazed", "shocked"],
}
FILLER_WORDS = ["i", "feel", "so", "very", "today", "really", "am", "and", "the", "it"]
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_vocab(folder: Path) -> Path:
    words = FILLER_WORDS + [word for cues in CUE_WORDS.values() for word in cues]
    path = folder / "vocab.txt"
    path.write_text("\n".join(SPECIAL_TOKENS + sorted(set(words))) + "\n")
    return path


def make_tiny_base_model(folder: Path, seed: int = 0) -> Path:
    """A random two-layer DistilBERT with a WordPiece vocab of the words the tiny data uses."""
    import torch
    from transformers import BertTokenizerFast, DistilBertConfig, DistilBertModel

    folder.mkdir(parents=True, exist_ok=True)
    write_vocab(folder)
    # from_pretrained reads vocab.txt the same way across transformers 4 and 5.
    tokenizer = BertTokenizerFast.from_pretrained(folder, do_lower_case=True)
    torch.manual_seed(seed)
    config = DistilBertConfig(
        vocab_size=tokenizer.vocab_size,
        dim=32,
        n_layers=2,
        n_heads=4,
        hidden_dim=37,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
    )
    DistilBertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_rows(count: int, seed: int, labels: list[str] | None = None) -> pd.DataFrame:
    rng = random.Random(seed)
    labels = labels or list(CUE_WORDS)
    rows = []
    for index in range(count):
        label = labels[index % len(labels)]
        words = [*rng.sample(FILLER_WORDS, 3), rng.choice(CUE_WORDS[label])]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return pd.DataFrame(rows)


def write_tiny_dataset(folder: Path, train: int = 240, validation: int = 60, test: int = 60) -> Path:
    """train/validation/test CSVs with label names, in the dair-ai/emotion layout."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, count, seed in (("train", train, 1), ("validation", validation, 2), ("test", test, 3)):
        tiny_rows(count, seed).to_csv(folder / f"{split}.csv", index=False)
    return folder


# GoEmotions' label ids, in its labels.txt order (27 = neutral).
GOEMOTIONS_LABELS = (
    *("admiration", "amusement", "anger", "annoyance", "approval", "caring", "confusion"),
    *("curiosity", "desire", "disappointment", "disapproval", "disgust", "embarrassment"),
    *("excitement", "fear", "gratitude", "grief", "joy", "love", "nervousness", "optimism"),
    *("pride", "realization", "relief", "remorse", "sadness", "surprise", "neutral"),
)


def _ids(*names: str) -> str:
    return ",".join(str(GOEMOTIONS_LABELS.index(name)) for name in names)


def write_goemotions(folder: Path, rows: int = 40) -> Path:
    """A tiny GoEmotions folder: each six-emotion cue row once by its own name, once by a close
    label, plus rows that map to nothing (neutral) or to two emotions (joy and sadness)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "labels.txt").write_text("\n".join(GOEMOTIONS_LABELS) + "\n")
    close = {"anger": "annoyance", "fear": "nervousness", "joy": "amusement", "love": "caring",
             "sadness": "grief", "surprise": "realization"}  # fmt: skip
    for stem, seed in (("train", 1), ("dev", 2)):
        lines = []
        for index, row in enumerate(tiny_rows(rows, seed).itertuples()):
            label = row.label if index % 2 else close[row.label]
            lines.append(f"{row.text} reddit\t{_ids(label)}\tid{stem}{index}")
        lines.append(f"nothing much {stem}\t{_ids('neutral')}\tn{stem}")
        lines.append(f"happy yet sad {stem}\t{_ids('joy', 'sadness')}\ta{stem}")
        lines.append(f"glad and amused {stem}\t{_ids('joy', 'amusement')}\tb{stem}")  # both joy: kept
        (folder / f"{stem}.tsv").write_text("\n".join(lines) + "\n")
    return folder


def write_tiny_multilabel_dataset(
    folder: Path, train: int = 240, validation: int = 120, test: int = 60
) -> Path:
    """train/validation/test CSVs whose ``label`` names one or two emotions ("joy,love"): every
    other row carries the cue words of two emotions."""
    folder.mkdir(parents=True, exist_ok=True)
    names = list(CUE_WORDS)
    for split, count, seed in (("train", train, 1), ("validation", validation, 2), ("test", test, 3)):
        rng = random.Random(seed)
        rows = []
        for index in range(count):
            chosen = [names[index % len(names)]]
            if index % 2:
                chosen.append(names[(index * 7 + 1) % len(names)])
            words = [*rng.sample(FILLER_WORDS, 3), *(rng.choice(CUE_WORDS[label]) for label in chosen)]
            rng.shuffle(words)
            rows.append({"text": " ".join(words), "label": ",".join(dict.fromkeys(chosen))})
        pd.DataFrame(rows).to_csv(folder / f"{split}.csv", index=False)
    return folder
