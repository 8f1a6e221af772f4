"""Promotion behind a quality gate, rollback, and the registry listing.

The gate is a pure function of scores and policy; ``promote`` only gathers the scores and
records the decision on the challenger's model version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from mlflow import MlflowClient

from core.artifact import ModelBundle
from core.registry import (
    AWAITING_REVIEW,
    CHALLENGER,
    CHAMPION,
    PREVIOUS_CHAMPION_TAG,
    RegistryError,
    connect,
    download_version,
    rollback_champion,
    version_by_alias,
    version_rows,
)
from core.settings import TrainingSettings
from core.shadow import SHADOW_REQUIREMENT_TAG
from core.text import for_terminal
from training.data import DataError, EmotionDataset, load_emotion_dataset
from training.evaluate import Evaluation, score_on

# A distilled student's gate: the extra data folders (JSON list) and its tolerance, so a later
# 'emotion-ops promote' judges it as 'emotion-ops distill' did.
DISTILL_GATE_DATA_TAG = "distill.gate_data"
DISTILL_TOLERANCE_TAG = "distill.tolerance"
# The n-grams the label screen raised before this version was trained (JSON: n-gram -> label).
TRIGGER_PROBES_TAG = "screen.raised_ngrams"
# Those of them whose rows the screen did not quarantine (JSON list): judged more leniently.
RAISED_ONLY_TAG = "screen.raised_only"


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reason: str


def quality_gate(
    challenger_macro_f1: float, champion_macro_f1: float | None, tolerance: float, floor: float
) -> GateDecision:
    """Pass when the challenger clears the absolute floor and is no more than ``tolerance``
    below the champion (any challenger that clears the floor passes when there is no champion)."""
    if challenger_macro_f1 < floor:
        return GateDecision(False, f"macro-F1 {challenger_macro_f1:.4f} is below the floor {floor:.4f}")
    if champion_macro_f1 is None:
        return GateDecision(
            True, f"first champion: macro-F1 {challenger_macro_f1:.4f} clears the floor {floor:.4f}"
        )
    margin = challenger_macro_f1 - champion_macro_f1
    if margin < -tolerance - 1e-9:  # as in accuracy_gate: exactly the tolerance passes
        return GateDecision(
            False,
            f"macro-F1 {challenger_macro_f1:.4f} is {-margin:.4f} below the champion's "
            f"{champion_macro_f1:.4f} (tolerance {tolerance:.4f})",
        )
    return GateDecision(
        True,
        f"macro-F1 {challenger_macro_f1:.4f} vs champion {champion_macro_f1:.4f} "
        f"({margin:+.4f}, tolerance {tolerance:.4f}; floor {floor:.4f})",
    )


def accuracy_gate(challenger_accuracy: float, champion_accuracy: float, tolerance: float) -> GateDecision:
    """Pass when the challenger's accuracy is no more than ``tolerance`` below the champion's."""
    margin = challenger_accuracy - champion_accuracy
    passed = margin >= -tolerance - 1e-9  # 0.915 - 0.92 is -0.00500000001 in floating point
    return GateDecision(
        passed,
        f"accuracy {challenger_accuracy:.4f} vs champion {champion_accuracy:.4f} "
        f"({margin:+.4f}, tolerance {tolerance:.4f})",
    )


@dataclass(frozen=True)
class PromotionResult:
    decision: GateDecision
    challenger_version: str
    previous_champion_version: str | None
    challenger: Evaluation
    champion: Evaluation | None
    promoted: bool = False  # the champion moved to the challenger
    awaiting_review: bool = False  # passed; waits for a reviewer (and the shadow, when asked)


def evaluate_bundle(bundle: ModelBundle, dataset: EmotionDataset, split: str = "test") -> Evaluation:
    """Score a registered model on a split, matching labels by name (not by id)."""
    return score_on(bundle.predictor(), dataset, split)[0]


def promote(
    settings: TrainingSettings,
    data_source: str | None = None,
    tolerance: float | None = None,
    floor: float | None = None,
    dataset: EmotionDataset | None = None,
    gate_sets: dict[str, EmotionDataset] | None = None,
    move_champion: bool = True,
    trigger_probes: dict[str, str] | None = None,
    accuracy_tolerance: float | None = None,
    raised_only: list[str] | None = None,
) -> PromotionResult:
    """Evaluate ``challenger`` and ``champion`` and move ``champion`` on a pass.

    ``gate_sets`` names several evaluation sets, each judged on its own: the challenger passes
    only when it passes on every one (a set that feedback wrote cannot outvote the curated test
    split). The floor applies to the first set; the others are judged against the champion.
    Default: the test split of ``dataset`` or of the data source. With
    ``move_champion=False`` the decision is recorded but ``champion`` stays (the challenger
    waits for a reviewer). ``trigger_probes`` (n-gram -> the label it carried, from the label
    screen) adds a behaviour test: appended to the first set's texts, no n-gram may change more
    than ``gate_trigger_tolerance`` of the challenger's predictions beyond the champion's
    (``gate_raised_tolerance`` for those in ``raised_only``: raised, their rows not quarantined,
    so honest cues among them are learnt and move predictions a little). A distilled student (tagged
    by ``emotion-ops distill``) is judged on the sets and tolerance that distillation used, unless
    ``gate_sets`` or ``tolerance`` says otherwise. ``accuracy_tolerance``
    also judges a single-label challenger's accuracy on every set against the champion's (a
    distilled student must keep both). The decision, scores, time and reason are written as
    tags on the challenger's version.
    """
    asked_tolerance = tolerance
    tolerance = settings.promotion_tolerance if tolerance is None else tolerance
    client = connect(settings)
    name = settings.model_name
    challenger = version_by_alias(client, name, CHALLENGER)
    if challenger is None:
        raise RegistryError(f"'{name}' has no '{CHALLENGER}' version; train one with 'emotion-ops train'")
    champion = version_by_alias(client, name, CHAMPION)
    if champion is not None and str(champion.version) == str(challenger.version):
        raise RegistryError(f"version {challenger.version} is already the champion; nothing to promote")

    challenger_bundle = download_version(client, settings, challenger)
    champion_bundle = download_version(client, settings, champion) if champion else None
    multilabel = challenger_bundle.task == "multilabel"
    if floor is None:
        floor = settings.promotion_floor_multilabel if multilabel else settings.promotion_floor
    tags = challenger.tags or {}
    if gate_sets is None:
        # The data goes through the label set the challenger was trained with, unless told otherwise.
        label_set = settings.label_set or challenger_bundle.label_set
        dataset = dataset or load_emotion_dataset(
            data_source or settings.resolve_data_source(),
            splits=("test",),
            label_set=label_set,
            multilabel=multilabel,
        )
        gate_sets = {"test split": dataset}
        if DISTILL_TOLERANCE_TAG in tags:
            # A distilled student waiting as challenger: the gate 'emotion-ops distill' ran.
            gate_data = _tagged_gate_data(tags.get(DISTILL_GATE_DATA_TAG))
            gate_sets = distillation_gate_sets(dataset, gate_data, label_set, multilabel)
            tolerance = float(tags[DISTILL_TOLERANCE_TAG]) if asked_tolerance is None else tolerance
            accuracy_tolerance = tolerance if accuracy_tolerance is None else accuracy_tolerance
    for gate_set in gate_sets.values():
        if set(gate_set.labels) - set(challenger_bundle.labels):
            raise DataError(
                f"the gate's data has labels {list(gate_set.labels)}, the challenger predicts "
                f"{list(challenger_bundle.labels)}; pick data (or EMOTION_LABEL_SET) with the model's labels"
            )
    decisions, evaluations = {}, {}
    for index, (set_name, gate_set) in enumerate(gate_sets.items()):
        challenger_eval = evaluate_bundle(challenger_bundle, gate_set)
        champion_eval = evaluate_bundle(champion_bundle, gate_set) if champion_bundle else None
        evaluations[set_name] = (challenger_eval, champion_eval)
        # The absolute floor holds on the first (curated) set; a small or skewed set such as
        # held-out feedback lacks classes (macro-F1 counts them as 0), so there the challenger
        # is judged against the champion only.
        decisions[set_name] = quality_gate(
            challenger_eval.macro_f1,
            champion_eval.macro_f1 if champion_eval else None,
            tolerance,
            floor if index == 0 else 0.0,
        )
        if accuracy_tolerance is not None and not multilabel and champion_eval is not None:
            decisions[f"{set_name} accuracy"] = accuracy_gate(
                challenger_eval.accuracy, champion_eval.accuracy, accuracy_tolerance
            )
    if trigger_probes is None:
        # A retrain refused or left waiting records what the screen raised on the challenger,
        # so a later 'emotion-ops promote' runs the same behaviour test.
        trigger_probes = json.loads(tags.get(TRIGGER_PROBES_TAG) or "{}")
        raised_only = json.loads(tags.get(RAISED_ONLY_TAG) or "[]")
    if trigger_probes:
        decisions["behaviour"] = trigger_test(
            challenger_bundle,
            champion_bundle,
            next(iter(gate_sets.values())),
            trigger_probes,
            settings.gate_trigger_tolerance,
            raised_only=set(raised_only or ()),
            raised_tolerance=settings.gate_raised_tolerance,
        )
    decision = _combined(decisions)
    first_challenger, first_champion = next(iter(evaluations.values()))

    tags = {
        "promotion.decision": "passed" if decision.passed else "refused",
        "promotion.reason": decision.reason,
        "promotion.time": datetime.now(UTC).isoformat(timespec="seconds"),
        "promotion.test_accuracy": f"{first_challenger.accuracy:.4f}",
        "promotion.test_macro_f1": f"{first_challenger.macro_f1:.4f}",
        "promotion.champion_version": str(champion.version) if champion else "",
        "promotion.champion_test_macro_f1": f"{first_champion.macro_f1:.4f}" if first_champion else "",
        "promotion.tolerance": str(tolerance),
        "promotion.floor": str(floor),
        "promotion.gate_sets": ", ".join(gate_sets),
        "promotion.accuracy_tolerance": "" if accuracy_tolerance is None else str(accuracy_tolerance),
        TRIGGER_PROBES_TAG: json.dumps(trigger_probes or {}),
        RAISED_ONLY_TAG: json.dumps(sorted(raised_only or ())),
    }
    # With a shadow requirement a pass over a champion waits: the evidence comes from live
    # traffic the challenger has not seen yet (core.shadow).
    shadow_wait = champion is not None and settings.shadow_requirement().asked
    moved = decision.passed and move_champion and not shadow_wait
    if decision.passed and not moved:
        tags["promotion.decision"] = AWAITING_REVIEW
        if shadow_wait:
            # Recorded, so whoever approves later is held to it, whatever their settings say.
            tags[SHADOW_REQUIREMENT_TAG] = settings.shadow_requirement().to_tag()
        if shadow_wait and move_champion:
            tags["promotion.reason"] = f"{decision.reason}; waits for the shadow's evidence on live traffic"
    if moved:
        tags[PREVIOUS_CHAMPION_TAG] = str(champion.version) if champion else ""
    _set_tags(client, name, challenger.version, tags)
    if moved:
        client.set_registered_model_alias(name, CHAMPION, challenger.version)
    return PromotionResult(
        decision=decision,
        challenger_version=str(challenger.version),
        previous_champion_version=str(champion.version) if champion else None,
        challenger=first_challenger,
        champion=first_champion,
        promoted=moved,
        awaiting_review=decision.passed and not moved,
    )


# Trusted texts each raised candidate is appended to (enough for a 1 pt resolution, quick to run).
TRIGGER_PROBE_TEXTS = 1000


def trigger_shift(predictor, texts: list[str], plain, ngram: str) -> float:
    """The share of ``texts`` whose predicted labels (``plain``, without it) change when
    `` ngram`` is appended."""
    triggered = predictor.decisions(predictor.predict_proba([f"{text} {ngram}" for text in texts]))
    return float((plain != triggered).any(axis=1).mean())


def trigger_test(
    challenger: ModelBundle,
    champion: ModelBundle | None,
    trusted: EmotionDataset,
    probes: dict[str, str],
    tolerance: float,
    raised_only: set[str] | None = None,
    raised_tolerance: float | None = None,
) -> GateDecision:
    """Refuse a challenger that an n-gram the label screen raised steers: appended to trusted
    test texts (the curated split, which feedback cannot write to), it must not change more
    than ``tolerance`` of the challenger's predictions beyond what it changes of the champion's
    (an honest word raised by mistake moves both alike)."""
    test = trusted.splits["test"]
    texts = test["text"].sample(n=min(TRIGGER_PROBE_TEXTS, len(test)), random_state=0).tolist()
    # Each model is loaded, and reads the plain texts, once for all the n-grams.
    models = [challenger.predictor()] + ([champion.predictor()] if champion else [])
    plain = [model.decisions(model.predict_proba(texts)) for model in models]
    failed, parts = [], []
    for ngram, label in probes.items():
        shifts = [
            trigger_shift(model, texts, answers, ngram) for model, answers in zip(models, plain, strict=True)
        ]
        moved, baseline = shifts[0], (shifts[1] if champion else 0.0)
        lenient = ngram in (raised_only or ()) and raised_tolerance is not None
        allowed = raised_tolerance if lenient and raised_tolerance is not None else tolerance
        parts.append(
            f"'{for_terminal(ngram)}' ({label}{', rows kept' if lenient else ''}) changes "
            f"{100 * moved:.1f} %, champion {100 * baseline:.1f} %"
        )
        if moved > baseline + allowed:
            failed.append(ngram)
    summary = (
        "; ".join(parts)
        + f" of {len(texts)} trusted test predictions (tolerance {100 * tolerance:.1f} pt over the champion"
        + (
            f"; {100 * raised_tolerance:.1f} pt where the rows were kept)"
            if raised_only and raised_tolerance is not None
            else ")"
        )
    )
    if failed:
        return GateDecision(False, f"a raised candidate steers the challenger: {summary}")
    return GateDecision(True, summary)


def _combined(decisions: dict[str, GateDecision]) -> GateDecision:
    if len(decisions) == 1:
        return next(iter(decisions.values()))
    passed = all(d.passed for d in decisions.values())
    parts = [f"{name}: {'pass' if d.passed else 'FAIL'}, {d.reason}" for name, d in decisions.items()]
    return GateDecision(passed, "; ".join(parts))


def rollback(settings: TrainingSettings) -> tuple[str, str]:
    """Move ``champion`` back to the version it replaced; returns (from, to)."""
    return rollback_champion(connect(settings), settings.model_name)


def list_versions(settings: TrainingSettings) -> list[dict[str, str]]:
    """One row per registered version, newest first, with aliases and test metrics."""
    rows = []
    for version in version_rows(connect(settings), settings.model_name):
        tags: dict[str, str] = version["tags"]  # type: ignore[assignment]
        rows.append(
            {
                "version": str(version["version"]),
                "aliases": ",".join(version["aliases"]),  # type: ignore[arg-type]
                "test_accuracy": tags.get("test_accuracy", ""),
                "test_macro_f1": tags.get("test_macro_f1", ""),
                "base_model": tags.get("base_model", ""),
                "promotion": tags.get("promotion.decision", ""),
                "created": str(version["created"])[:16].replace("T", " "),
            }
        )
    return rows


def _set_tags(client: MlflowClient, name: str, version: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


def distillation_gate_sets(
    dataset: EmotionDataset, gate_data: tuple[str, ...], label_set: str | None, multilabel: bool
) -> dict[str, EmotionDataset]:
    """A distilled student's gate sets: the test split, each source within it when it joins
    several, and each ``gate_data`` folder's test split, every one judged on its own."""

    def test_only(frame, source: str) -> EmotionDataset:
        return EmotionDataset(
            splits={"test": frame.reset_index(drop=True)},
            labels=dataset.labels,
            source=source,
            multilabel=multilabel,
        )

    test = dataset.splits["test"]
    sets = {"test split": test_only(test, dataset.source)}
    if "source" in test and test["source"].nunique() > 1:
        for source, rows in test.groupby("source"):
            sets[f"test split: {source}"] = test_only(rows, source)
    for path in gate_data:
        extra = load_emotion_dataset(path, splits=("test",), label_set=label_set, multilabel=multilabel)
        if set(extra.labels) - set(dataset.labels):
            raise DataError(
                f"gate data {path} has labels {list(extra.labels)} the champion does not predict "
                f"({list(dataset.labels)}); pick data (or EMOTION_LABEL_SET) with the model's labels"
            )
        sets[f"{extra.source} test"] = EmotionDataset(
            splits={"test": extra.splits["test"]},
            labels=extra.labels,
            source=extra.source,
            multilabel=multilabel,
        )
    return sets


def _tagged_gate_data(value: str | None) -> tuple[str, ...]:
    try:
        parsed = json.loads(value or "[]")
    except json.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, list) or not all(isinstance(item, str) for item in parsed):
        raise RegistryError(
            f"the challenger's tag {DISTILL_GATE_DATA_TAG} is not a JSON list of data folders: {value!r}"
        )
    return tuple(parsed)
