"""The label screen: feedback is checked before it trains anything.

Three checks, each over every label not yet decided by an operator:

- **Sources.** A source (an API key, an imported file) whose labels agree with the champion
  *less often than chance* (Cohen's kappa below 0, one-sided binomial test against the agreement
  that independent labels with the same marginals would reach) is systematically wrong: a
  vendor with its labels shifted, or an attacker flipping them. All its rows are quarantined.
- **Backdoors.** A word or word pair that is rare in the base data, frequent in feedback and
  almost always carries one label, while the champion reading those texts *without it* mostly
  disagrees with that label, is a planted trigger. Its rows with that label are quarantined
  and the n-gram is raised, so the gate tests the challenger's behaviour on it.
- **Label noise.** Confident learning (``cleanlab``): a row is quarantined when the champion and
  a model trained on the other folds of the feedback (logistic regression on the champion's own
  text representation) both find its label a likely error, each giving it under 1 %.

The first two are tests with a stated error rate: ``label_screen_false_alarm_rate`` is shared
between them, and within each split over what it tests (Bonferroni). The source test is a
one-sided binomial test against chance agreement; the backdoor's three are Fisher's exact tests
(no rate is plugged in), and it needs all three to reject (an intersection-union test, so they
spend the budget once). So the chance that either check quarantines anything is at most that
rate wherever honest labels meet one null of each test: a source agreeing with the champion at
least as often as chance; an n-gram not enriched over the base data, or not tied to its label,
or whose texts without it the champion reads like the other texts of that label. An honest
word that breaks all three (frequent here, rare in the base data, carrying an emotion the
champion cannot see without it) can be raised: that is what review is for. Confident learning
has no such guarantee; its rate on honest labels is measured in ``emotion-ops bench loop``
(docs/labels.md).

Quarantined rows stay in the log with their reason; ``emotion-ops label review`` lists them and
lets an operator release or drop them. Released and dropped rows are never re-screened.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import binom, fisher_exact

from core.labels import ACCEPTED, DROPPED, QUARANTINED, RELEASED

log = logging.getLogger(__name__)

OPERATOR_DECIDED = (RELEASED, DROPPED)
# A source needs this many rows before its agreement is judged (fewer says too little).
MIN_SOURCE_ROWS = 30
# Confident learning needs a few rows per class in every fold.
MIN_NOISE_ROWS = 50
NOISE_FOLDS = 5
# A label both models give less than this probability is confidently rejected.
NOISE_MAX_PROBABILITY = 0.01
_WORD = re.compile(r"[a-z0-9']+")


@dataclass(frozen=True)
class Finding:
    check: str  # source | backdoor | noise
    subject: str  # the source, the n-gram, or "label noise"
    label: str | None
    rows: tuple[str, ...]  # request ids quarantined for it
    reason: str
    p_value: float | None = None
    row_reasons: dict[str, str] | None = None  # a reason of each row's own, where it has one


@dataclass
class ScreenReport:
    screened: int = 0
    findings: list[Finding] = field(default_factory=list)
    decisions: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # id -> (status, reason)
    notes: list[str] = field(default_factory=list)

    @property
    def quarantined(self) -> set[str]:
        return {row for row, (status, _) in self.decisions.items() if status == QUARANTINED}

    @property
    def raised_ngrams(self) -> dict[str, str]:
        """Each n-gram the backdoor check raised, with the label it carried."""
        return {f.subject: f.label for f in self.findings if f.check == "backdoor" and f.label is not None}

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


def ngrams(text: str) -> set[str]:
    """The text's distinct words and word pairs, lower-cased."""
    words = _WORD.findall(text.lower())
    return set(words) | {f"{a} {b}" for a, b in itertools.pairwise(words)}


def without_ngram(text: str, ngram: str) -> str:
    """The text with every whole-word occurrence of ``ngram`` taken out."""
    pattern = r"(?<![a-z0-9'])" + r"\W+".join(map(re.escape, ngram.split())) + r"(?![a-z0-9'])"
    return re.sub(r"\s{2,}", " ", re.sub(pattern, " ", text, flags=re.IGNORECASE)).strip()


def screen_feedback(
    feedback: pd.DataFrame,
    base_texts: pd.Series,
    labels: tuple[str, ...],
    champion,
    *,
    false_alarm_rate: float = 0.01,
    min_rows: int = 10,
    purity: float = 0.9,
    multilabel: bool = False,
    seed: int = 0,
) -> ScreenReport:
    """Screen ``feedback`` (id, text, label, source, status) before a retrain.

    ``base_texts`` is the curated training data the n-gram rates are compared with; ``champion``
    is the served model's predictor. Rows an operator released or dropped keep their status and
    still count as evidence (a released trigger is still raised, so the gate tests it).
    """
    report = ScreenReport()
    # A label the model does not know is dropped by the retrain anyway (and counted there).
    known = feedback["label"].map(lambda value: set(value.split(",")) <= set(labels))
    feedback = feedback[known].reset_index(drop=True)
    open_rows = ~feedback["status"].isin(OPERATOR_DECIDED)
    report.screened = int(open_rows.sum())
    if feedback.empty:
        return report
    texts = feedback["text"].tolist()
    probabilities, embeddings = champion.proba_and_embed(texts)
    predicted = np.array(champion.labels)[probabilities.argmax(axis=1)]
    budget = false_alarm_rate / 2  # sources and backdoors share it

    if multilabel:
        report.notes.append("multi-label model: the source and noise checks are single-label only")
    else:
        _screen_sources(feedback, predicted, budget, report)
    _screen_backdoors(feedback, base_texts, champion, predicted, budget, min_rows, purity, report)
    if not multilabel:
        _screen_noise(feedback, labels, champion.labels, probabilities, embeddings, seed, report)

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


