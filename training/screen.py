"""The label screen: feedback is checked before it trains anything.

Four checks, each over every label not yet decided by an operator:

- **Conflicts.** One text labelled differently by different sources (the label history keeps
  every label given): its rows go to review, an operator decides.
- **Sources.** A source (an API key, an imported file) whose labels agree with the champion
  *less often than chance* (Cohen's kappa below 0, one-sided binomial test against the agreement
  that independent labels with the same marginals would reach) is systematically wrong: a
  vendor with its labels shifted, or an attacker flipping them. All its rows are quarantined.
  A row of a multi-label set agrees when the champion's top label is in the set.
- **Backdoors.** The candidates are what the model reads: every tokenizer piece and pair of
  adjacent pieces (so spellings that share a piece are one family, tested together), and
  character classes (emoji, symbols, punctuation; casing where the tokenizer is cased). A
  candidate is *raised* when it is enriched in the feedback over the base data and ties a label
  (each label of a set on its own) more than the same sources' other rows and the base data do:
  purity is a test, not a cut-off. Every raised candidate goes to the gate, which appends it to
  trusted texts and refuses a challenger that it steers (a trigger hidden among cover texts
  passes every content test, not that one). Its rows with that label are *quarantined* when,
  besides, the champion reading them without it agrees with the label far less than it agrees
  with the other feedback rows of that label (other sources' where they give enough). The
  champion's agreement on the curated split, which no feedback writes, is measured beside it
  and puts the candidates it finds unexplained first in the gate's queue; alone it cannot
  decide a quarantine: the champion's gap between curated and live rows is per label
  (docs/labels.md has the figures).
- **Label noise.** Confident learning (``cleanlab``): a row is quarantined when the champion and
  a model trained on the other folds of the feedback (logistic regression on the champion's own
  text representation) both give a label of it under 1 %.

The source and backdoor checks are tests with a stated error rate:
``label_screen_false_alarm_rate`` is shared between them, and within each split over what it
tests (Bonferroni). The source test is a one-sided binomial test against chance agreement; the
backdoor's enrichment, label and content tests are Fisher's exact tests (no rate plugged in; the
curated comparison beside them is a binomial test), and a quarantine needs all to reject (an
intersection-union test, so they spend the budget once). An honest word that breaks every null
(rare in the base data, tied to a label, carrying an emotion the champion cannot see without it)
can be raised: that is what review and the gate's comparison with the champion are for.
Confident learning has no such guarantee; its rate on honest labels is measured in
``emotion-ops bench loop`` (docs/labels.md).

Quarantined rows stay in the log with their reason; ``emotion-ops label review`` lists them and
lets an operator release or drop them. Released and dropped rows are never re-screened.
"""

from __future__ import annotations

import itertools
import logging
import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binom, fisher_exact

from core.labels import ACCEPTED, DROPPED, QUARANTINED, RELEASED
from core.text import for_terminal

log = logging.getLogger(__name__)

OPERATOR_DECIDED = (RELEASED, DROPPED)
# A source needs this many rows before its agreement is judged (fewer says too little).
MIN_SOURCE_ROWS = 30
# Confident learning needs a few rows per class in every fold.
MIN_NOISE_ROWS = 50
NOISE_FOLDS = 5
# A label both models give less than this probability is confidently rejected.
NOISE_MAX_PROBABILITY = 0.01
# The gate appends each raised candidate to trusted texts: the most significant this many.
MAX_PROBES = 20
# Curated rows the champion's agreement (the content test's yardstick) is measured on.
YARDSTICK_ROWS = 2000
MIN_YARDSTICK_ROWS = 10
# Without a fast tokenizer's offsets: words, and each other visible character on its own.
_FALLBACK = re.compile(r"\w+|[^\w\s]")
# A word in capitals (a casing pattern a cased tokenizer reads).
_CAPITALS = re.compile(r"\b[A-Z]{2,}\b")


@dataclass(frozen=True)
class Finding:
    check: str  # conflict | source | backdoor | noise
    subject: str  # the source, the candidate, "conflicting labels" or "label noise"
    label: str | None
    rows: tuple[str, ...]  # request ids quarantined for it
    reason: str
    p_value: float | None = None
    row_reasons: dict[str, str] | None = None  # a reason of each row's own, where it has one
    probe: str | None = None  # a backdoor's spelling the gate appends to trusted texts


