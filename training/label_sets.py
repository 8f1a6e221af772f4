"""Label sets: how a source's labels map onto the labels a model learns.

The mapping is data (``label_sets.json`` beside this module, shipped with the package), not
code: each set lists its labels, why it maps what it maps, and one table per source kind
(``goemotions``, ``emotion`` for dair-ai/emotion-style data). The table a model was trained
with goes into its model card.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pandas as pd

# One spelling of a multi-label answer everywhere: training data, feedback and the drift job.
from core.labels import joined_labels

LABEL_SETS_FILE = Path(__file__).with_name("label_sets.json")


class LabelSetError(ValueError):
    """An unknown label set, or a source kind it has no table for."""


@dataclass(frozen=True)
class LabelSet:
    name: str
    labels: tuple[str, ...]
    description: str
    why: str
    map: dict[str, dict[str, str]]
    # A multi-label set keeps every label a row maps to (``label``: the names joined by commas).
    multi_label: bool = False

    def table(self, kind: str) -> dict[str, str]:
        if kind not in self.map:
            raise LabelSetError(f"label set '{self.name}' has no mapping for {kind} data")
        return self.map[kind]

    def apply_single(self, frames: dict[str, pd.DataFrame], kind: str):
        """Single-label rows (``label``) mapped; rows whose label maps to nothing are dropped."""
        table = self.table(kind)
        mapped, dropped = {}, {}
        for split, frame in frames.items():
            labels = frame["label"].map(table)
            dropped[split] = int(labels.isna().sum())
            kept = frame.assign(label=labels)[labels.notna()]
            mapped[split] = kept[["text", "label"]].reset_index(drop=True)
        return mapped, {"dropped_unmapped": dropped}

    def apply_multi(self, frames: dict[str, pd.DataFrame], kind: str):
        """Multi-label rows (``labels``: a tuple) to one label each: kept when the labels map to
        exactly one of ours; dropped when they map to none, or to two (which one is the truth?).
        A multi-label set keeps them all, joined by commas; only rows that map to none drop."""
        table = self.table(kind)
        if self.multi_label:
            return self._keep_all(frames, table)
        mapped, unmapped, ambiguous = {}, {}, {}
        for split, frame in frames.items():
            targets = frame["labels"].map(lambda labels: {table[label] for label in labels if label in table})
            one = targets.map(len) == 1
            unmapped[split] = int((targets.map(len) == 0).sum())
            ambiguous[split] = int((targets.map(len) > 1).sum())
            mapped[split] = pd.DataFrame(
                {"text": frame["text"][one], "label": targets[one].map(lambda labels: next(iter(labels)))}
            ).reset_index(drop=True)
        return mapped, {"dropped_unmapped": unmapped, "dropped_ambiguous": ambiguous}

    @staticmethod
    def _keep_all(frames: dict[str, pd.DataFrame], table: dict[str, str]):
        mapped, unmapped = {}, {}
        for split, frame in frames.items():
            targets = frame["labels"].map(
                lambda labels: joined_labels(table[label] for label in labels if label in table)
            )
            kept = targets != ""
            unmapped[split] = int((~kept).sum())
            mapped[split] = pd.DataFrame({"text": frame["text"][kept], "label": targets[kept]}).reset_index(
                drop=True
            )
        return mapped, {"dropped_unmapped": unmapped}

    def card(self, kinds: set[str]) -> dict:
        """What the model card records: the set, its reason, and the tables of the kinds used."""
        return {
            "name": self.name,
            "labels": list(self.labels),
            "multi_label": self.multi_label,
            "why": self.why,
            "map": {kind: self.map[kind] for kind in sorted(kinds) if kind in self.map},
        }


@cache
def _definitions() -> dict:
    return json.loads(LABEL_SETS_FILE.read_text(encoding="utf-8"))


def label_set_names() -> tuple[str, ...]:
    return tuple(_definitions())


def label_set_named(name: str) -> LabelSet:
    definitions = _definitions()
    if name not in definitions:
        raise LabelSetError(f"unknown label set '{name}'; choose from {list(definitions)}")
    entry = definitions[name]
    return LabelSet(
        name=name,
        labels=tuple(entry["labels"]),
        description=entry["description"],
        why=entry["why"],
        map=entry["map"],
        multi_label=bool(entry.get("multi_label", False)),
    )


def split_labels(value: str) -> tuple[str, ...]:
    return tuple(label for label in value.split(",") if label)