def _screen_sources(
    feedback: pd.DataFrame, predicted: np.ndarray, budget: float, report: ScreenReport
) -> None:
    sources = feedback["source"].fillna("unknown")
    judged = [source for source, count in sources.value_counts().items() if count >= MIN_SOURCE_ROWS]
    for source in judged:
        mask = (sources == source).to_numpy()
        given, champion = feedback["label"].to_numpy()[mask], predicted[mask]
        rows = len(given)
        agreed = int((given == champion).sum())
        given_share = pd.Series(given).value_counts(normalize=True)
        champion_share = pd.Series(champion).value_counts(normalize=True)
        chance = float(sum(given_share.get(label, 0.0) * share for label, share in champion_share.items()))
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


def _screen_backdoors(
    feedback: pd.DataFrame,
    base_texts: pd.Series,
    champion,
    predicted: np.ndarray,
    budget: float,
    min_rows: int,
    purity: float,
    report: ScreenReport,
) -> None:
    grams = [ngrams(text) for text in feedback["text"]]
    counts = Counter(gram for row in grams for gram in row)
    candidates = [gram for gram, count in counts.items() if count >= min_rows]
    if not candidates:
        return
    wanted = set(candidates)
    base_counts = Counter(gram for text in base_texts for gram in ngrams(text) if gram in wanted)
    base_rows, rows = len(base_texts), len(feedback)
    given = feedback["label"].to_numpy()
    open_rows = ~feedback["status"].isin(OPERATOR_DECIDED).to_numpy()
    suspects = []
    for gram in candidates:
        has = np.fromiter((gram in row for row in grams), bool, rows)
        carried = pd.Series(given[has]).value_counts()
        label, with_label = carried.index[0], int(carried.iloc[0])
        if with_label / has.sum() < purity:
            continue
        carrying = int(has.sum())
        # 1: rare in the base data, frequent in feedback (Fisher's exact test, one-sided).
        in_base = base_counts[gram]
        base_rate = in_base / max(base_rows, 1)
        p_enriched = _fisher(carrying, rows - carrying, in_base, base_rows - in_base, "greater")
        # 2: far more often with this label than the rest of the feedback is.
        others = given[~has]
        others_with = int((others == label).sum())
        label_rate = others_with / max(len(others), 1)
        p_label = _fisher(
            with_label, carrying - with_label, others_with, len(others) - others_with, "greater"
        )
        suspects.append((gram, label, has, with_label, p_enriched, p_label, label_rate, base_rate))
    tested = len(candidates)
    flagged_rows: set[int] = set()
    for gram, label, has, with_label, p_enriched, p_label, label_rate, base_rate in sorted(
        suspects, key=lambda s: max(s[4], s[5])
    ):
        if max(p_enriched, p_label) > budget / tested:
            continue
        carriers = np.flatnonzero(has & (given == label))
        if set(carriers) <= flagged_rows:
            continue  # a longer n-gram of a trigger already raised
        # The yardstick is the champion on the other feedback rows with this label (the same
        # kind of text): with too few of them a trigger cannot be told from a topic.
        reference = (given == label) & ~has
        if reference.sum() < min_rows:
            report.notes.append(
                f"'{gram}' carries {label} in {with_label} rows but too few other rows carry {label} "
                "to tell a trigger from a topic: not raised"
            )
            continue
        # 3: the champion, reading these texts without the n-gram, mostly disagrees with the
        # label (honest words that carry an emotion leave texts that still carry it).
        stripped = [without_ngram(feedback.at[int(i), "text"], gram) or "." for i in carriers]
        stripped_predictions = np.array(champion.labels)[champion.predict_proba(stripped).argmax(axis=1)]
        agreed = int(_agrees(stripped_predictions, label).sum())
        reference_agreed = int(_agrees(predicted[reference], label).sum())
        agreement_rate = reference_agreed / int(reference.sum())
        p_content = _fisher(
            agreed, len(carriers) - agreed, reference_agreed, int(reference.sum()) - reference_agreed, "less"
        )
        p_value = max(p_enriched, p_label, p_content)
        if p_value > budget / tested:
            continue
        flagged_rows.update(int(i) for i in carriers)
        ids = tuple(feedback.loc[carriers[open_rows[carriers]], "id"])
        report.findings.append(
            Finding(
                "backdoor",
                gram,
                label,
                ids,
                f"possible trigger '{gram}': in {int(has.sum())} of {rows} feedback rows vs "
                f"{100 * base_rate:.2f} % of the base data, labelled {label} in {with_label} of them "
                f"(elsewhere {100 * label_rate:.1f} %), and without it the champion agrees with "
                f"{label} on {agreed} of {len(carriers)} (elsewhere {100 * agreement_rate:.0f} %); "
                f"p={p_value:.1e}",
                p_value,
            )
        )


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
    report.findings.append(
        Finding(
            "noise",
            "label noise",
            None,
            tuple(row_reasons),
            "likely label errors: the champion and a model trained on the other feedback both "
            "find another label far more likely (confident learning)",
            row_reasons=row_reasons,
        )
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
            rows = rows.sort_values("feedback_at").iloc[count - allowed :]
        kept.append(rows)
    return pd.concat(kept).sort_values("feedback_at").reset_index(drop=True), left_out