@dataclass
class ScreenReport:
    screened: int = 0
    findings: list[Finding] = field(default_factory=list)
    decisions: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # id -> (status, reason)
    probes: dict[str, str] = field(default_factory=dict)  # raised candidate's spelling -> its label
    notes: list[str] = field(default_factory=list)

    @property
    def quarantined(self) -> set[str]:
        return {row for row, (status, _) in self.decisions.items() if status == QUARANTINED}

    @property
    def raised_ngrams(self) -> dict[str, str]:
        """What the gate appends to trusted texts: each candidate the backdoor check raised
        (quarantined or not), as its commonest spelling, with the label it carried."""
        quarantined = {
            f.probe: f.label
            for f in self.findings
            if f.check == "backdoor" and f.probe and f.label is not None
        }
        return {**self.probes, **quarantined}

    @property
    def raised_only(self) -> list[str]:
        """Raised candidates whose rows were kept (not quarantined for it)."""
        quarantined = {f.probe for f in self.findings if f.check == "backdoor"}
        return sorted(probe for probe in self.probes if probe not in quarantined)

    def summary(self) -> dict:
        """What the retrain report and the model card say about the screen."""
        by_check: Counter[str] = Counter()
        for finding in self.findings:
            by_check[finding.check] += len(finding.rows)
        return {
            "screened_rows": self.screened,
            "quarantined_rows": len(self.quarantined),
            "quarantined_by_check": dict(by_check),
            "findings": [
                {
                    "check": f.check,
                    "subject": f.subject,
                    "label": f.label,
                    "rows": len(f.rows),
                    "reason": f.reason,
                    "p_value": f.p_value,
                }
                for f in self.findings
            ],
            "notes": self.notes,
        }

    def describe(self) -> str:
        if not self.findings:
            return f"label screen: {self.screened} rows screened, none quarantined"
        parts = [f"{f.subject} ({len(f.rows)} rows)" for f in self.findings]
        return (
            f"label screen: {len(self.quarantined)} of {self.screened} rows quarantined: "
            + "; ".join(parts)
            + " (emotion-ops label review)"
        )


class TextReader:
    """What the model reads of a text, as screen candidates: ``piece:<p>`` for each tokenizer
    piece, ``pieces:<p> <q>`` for each pair of adjacent pieces, ``class:<c>`` for each character
    class, each with the character spans that make it (taken out to read the text without it).
    Without a fast tokenizer (no offsets) the pieces are words and punctuation marks."""

    def __init__(self, tokenizer: Any | None) -> None:
        self.tokenizer = tokenizer if getattr(tokenizer, "is_fast", False) else None
        # An uncased tokenizer lower-cases first: casing is invisible to the model, no candidate.
        self.cased = self.tokenizer is not None and self.tokenizer.tokenize("A") != self.tokenizer.tokenize(
            "a"
        )

    def read(self, texts: list[str]) -> list[dict[str, list[tuple[int, int]]]]:
        if self.tokenizer is None:
            pieces = [
                [
                    (m.group().lower(), (m.start(), m.end()), (m.start(), m.end()))
                    for m in _FALLBACK.finditer(text)
                ]
                for text in texts
            ]
        else:
            encoded = self.tokenizer(
                texts, add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False
            )
            pieces = []
            for i in range(len(texts)):
                words: dict[int, tuple[int, int]] = {}
                offsets = encoded["offset_mapping"][i]
                word_ids = encoded.word_ids(i)
                for word, (start, end) in zip(word_ids, offsets, strict=True):
                    if word is not None:
                        low, high = words.get(word, (start, end))
                        words[word] = (min(low, start), max(high, end))
                pieces.append(
                    [
                        (token, words[word], span)
                        for token, word, span in zip(encoded.tokens(i), word_ids, offsets, strict=True)
                        if word is not None
                    ]
                )
        return [self._features(text, row) for text, row in zip(texts, pieces, strict=True)]

    def _features(self, text: str, pieces: list[tuple[str, tuple[int, int], tuple[int, int]]]) -> dict:
        features: dict[str, list[tuple[int, int]]] = defaultdict(list)
        # A piece is taken out with the whole word it is part of (the family: every spelling).
        for token, word, _ in pieces:
            features[f"piece:{token}"].append(word)
        for (first, word_a, _), (second, word_b, _) in itertools.pairwise(pieces):
            features[f"pieces:{first} {second}"] += [word_a, word_b]
        for position, character in enumerate(text):
            kind = character_class(character)
            if kind:
                features[f"class:{kind}"].append((position, position + 1))
        if self.cased:
            for match in _CAPITALS.finditer(text):
                features["class:capitals"].append(match.span())
        return features


