"""Load the emotion dataset from a folder of split files, from the hub, or from several at once.

A folder holds one file per split (``train``, ``validation`` or ``val``, ``test``) as CSV
(``text,label``), JSONL (``{"text": ..., "label": ...}``) or the original ``text;label`` txt
layout. Labels may be names or dair-ai/emotion's integer ids. Labels are sorted by name so that
the id order is deterministic whatever order the data lists them in.

A GoEmotions folder (``labels.txt`` and ``train.tsv``/``dev.tsv``/``test.tsv``: text, comma-
separated label ids, comment id) is read too. Its 28 labels go through a label set
(``training.label_sets``: ``six`` by default, or ``ekman``); without a ``test.tsv`` (the official
test split is often kept aside) ``dev`` is the test split and validation is carved from train.

A multi-label dataset (``multilabel=True``: GoEmotions through the ``all`` set, or any source
whose ``label`` holds comma-separated names) keeps every label of a row, joined by commas in
``label``; ``EmotionDataset.label_matrix`` gives them as 0/1 columns.

Several sources join with commas (``data/emotion,data/goemotions``): each row keeps its source in
a ``source`` column, and ``EmotionDataset.summary`` counts rows and dropped rows per source.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core.labels import joined_labels
from training.label_sets import LabelSet, label_set_named, split_labels

SPLITS = ("train", "validation", "test")
SPLIT_FILE_STEMS = {
    "train": ("train",),
    "validation": ("validation", "val", "valid", "dev"),
    "test": ("test",),
}
FILE_SUFFIXES = (".csv", ".jsonl", ".txt")
# The hub's ClassLabel order for dair-ai/emotion: files that give integer labels use these ids.
HUB_LABEL_NAMES = ("sadness", "joy", "love", "anger", "fear", "surprise")
GOEMOTIONS_LABELS_FILE = "labels.txt"
# A GoEmotions source without the label set named: our six emotions.
GOEMOTIONS_DEFAULT_LABEL_SET = "six"
GOEMOTIONS_MULTILABEL_SET = "all"
VALIDATION_SHARE = 0.1  # carved from train where a source has no validation split of its own
_MAX_ROWS_IN_MESSAGE = 5


class DataError(ValueError):
    """The data cannot be used as given; the message says what to fix."""


@dataclass(frozen=True)
class EmotionDataset:
    """Splits as DataFrames with columns ``text``, ``label`` (label names) and ``source``."""

    splits: dict[str, pd.DataFrame]
    labels: tuple[str, ...]
    source: str
    # The label set the sources' labels went through (name, why, one table per source kind).
    label_set: dict | None = None
    summary: dict = field(default_factory=dict)  # per source: rows per split, rows dropped
    multilabel: bool = False  # ``label`` holds every label of a row, joined by commas

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))

    @property
    def label2id(self) -> dict[str, int]:
        return {label: index for index, label in enumerate(self.labels)}

    def texts(self, split: str) -> list[str]:
        return self.splits[split]["text"].tolist()

    def label_ids(self, split: str) -> list[int]:
        if self.multilabel:
            raise DataError("a multi-label dataset has no single label id per row; use label_matrix")
        label2id = self.label2id
        return [label2id[label] for label in self.splits[split]["label"]]

    def label_matrix(self, split: str) -> np.ndarray:
        """One row per text, one 0/1 column per label (``self.labels`` order)."""
        label2id = self.label2id
        matrix = np.zeros((len(self.splits[split]), len(self.labels)), dtype=np.float32)
        for row, value in enumerate(self.splits[split]["label"]):
            for label in split_labels(value) if self.multilabel else (value,):
                matrix[row, label2id[label]] = 1.0
        return matrix


def load_emotion_dataset(
    source: str | Path,
    splits: Iterable[str] = SPLITS,
    label_names: tuple[str, ...] = HUB_LABEL_NAMES,
    label_set: str | None = None,
    multilabel: bool = False,
) -> EmotionDataset:
    """Load the given splits from a folder, a hub dataset id, or several joined with commas,
    and check them.

    ``label_names`` maps integer labels to names (dair-ai/emotion's order by default).
    ``label_set`` (``six``, ``ekman``) maps every source's labels onto one set; without it a
    GoEmotions source goes through ``six`` and other sources keep their labels. The label set is
    taken from ``train`` when it is loaded, and every other split must stay inside it.
    ``multilabel`` keeps every label of a row (GoEmotions then goes through ``all``); a
    multi-label set asked for without it is an error, not a silent single-label model.
    """
    splits = tuple(splits)
    unknown_splits = set(splits) - set(SPLITS)
    if unknown_splits:
        raise DataError(f"unknown split(s) {sorted(unknown_splits)}; choose from {list(SPLITS)}")
    chosen = label_set_named(label_set) if label_set else None
    if chosen is not None and chosen.multi_label and not multilabel:
        raise DataError(f"label set '{chosen.name}' is multi-label; train it with --task multilabel")
    if chosen is not None and multilabel and not chosen.multi_label:
        raise DataError(
            f"label set '{chosen.name}' gives one label per row; a multi-label model needs "
            f"'{GOEMOTIONS_MULTILABEL_SET}' (or no label set)"
        )
    parts = [part.strip() for part in str(source).split(",") if part.strip()]
    if not parts:
        raise DataError("no data source given; pass --data or set EMOTION_DATA_DIR")
    loaded = [_load_source(part, splits, label_names, chosen, multilabel) for part in parts]
    frames = {split: pd.concat([part[0][split] for part in loaded], ignore_index=True) for split in splits}
    used = {part[2].name: part[2] for part in loaded if part[2] is not None}
    kinds = {part[3]["kind"] for part in loaded if part[2] is not None}

    reference_split = "train" if "train" in frames else splits[0]
    if multilabel:
        frames = {split: frame.assign(label=frame["label"].map(_joined)) for split, frame in frames.items()}
    names = _label_names(frames[reference_split]["label"], multilabel)
    # A multi-label set's labels are all its labels, whether or not train shows each one.
    labels = tuple(sorted(set(names) | {label for used_set in used.values() for label in used_set.labels}))
    if not multilabel or not used:
        labels = names
    if len(labels) < 2:
        raise DataError(f"split '{reference_split}' has {len(labels)} label(s); need at least 2")
    for split, frame in frames.items():
        unknown = sorted(set(_label_names(frame["label"], multilabel)) - set(labels))
        if unknown:
            raise DataError(
                f"split '{split}' has label(s) {unknown} that '{reference_split}' does not; "
                f"known labels: {list(labels)}"
            )
    return EmotionDataset(
        splits=frames,
        labels=labels,
        source=" + ".join(part[1] for part in loaded),
        label_set=next(iter(used.values())).card(kinds) if len(used) == 1 else None,
        summary={part[1]: part[3] for part in loaded},
        multilabel=multilabel,
    )


def _joined(value: str) -> str:
    """A multi-label row's ``label`` in one spelling (``love, joy`` → ``joy,love``)."""
    return joined_labels(label.strip() for label in value.split(","))


def _label_names(values: pd.Series, multilabel: bool) -> tuple[str, ...]:
    if not multilabel:
        return tuple(sorted(values.unique()))
    return tuple(sorted({label for value in values.unique() for label in split_labels(value)}))


def _load_source(
    source: str,
    splits: tuple[str, ...],
    label_names: tuple[str, ...],
    label_set: LabelSet | None,
    multilabel: bool = False,
) -> tuple[dict[str, pd.DataFrame], str, LabelSet | None, dict]:
    """One source's splits (text, label, source), its name, the label set used and its counts."""
    path = Path(source).expanduser()
    if path.is_dir() and _is_goemotions(path):
        default = GOEMOTIONS_MULTILABEL_SET if multilabel else GOEMOTIONS_DEFAULT_LABEL_SET
        return _load_goemotions(path, splits, label_set or label_set_named(default))
    if path.is_dir():
        raw = {split: _read_split_file(_find_split_file(path, split)) for split in splits}
        source_name = str(path.resolve())
    elif path.exists():
        raise DataError(f"{path} is a file; give the folder that holds the split files")
    elif _looks_like_hub_id(source):
        raw, label_names = _load_from_hub(source, splits)
        source_name = source
    else:
        raise DataError(
            f"data folder {path} does not exist; set EMOTION_DATA_DIR or pass --data "
            f"(a folder of train/validation/test files, or a hub id like dair-ai/emotion)"
        )
    frames = {split: _normalise(frame, split, label_names) for split, frame in raw.items()}
    summary = {"kind": "emotion", "rows": {split: len(frame) for split, frame in frames.items()}}
    if label_set is not None:
        frames, dropped = label_set.apply_single(frames, "emotion")
        summary = {**summary, "rows": {split: len(frame) for split, frame in frames.items()}, **dropped}
    frames = {split: frame.assign(source=source_name) for split, frame in frames.items()}
    return frames, source_name, label_set, summary


def _is_goemotions(folder: Path) -> bool:
    """GoEmotions' layout: labels.txt beside TSV split files (a CSV folder may hold a labels.txt)."""
    tsvs = [(folder / f"{stem}.tsv").is_file() for stem in ("train", "dev")]
    return (folder / GOEMOTIONS_LABELS_FILE).is_file() and any(tsvs)


def _load_goemotions(
    folder: Path, splits: tuple[str, ...], label_set: LabelSet
) -> tuple[dict[str, pd.DataFrame], str, LabelSet, dict]:
    """GoEmotions' TSV layout: ``dev`` is the test split unless a ``test.tsv`` is there, and
    validation is then carved from train (a fixed seed, so every run splits alike)."""
    names = [
        line.strip() for line in (folder / GOEMOTIONS_LABELS_FILE).read_text().splitlines() if line.strip()
    ]
    has_test = (folder / "test.tsv").is_file()
    files = {
        "train": "train",
        "validation": "dev" if has_test else None,
        "test": "test" if has_test else "dev",
    }
    raw: dict[str, pd.DataFrame] = {}
    # Train is read (and validation carved from it) whatever is asked for: a train split that
    # depended on the splits requested would leak validation rows into it.
    needed = set(splits) | (
        {"train", "validation"} if not has_test and set(splits) & {"train", "validation"} else set()
    )
    for split in needed:
        stem = files[split]
        if stem is not None:
            raw[split] = _read_goemotions_tsv(folder / f"{stem}.tsv", names)
    if "validation" in needed and files["validation"] is None:
        train = raw["train"]
        carved = train.sample(frac=VALIDATION_SHARE, random_state=0)
        raw["validation"] = carved.reset_index(drop=True)
        raw["train"] = train.drop(carved.index).reset_index(drop=True)
    raw = {split: raw[split] for split in splits}
    frames, dropped = label_set.apply_multi(raw, "goemotions")
    source_name = str(folder.resolve())
    summary = {
        "kind": "goemotions",
        "label_set": label_set.name,
        "rows": {split: len(frame) for split, frame in frames.items()},
        **dropped,
    }
    frames = {split: frame.assign(source=source_name) for split, frame in frames.items()}
    return frames, source_name, label_set, summary


def _read_goemotions_tsv(path: Path, names: list[str]) -> pd.DataFrame:
    """Rows of (text, tuple of label names); a line that is not text<TAB>ids<TAB>id stops with its number."""
    if not path.is_file():
        raise DataError(f"missing {path.name} in {path.parent} (GoEmotions layout: train.tsv, dev.tsv)")
    rows = []
    with path.open(encoding="utf-8", newline="") as handle:
        for number, fields in enumerate(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
            if not fields:
                continue
            try:
                text, ids = fields[0], fields[1]
                numbers = [int(index) for index in ids.split(",")]
                if not all(0 <= number < len(names) for number in numbers):
                    raise ValueError("label id out of range")
                labels = tuple(names[number] for number in numbers)
            except (IndexError, ValueError):
                raise DataError(
                    f"{path}:{number}: expected text<TAB>label ids (0..{len(names) - 1}, comma-separated)"
                    f"<TAB>comment id, got {chr(9).join(fields)[:80]!r}"
                ) from None
            if text.strip():
                rows.append((text.strip(), labels))
    return pd.DataFrame(rows, columns=["text", "labels"])


def _looks_like_hub_id(source: str) -> bool:
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not source.startswith((".", "~"))


def _find_split_file(folder: Path, split: str) -> Path:
    for stem in SPLIT_FILE_STEMS[split]:
        for suffix in FILE_SUFFIXES:
            candidate = folder / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    expected = ", ".join(f"{SPLIT_FILE_STEMS[split][0]}{suffix}" for suffix in FILE_SUFFIXES)
    raise DataError(f"missing split '{split}' in {folder}: expected one of {expected}")


def _read_split_file(path: Path) -> pd.DataFrame:
    try:
        if path.suffix == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        elif path.suffix == ".jsonl":
            frame = _read_jsonl(path)
        else:
            frame = _read_semicolon_txt(path)
    except DataError:
        raise
    except (ValueError, OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read {path}: {error}") from error
    missing = {"text", "label"} - set(frame.columns)
    if missing:
        raise DataError(
            f"{path} needs columns 'text' and 'label'; missing {sorted(missing)}, found {list(frame.columns)}"
        )
    return frame[["text", "label"]].assign(_line=_line_numbers(path, len(frame)))


def _line_numbers(path: Path, count: int) -> list[int]:
    # Line numbers in messages point at the file as a person sees it (CSV has a header line).
    first = 2 if path.suffix == ".csv" else 1
    return list(range(first, first + count))


def _read_jsonl(path: Path) -> pd.DataFrame:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise DataError(f"{path}:{number}: not valid JSON ({error.msg})") from error
    return pd.DataFrame(rows)


def _read_semicolon_txt(path: Path) -> pd.DataFrame:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            text, separator, label = line.rpartition(";")
            if not separator:
                raise DataError(f"{path}:{number}: expected 'text;label', got {line[:60]!r}")
            rows.append({"text": text, "label": label})
    return pd.DataFrame(rows, columns=["text", "label"])


def _load_from_hub(
    dataset_id: str, splits: tuple[str, ...]
) -> tuple[dict[str, pd.DataFrame], tuple[str, ...]]:
    try:
        import datasets
    except ImportError as error:
        raise DataError(
            f"loading '{dataset_id}' from the hub needs the 'datasets' package: "
            "pip install 'emotion-ops[hub]', or point EMOTION_DATA_DIR at a local folder"
        ) from error
    try:
        loaded = datasets.load_dataset(dataset_id)
    except Exception as error:  # the hub client raises many types; all mean "not reachable"
        raise DataError(f"cannot load '{dataset_id}' from the hub: {error}") from error
    feature = loaded[splits[0]].features.get("label")
    if feature is None or not hasattr(feature, "names"):
        raise DataError(
            f"hub dataset '{dataset_id}' has no single 'label' class column (a multi-label set like "
            "go_emotions? download it and pass the folder: labels.txt and TSVs)"
        )
    names = tuple(feature.names)
    frames = {}
    for split in splits:
        if split not in loaded:
            raise DataError(f"hub dataset '{dataset_id}' has no split '{split}'")
        frame = loaded[split].to_pandas()[["text", "label"]]
        frames[split] = frame.assign(_line=range(1, len(frame) + 1))
    return frames, names


def _normalise(frame: pd.DataFrame, split: str, label_names: tuple[str, ...]) -> pd.DataFrame:
    if frame.empty:
        raise DataError(f"split '{split}' is empty")
    texts = frame["text"]
    not_text = ~texts.map(lambda value: isinstance(value, str))
    if not_text.any():
        raise DataError(f"split '{split}': non-text values at {_where(frame, not_text)}")
    blank = texts.str.strip() == ""
    if blank.any():
        raise DataError(f"split '{split}': empty texts at {_where(frame, blank)}")
    labels = frame["label"].map(lambda value: _label_name(value, label_names))
    unknown = labels.isna()
    if unknown.any():
        raise DataError(
            f"split '{split}': unknown label(s) {sorted(set(map(str, frame['label'][unknown])))} "
            f"at {_where(frame, unknown)}; integer labels must be ids 0..{len(label_names) - 1} "
            f"of {list(label_names)}"
        )
    return pd.DataFrame({"text": texts.str.strip(), "label": labels}).reset_index(drop=True)


def _label_name(value: object, label_names: tuple[str, ...]) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float) and not pd.isna(value) and float(value).is_integer():
        index = int(value)
        return label_names[index] if 0 <= index < len(label_names) else None
    if isinstance(value, str):
        name = value.strip().lower()
        if name.isdigit():
            return _label_name(int(name), label_names)
        return name or None
    return None


def _where(frame: pd.DataFrame, mask: pd.Series) -> str:
    lines = frame.loc[mask, "_line"].tolist()
    shown = ", ".join(f"line {line}" for line in lines[:_MAX_ROWS_IN_MESSAGE])
    more = f" and {len(lines) - _MAX_ROWS_IN_MESSAGE} more" if len(lines) > _MAX_ROWS_IN_MESSAGE else ""
    return shown + more