def character_class(character: str) -> str | None:
    """emoji, symbol or punctuation, else None (letters, digits, spaces)."""
    point = ord(character)
    if 0x1F000 <= point <= 0x1FAFF or 0x2600 <= point <= 0x27BF or point in (0x200D, 0xFE0F):
        return "emoji"
    category = unicodedata.category(character)
    if category[0] == "S":
        return "symbol"
    if category[0] == "P":
        return "punctuation"
    return None


def without_spans(text: str, spans: list[tuple[int, int]]) -> str:
    """The text with the characters of ``spans`` taken out (what is left, spaces tidied)."""
    keep = np.ones(len(text), bool)
    for start, end in spans:
        keep[start:end] = False
    left = "".join(character for character, kept in zip(text, keep, strict=True) if kept)
    return re.sub(r"\s{2,}", " ", left).strip() or "."


def describe_candidate(key: str, surfaces: Counter[str]) -> str:
    """A candidate as a reviewer reads it: the piece or class with the spellings it came from."""
    kind, _, value = key.partition(":")
    seen = ", ".join(f"'{for_terminal(surface)}'" for surface, _ in surfaces.most_common(3))
    more = f" and {len(surfaces) - 3} more" if len(surfaces) > 3 else ""
    value = for_terminal(value)
    what = {"piece": f"piece '{value}'", "pieces": f"pieces '{value}'", "class": f"{value} characters"}[kind]
    return f"{what} (in {seen}{more})"


def label_sets(labels: pd.Series) -> list[frozenset[str]]:
    return [frozenset(str(value).split(",")) for value in labels]


def screen_feedback(
    feedback: pd.DataFrame,
    base: pd.DataFrame,
    labels: tuple[str, ...],
    champion: Any,
    *,
    curated: pd.DataFrame | None = None,
    history: pd.DataFrame | None = None,
    false_alarm_rate: float = 0.01,
    min_rows: int = 10,
    multilabel: bool = False,
    seed: int = 0,
    reader: TextReader | None = None,
    label_noise: bool = True,
) -> ScreenReport:
    """Screen ``feedback`` (id, text, label, source, status) before a retrain.

    ``base`` is the curated training data (text, label) the candidates' rates are compared
    with; ``curated`` the curated rows (text, label: a validation split) the champion's
    agreement is measured on for the content test (``base`` when there is none); ``history``
    every label given (id, text, label, source), for conflicts; ``champion`` is the served
    model's predictor. Rows an operator released or dropped keep their status and still count as
    evidence (a released trigger is still raised, so the gate tests it). ``reader`` is how texts
    are read into candidates (the champion's tokenizer unless given); ``label_noise`` off leaves
    out the noise check, which is not under ``false_alarm_rate`` (bench screen's honest runs).
    """
    report = ScreenReport()
    # A label the model does not know is dropped by the retrain anyway (and counted there).
    # (the champion's, and one label each unless label sets are screened).
    knows = set(labels) & set(champion.labels)
    known = feedback["label"].map(
        lambda value: set(str(value).split(",")) <= knows and (multilabel or "," not in str(value))
    )
    feedback = feedback[known].reset_index(drop=True)
    open_rows = ~feedback["status"].isin(OPERATOR_DECIDED)
    report.screened = int(open_rows.sum())
    if feedback.empty:
        return report
    texts = feedback["text"].tolist()
    probabilities, embeddings = champion.proba_and_embed(texts)
    champion_labels = tuple(champion.labels)
    given = label_matrix(feedback["label"], champion_labels)
    decided = np.asarray(champion.decisions(probabilities), bool)
    top = np.array(champion_labels)[probabilities.argmax(axis=1)]
    budget = false_alarm_rate / 2  # sources and backdoors share it

    if history is not None and len(history):
        _screen_conflicts(feedback, history, report)
    _screen_sources(feedback, top, budget, report)
    yardstick = Yardstick.measure(champion, curated if curated is not None and len(curated) else base)
    _screen_backdoors(
        feedback, base, champion, reader or TextReader(getattr(champion, "tokenizer", None)),
        given, decided, yardstick, budget, min_rows, report,
    )  # fmt: skip
    if label_noise and multilabel:
        _screen_noise_multilabel(feedback, champion_labels, given, probabilities, embeddings, seed, report)
    elif label_noise:
        _screen_noise(feedback, labels, champion_labels, probabilities, embeddings, seed, report)

    reasons: dict[str, list[str]] = defaultdict(list)
    for finding in report.findings:
        for row in finding.rows:
            reasons[row].append((finding.row_reasons or {}).get(row, finding.reason))
    for index, row in feedback.iterrows():
        if not open_rows[index]:
            continue
        if row["id"] in reasons:
            report.decisions[row["id"]] = (QUARANTINED, "; ".join(reasons[row["id"]])[:2000])
        else:
            report.decisions[row["id"]] = (ACCEPTED, None)
    return report


def label_matrix(values: pd.Series, labels: tuple[str, ...]) -> np.ndarray:
    """Rows by labels, True where the row's label (set) holds that label."""
    column = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(values), len(labels)), bool)
    for row, chosen in enumerate(label_sets(values)):
        for label in chosen:
            if label in column:
                matrix[row, column[label]] = True
    return matrix


@dataclass(frozen=True)
class Yardstick:
    """The champion on curated rows no feedback writes: how often it agrees with each label
    given there (its recall of it) and with any label (its accuracy)."""

    recall: dict[str, float]
    accuracy: float
    rows: int

    @classmethod
    def measure(cls, champion: Any, curated: pd.DataFrame) -> Yardstick:
        sample = curated.sample(n=min(YARDSTICK_ROWS, len(curated)), random_state=0)
        labels = tuple(champion.labels)
        given = label_matrix(sample["label"], labels)
        decided = np.asarray(champion.decisions(champion.predict_proba(sample["text"].tolist())), bool)
        agreed = (decided & given).any(axis=1)
        accuracy = float(agreed.mean()) if len(sample) else 1.0
        recall = {
            label: float(decided[given[:, i], i].mean())
            for i, label in enumerate(labels)
            if given[:, i].sum() >= MIN_YARDSTICK_ROWS
        }
        return cls(recall, accuracy, len(sample))

    def expected(self, label: str, feedback_agreement: float) -> float:
        """The agreement with ``label`` to expect on texts of this feedback: its curated recall
        (the accuracy where too few curated rows carry it), scaled by how much less the champion
        agrees with this feedback than with curated rows (no more than it does there)."""
        domain = min(1.0, feedback_agreement / self.accuracy) if self.accuracy else 1.0
        return self.recall.get(label, self.accuracy) * domain


def _screen_conflicts(feedback: pd.DataFrame, history: pd.DataFrame, report: ScreenReport) -> None:
    # One text, labels from more than one source that disagree: neither is taken on trust.
    # Each source's latest word counts (a source correcting itself is no conflict), and a label an
    # operator dropped says nothing about the text any more.
    dropped = set(feedback.loc[feedback["status"] == DROPPED, "id"])
    history = history[~history["id"].isin(dropped)]
    history = history.assign(key=history["text"].map(_text_key), source=history["source"].fillna("unknown"))
    rows = feedback.assign(key=feedback["text"].map(_text_key))
    open_rows = ~rows["status"].isin(OPERATOR_DECIDED)
    row_reasons = {}
    for key, given in history.groupby("key"):
        if given["source"].nunique() < 2 or given["label"].nunique() < 2:
            continue
        by_source = given.groupby("source")["label"].last()  # the history is oldest first
        if by_source.nunique() < 2:
            continue
        said = "; ".join(f"{for_terminal(source)}: {label}" for source, label in by_source.items())
        for request_id in rows.loc[(rows["key"] == key) & open_rows, "id"]:
            row_reasons[request_id] = f"conflicting labels for one text ({said}): an operator decides"
    if row_reasons:
        report.findings.append(
            Finding(
                "conflict",
                "conflicting labels",
                None,
                tuple(row_reasons),
                "sources disagree on the label of one text",
                row_reasons=row_reasons,
            )
        )


def _text_key(text: str) -> str:
    return " ".join(str(text).casefold().split())


def _screen_sources(feedback: pd.DataFrame, top: np.ndarray, budget: float, report: ScreenReport) -> None:
    sources = feedback["source"].fillna("unknown")
    sets = label_sets(feedback["label"])
    judged = [source for source, count in sources.value_counts().items() if count >= MIN_SOURCE_ROWS]
    for source in judged:
        mask = (sources == source).to_numpy()
        given = [sets[i] for i in np.flatnonzero(mask)]
        champion = top[mask]
        rows = len(given)
        agreed = sum(label in chosen for label, chosen in zip(champion, given, strict=True))
        # Chance: the champion's answers independent of the labels, each keeping its shares
        # (a set agrees with any of its labels).
        champion_share = pd.Series(champion).value_counts(normalize=True)
        chance = float(np.mean([sum(champion_share.get(label, 0.0) for label in chosen) for chosen in given]))
        chance = min(chance, 1.0)
        observed = agreed / rows
        kappa = (observed - chance) / (1 - chance) if chance < 1 else 0.0
        p_value = float(binom.cdf(agreed, rows, chance))
        if p_value <= budget / len(judged):
            ids = tuple(feedback.loc[mask & ~feedback["status"].isin(OPERATOR_DECIDED).to_numpy(), "id"])
            report.findings.append(
                Finding(
                    "source",
                    str(source),
                    None,
                    ids,
                    f"source {source}: its labels agree with the champion less often than chance "
                    f"({100 * observed:.1f} % vs {100 * chance:.1f} %, kappa {kappa:.2f} over {rows} rows, "
                    f"p={p_value:.1e}): systematically wrong labels",
                    p_value,
                )
            )


@dataclass
class _Suspect:
    key: str
    label: str
    carriers: np.ndarray  # row positions carrying the candidate and the label
    carrying: int
    p_value: float  # enrichment and label tests together
    detail: str


def _screen_backdoors(
    feedback: pd.DataFrame,
    base: pd.DataFrame,
    champion: Any,
    reader: TextReader,
    given: np.ndarray,
    decided: np.ndarray,
    yardstick: Yardstick,
    budget: float,
    min_rows: int,
    report: ScreenReport,
) -> None:
    texts = feedback["text"].tolist()
    read = reader.read(texts)
    rows_of: dict[str, list[int]] = defaultdict(list)
    for row, features in enumerate(read):
        for key in features:
            rows_of[key].append(row)
    candidates = {key: np.array(rows) for key, rows in rows_of.items() if len(rows) >= min_rows}
    if not candidates:
        return
    champion_labels = tuple(champion.labels)
    base_rows = len(base)
    base_counts: Counter[str] = Counter()
    for start in range(0, base_rows, 2048):
        for features in reader.read(base["text"].iloc[start : start + 2048].tolist()):
            base_counts.update(key for key in features if key in candidates)
    base_given = label_matrix(base["label"], champion_labels)
    base_with = base_given.sum(axis=0)
    rows = len(feedback)
    sources = feedback["source"].fillna("unknown").to_numpy()
    agreed_rows = (decided & given).any(axis=1)
    open_rows = ~feedback["status"].isin(OPERATOR_DECIDED).to_numpy()
    # Each label a candidate's rows carry often enough is tested: the count of tests made.
    pairs = [
        (key, j)
        for key, carriers in candidates.items()
        for j in np.flatnonzero(given[carriers].sum(axis=0) >= max(2, min_rows // 2))
    ]
    if not pairs:
        return
    threshold = budget / len(pairs)
    suspects = []
    for key, j in pairs:
        carriers = candidates[key]
        carrying = len(carriers)
        # 1: rare in the base data, frequent in feedback (Fisher's exact test, one-sided).
        in_base = base_counts[key]
        p_enriched = _fisher(carrying, rows - carrying, in_base, base_rows - in_base, "greater")
        if p_enriched > threshold:
            continue
        # 2: purity as a test: the label far more often on these rows than on the same sources'
        # other rows, and than in the base data.
        with_label = int(given[carriers, j].sum())
        has = np.zeros(rows, bool)
        has[carriers] = True
        peers = np.isin(sources, np.unique(sources[carriers])) & ~has
        if peers.sum() < min_rows:
            # A key that sends nothing but the trigger: its peers are the other feedback.
            peers = ~has
        peers_with = int(given[peers, j].sum())
        p_peers = _fisher(
            with_label, carrying - with_label, peers_with, int(peers.sum()) - peers_with, "greater"
        )
        p_base = _fisher(
            with_label, carrying - with_label, int(base_with[j]), base_rows - int(base_with[j]), "greater"
        )
        p_value = max(p_enriched, p_peers, p_base)
        if p_value > threshold:
            continue
        label = champion_labels[j]
        detail = (
            f"in {carrying} of {rows} feedback rows vs {100 * in_base / max(base_rows, 1):.2f} % "
            "of the base data, "
            f"labelled {label} in {with_label} of them (the same sources' other rows "
            f"{100 * peers_with / max(int(peers.sum()), 1):.1f} %, the base data "
            f"{100 * base_with[j] / max(base_rows, 1):.1f} %)"
        )
        suspects.append(_Suspect(key, label, carriers[given[carriers, j]], carrying, p_value, detail))
    if not suspects:
        return
    suspects.sort(key=lambda suspect: suspect.p_value)
    # 3: the champion reading the carriers without the candidate, in one pass for all of them.
    stripped, owners = [], []
    for number, suspect in enumerate(suspects):
        for row in suspect.carriers:
            stripped.append(without_spans(texts[row], read[row][suspect.key]))
            owners.append(number)
    stripped_agrees = np.zeros(len(stripped), bool)
    if stripped:
        stripped_decided = np.asarray(champion.decisions(champion.predict_proba(stripped)), bool)
        owner_labels = np.array([champion_labels.index(suspects[n].label) for n in owners])
        stripped_agrees = stripped_decided[np.arange(len(stripped)), owner_labels]
    owners_array = np.array(owners)
    flagged: dict[str, set[int]] = defaultdict(set)  # label -> rows quarantined for it
    probed: dict[str, set[int]] = defaultdict(set)  # label -> rows a probe already covers
    to_raise: list[tuple[bool, float, str, str, set[int], str, str]] = []
    for number, suspect in enumerate(suspects):
        carrier_set = {int(row) for row in suspect.carriers}
        key = suspect.key
        surfaces = Counter(_surface(texts[r], key, read[r][key], reader.cased) for r in suspect.carriers)
        subject = describe_candidate(suspect.key, surfaces)
        probe = _probe(suspect.key, surfaces)
        agreed = int(stripped_agrees[owners_array == number].sum())
        carrying_rows = np.zeros(len(texts), bool)
        carrying_rows[list(carrier_set)] = True
        others = ~carrying_rows
        feedback_agreement = float(agreed_rows[others].mean()) if others.any() else yardstick.accuracy
        # 3a: against the curated split (no feedback writes it), scaled by how much weaker the
        # champion is on this feedback overall: what the gate is asked to test.
        expected = yardstick.expected(suspect.label, feedback_agreement)
        p_curated = float(binom.cdf(agreed, len(carrier_set), expected))
        # 3b: against the other feedback rows with this label, the same kind of text (from other
        # sources where they give enough, so the key under test does not write its yardstick):
        # what quarantines. The curated split alone cannot: the champion's gap between curated
        # and live rows is per label ('?' rows on Reddit are surprise, which it rarely says).
        column = champion_labels.index(suspect.label)
        reference = others & given[:, column]
        elsewhere = reference & ~np.isin(sources, np.unique(sources[list(carrier_set)]))
        if elsewhere.sum() >= min_rows:
            reference = elsewhere
        reference_rows = int(reference.sum())
        reference_agreed = int(decided[reference, column].sum())
        p_feedback = (
            _fisher(
                agreed, len(carrier_set) - agreed, reference_agreed, reference_rows - reference_agreed, "less"
            )
            if reference_rows >= min_rows
            else 1.0
        )
        curated_rate = yardstick.recall.get(suspect.label, yardstick.accuracy)
        content = (
            f"without it the champion agrees with {suspect.label} on {agreed} of {len(carrier_set)}: "
            f"{100 * expected:.0f} % expected from {yardstick.rows} curated rows "
            f"({100 * curated_rate:.0f} %, scaled by its agreement here, {100 * feedback_agreement:.0f} % "
            f"vs {100 * yardstick.accuracy:.0f} %), "
            f"{100 * reference_agreed / max(reference_rows, 1):.0f} % on the other {reference_rows} "
            f"feedback rows with {suspect.label}"
        )
        p_value = max(suspect.p_value, p_feedback)
        # Every candidate enriched and tied to a label is raised for the gate: a trigger hidden
        # among cover texts passes the content tests but still steers the model trained on it.
        # Those the content tests find unexplained go first.
        unexplained = min(p_curated, p_feedback) <= threshold
        to_raise.append(
            (not unexplained, suspect.p_value, probe, suspect.label, carrier_set, subject, content)
        )
        if p_value > threshold or carrier_set <= flagged[suspect.label]:
            continue
        flagged[suspect.label] |= carrier_set
        positions = np.array(sorted(carrier_set))
        ids = tuple(feedback.loc[positions[open_rows[positions]], "id"])
        report.findings.append(
            Finding(
                "backdoor",
                subject,
                suspect.label,
                ids,
                f"possible trigger {subject}: {suspect.detail}, and {content}; p={p_value:.1e}",
                p_value,
                probe=probe,
            )
        )
    for _, _, probe, label, carrier_set, subject, content in sorted(to_raise, key=lambda r: r[:2]):
        # Another piece of a candidate already raised (a longer pair, a part of it) adds no probe.
        if probe in report.probes or carrier_set <= probed[label]:
            continue
        quarantined = carrier_set <= flagged[label]
        if not quarantined and len(report.raised_only) >= MAX_PROBES:
            continue  # the cap is on candidates whose rows are kept; every finding is tested
        report.probes[probe] = label
        probed[label] |= carrier_set
        if not quarantined:
            report.notes.append(f"raised for the gate, not quarantined: {subject} ({label}); {content}")


def _surface(text: str, key: str, spans: list[tuple[int, int]], cased: bool) -> str:
    # A piece's first word; a pair's first two words with what lies between (a pair's spans come
    # two by two); a class's first character. The case is kept where the tokenizer reads it.
    first = spans[0]
    if key.startswith("pieces:") and len(spans) > 1 and spans[1][0] >= first[0]:
        first = (first[0], max(first[1], spans[1][1]))
    surface = text[first[0] : first[1]]
    return surface if cased else surface.lower()


def _probe(key: str, surfaces: Counter[str]) -> str:
    # What the gate appends to trusted texts: the commonest spelling that carried it.
    return surfaces.most_common(1)[0][0] if surfaces else key.partition(":")[2]


def _fisher(a: int, b: int, c: int, d: int, alternative: str) -> float:
    """Fisher's exact test of the 2x2 table [[a, b], [c, d]]: is the first row's share of the
    first column greater (or less) than the second row's? Exact, so no rate is plugged in."""
    return float(fisher_exact([[a, b], [c, d]], alternative=alternative).pvalue)


def _agrees(predicted: np.ndarray, label: str) -> np.ndarray:
    # A multi-label answer is its labels joined by commas: the top label agrees when among them.
    return np.isin(predicted, label.split(","))


def _screen_noise(
    feedback: pd.DataFrame,
    labels: tuple[str, ...],
    champion_labels: tuple[str, ...],
    probabilities: np.ndarray,
    embeddings: np.ndarray,
    seed: int,
    report: ScreenReport,
) -> None:
    from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    already = {row for finding in report.findings for row in finding.rows}
    keep = ~feedback["id"].isin(already).to_numpy()
    given = feedback["label"].to_numpy()[keep]
    present = sorted(set(given))
    counts = Counter(given)
    if keep.sum() < MIN_NOISE_ROWS or len(present) < 2 or min(counts.values()) < NOISE_FOLDS:
        report.notes.append(
            f"label noise not checked: {int(keep.sum())} rows; it needs {MIN_NOISE_ROWS} and "
            f"{NOISE_FOLDS} of each label given"
        )
        return
    index = {label: i for i, label in enumerate(present)}
    targets = np.array([index[label] for label in given])
    # The champion's probabilities over the labels given, renormalised.
    columns = [champion_labels.index(label) for label in present]
    champion_probs = probabilities[keep][:, columns]
    champion_probs = champion_probs / champion_probs.sum(axis=1, keepdims=True)
    folds = StratifiedKFold(n_splits=NOISE_FOLDS, shuffle=True, random_state=seed)
    fold_probs = cross_val_predict(
        LogisticRegression(max_iter=1000, C=1.0),
        embeddings[keep],
        targets,
        cv=folds,
        method="predict_proba",
    )
    by_champion = find_label_issues(targets, champion_probs, filter_by="both")
    by_folds = find_label_issues(targets, fold_probs, filter_by="both")
    # Confidently: each model also gives the label almost no chance. On honest Reddit labels
    # the champion (trained on other text) and the fold model disagree with a fifth of them
    # at once; under 1 % each, one in a hundred (docs/labels.md).
    positions = np.arange(len(targets))
    confident = (champion_probs[positions, targets] < NOISE_MAX_PROBABILITY) & (
        fold_probs[positions, targets] < NOISE_MAX_PROBABILITY
    )
    rejected = np.flatnonzero(by_champion & by_folds & confident)
    report.notes.append(
        f"label noise: confident learning flags {int(by_champion.sum())} rows by the champion, "
        f"{int(by_folds.sum())} by the fold model; both, each giving the label under "
        f"{NOISE_MAX_PROBABILITY:.0%}: {len(rejected)}"
    )
    if not len(rejected):
        return
    rows = feedback.loc[keep].reset_index(drop=True)
    open_ids = ~rows["status"].isin(OPERATOR_DECIDED).to_numpy()
    chosen = rejected[open_ids[rejected]]
    row_reasons = {
        rows.at[int(i), "id"]: (
            f"likely label error: given {present[targets[i]]}, the champion says "
            f"{present[champion_probs[i].argmax()]} ({champion_probs[i].max():.2f}) and a model of the other "
            f"feedback {present[fold_probs[i].argmax()]} ({fold_probs[i].max():.2f}); confident learning"
        )
        for i in chosen
    }
    report.findings.append(_noise_finding(row_reasons, "find another label far more likely"))


def _screen_noise_multilabel(
    feedback: pd.DataFrame,
    champion_labels: tuple[str, ...],
    given: np.ndarray,
    probabilities: np.ndarray,
    embeddings: np.ndarray,
    seed: int,
    report: ScreenReport,
) -> None:
    """Confident learning over label sets: a row is quarantined when a label of its set is one
    both the champion and a model of the other folds (one logistic regression per label) give
    under 1 %, and cleanlab's multi-label filter flags the row by both."""
    from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.multiclass import OneVsRestClassifier

    already = {row for finding in report.findings for row in finding.rows}
    keep = ~feedback["id"].isin(already).to_numpy()
    present = np.flatnonzero(given[keep].sum(axis=0) >= NOISE_FOLDS)
    if keep.sum() < MIN_NOISE_ROWS or len(present) < 2:
        report.notes.append(
            f"label noise not checked: {int(keep.sum())} rows; it needs {MIN_NOISE_ROWS} and two labels "
            f"given {NOISE_FOLDS} times"
        )
        return
    targets = given[keep][:, present]
    usable = targets.any(axis=1)  # a row whose labels are all rare here is left alone
    rows = feedback.loc[keep].reset_index(drop=True)[usable].reset_index(drop=True)
    targets, champion_probs = targets[usable], probabilities[keep][usable][:, present]
    fold_probs = cross_val_predict(
        OneVsRestClassifier(LogisticRegression(max_iter=1000, C=1.0)),
        embeddings[keep][usable],
        targets.astype(int),
        cv=KFold(n_splits=NOISE_FOLDS, shuffle=True, random_state=seed),
        method="predict_proba",
    )
    as_lists = [list(np.flatnonzero(row)) for row in targets]
    by_champion = find_label_issues(as_lists, champion_probs, multi_label=True, filter_by="both")
    by_folds = find_label_issues(as_lists, fold_probs, multi_label=True, filter_by="both")
    doubted = targets & (champion_probs < NOISE_MAX_PROBABILITY) & (fold_probs < NOISE_MAX_PROBABILITY)
    rejected = np.flatnonzero(by_champion & by_folds & doubted.any(axis=1))
    report.notes.append(
        f"label noise (label sets): confident learning flags {int(by_champion.sum())} rows by the champion, "
        f"{int(by_folds.sum())} by the fold model; both, each giving a label of the set under "
        f"{NOISE_MAX_PROBABILITY:.0%}: {len(rejected)}"
    )
    open_ids = ~rows["status"].isin(OPERATOR_DECIDED).to_numpy()
    doubted_names = [", ".join(champion_labels[present[j]] for j in np.flatnonzero(row)) for row in doubted]
    row_reasons = {
        rows.at[int(i), "id"]: (
            f"likely label error: given {rows.at[int(i), 'label']}, both the champion and a model of the "
            f"other feedback give {doubted_names[i]} "
            f"under {NOISE_MAX_PROBABILITY:.0%}; confident learning"
        )
        for i in rejected[open_ids[rejected]]
    }
    if row_reasons:
        report.findings.append(_noise_finding(row_reasons, "find a label of the set far unlikely"))


def _noise_finding(row_reasons: dict[str, str], found: str) -> Finding:
    return Finding(
        "noise",
        "label noise",
        None,
        tuple(row_reasons),
        f"likely label errors: the champion and a model trained on the other feedback both {found} "
        "(confident learning)",
        row_reasons=row_reasons,
    )


def cap_sources(feedback: pd.DataFrame, max_share: float) -> tuple[pd.DataFrame, dict[str, int]]:
    """Keep at most ``max_share`` of the rows from any one source (its newest), never capping
    below an equal share (one source is all of its own feedback). Returns the kept rows and,
    per capped source, how many of its rows were left out."""
    sources = feedback["source"].fillna("unknown")
    counts = sources.value_counts()
    share = max(max_share, 1 / max(len(counts), 1))
    if share >= 1 or feedback.empty:
        return feedback, {}
    # The largest total T at which every source fits its share: sum(min(n, share * T)) >= T.
    low, high = 0.0, float(len(feedback))
    for _ in range(60):
        middle = (low + high) / 2
        if np.minimum(counts.to_numpy(), share * middle).sum() >= middle - 1e-9:
            low = middle
        else:
            high = middle
    allowed = int(np.floor(share * low + 1e-9))
    kept, left_out = [], {}
    for source, count in counts.items():
        rows = feedback[sources == source]
        if count > allowed:
            left_out[str(source)] = int(count - allowed)
            rows = rows.sort_values("feedback_at", kind="stable").iloc[count - allowed :]
        kept.append(rows)
    return pd.concat(kept).sort_values("feedback_at", kind="stable").reset_index(drop=True), left_out
