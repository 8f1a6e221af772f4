"""``emotion-ops bench screen``: the label screen alone against each attack class, in minutes.

The same comments, labels and poison as ``bench loop`` (its ``poison``), but no service and no
retrain: the labels go through a real (throwaway) store as the retrain reads them, then straight
to the screen the retrain runs, with the champion, the curated data and the label history it
would have. Per attack: the poisoned rows it quarantined (or that an operator's drop held), the
honest rows it quarantined, what it raised for the gate. Whether a trigger that got through
steers a retrained model is what ``bench loop`` measures.
Results go to ``var/bench/<time>/screen.json`` and ``screen.md``.

``honest_runs`` measures the other side: how often the screen's budgeted checks quarantine
anything in honest-only feedback, over many resampled runs with the champion's scores stored.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from bench.data import default_goemotions
from bench.loop import Attack, poison
from bench.processes import machine_facts
from core.labels import DROPPED
from core.registry import connect, load_bundle
from core.settings import TrainingSettings

ALL_ATTACKS = ("none", "trigger", "symbol", "family", "lowpurity", "camouflage", "multilabel", "relabel")


def run(
    settings: TrainingSettings,
    attacks: tuple[str, ...] = ALL_ATTACKS,
    goemotions: str | None = None,
    comments: int = 2000,
    share: float = 0.25,
    seed: int = 0,
    output_root: Path | None = None,
    progress=print,
) -> Path:
    from training.data import load_emotion_dataset
    from training.screen import screen_feedback

    parsed = [Attack.parse(spec, share) for spec in attacks]
    started_at = datetime.now(UTC)
    pool = goemotions_train(goemotions)
    if comments > len(pool):
        raise ValueError(f"--comments {comments}: the GoEmotions train split has {len(pool)} six-label rows")
    replay = pool.sample(n=comments, random_state=seed).reset_index(drop=True)
    bundle = load_bundle(connect(settings), settings)
    champion = bundle.predictor()
    base = load_emotion_dataset(settings.resolve_data_source(), splits=("train", "validation"))
    results = []
    for attack in parsed:
        clock = time.perf_counter()
        sent = poison(replay, np.ones(comments, bool), attack, np.random.default_rng(seed))
        frame, history = _through_a_store(sent, attack, bundle.name, bundle.version)
        report = screen_feedback(
            frame,
            base.splits["train"],
            base.labels,
            champion,
            curated=base.splits["validation"],
            history=history,
            false_alarm_rate=settings.label_screen_false_alarm_rate,
            min_rows=settings.label_screen_min_rows,
            # A label set is what a multi-label key sends: screened as the retrain of such a
            # champion would screen it (each label on its own).
            multilabel=bundle.task == "multilabel" or attack.kind == "multilabel",
            seed=seed,
        )
        # The store gives the rows back in label order: the attack's flags follow the ids.
        attacked = frame["id"].map(dict(zip(_ids(len(sent)), sent["attacked"], strict=True))).to_numpy(bool)
        quarantined = frame["id"].isin(report.quarantined).to_numpy()
        held = (frame["status"] == DROPPED).to_numpy()
        results.append(
            {
                "attack": attack.kind,
                "description": attack.describe(),
                "attack_rows": int(attacked.sum()),
                "attack_stopped": int(((quarantined | held) & attacked).sum()),
                "honest_rows": int((~attacked).sum()),
                "honest_quarantined": int((quarantined & ~attacked).sum()),
                "quarantined_by_check": report.summary()["quarantined_by_check"],
                "raised": report.raised_ngrams,
                "findings": [f.reason for f in report.findings if f.check == "backdoor"][:3],
                "seconds": round(time.perf_counter() - clock, 1),
            }
        )
        last = results[-1]
        progress(
            f"screen: {attack.kind}: {last['attack_stopped']} of {last['attack_rows']} poisoned "
            "rows stopped, "
            f"{last['honest_quarantined']} of {last['honest_rows']} honest quarantined"
        )
    output = (output_root or settings.var_dir / "bench") / started_at.strftime("%Y%m%dT%H%M%SZ")
    output.mkdir(parents=True, exist_ok=True)
    summary = {
        "measured_at": started_at.isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "champion": bundle.version,
        "comments": comments,
        "share": share,
        "results": results,
    }
    (output / "screen.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    (output / "screen.md").write_text(to_markdown(summary))
    return output


def goemotions_train(goemotions: str | None) -> pd.DataFrame:
    """GoEmotions train comments with six-label names, from ``goemotions`` or the default folder."""
    from training.data import load_emotion_dataset

    folder = goemotions or default_goemotions()
    if folder is None or not (Path(folder) / "labels.txt").is_file():
        raise ValueError("no GoEmotions folder found: pass --goemotions DIR (labels.txt, train.tsv, dev.tsv)")
    return load_emotion_dataset(folder, splits=("train",), label_set="six").splits["train"]


def _ids(count: int) -> list[str]:
    return [f"row-{i}" for i in range(count)]


def _through_a_store(sent: pd.DataFrame, attack: Attack, model_name: str, version: str):
    """The labels as the retrain reads them: logged, labelled by one key, (relabel) dropped by an
    operator and labelled again, in a throwaway SQLite store; its feedback rows and label history."""
    import tempfile

    from core.store import Store
    from core.store.rows import prediction_row

    ids = _ids(len(sent))
    with tempfile.TemporaryDirectory(prefix="bench-screen-") as folder:
        store = Store.open(f"sqlite:///{folder}/predictions.db")
        try:
            log = store.predictions
            start = datetime.now(UTC)
            log.insert_many(
                [
                    prediction_row(
                        request_id=request_id,
                        created_at=start,
                        model_name=model_name,
                        model_version=version,
                        text=text,
                        emotion="",
                        confidence=0.0,
                        probabilities={},
                        latency_ms=0.0,
                        truncated=False,
                        tokens=0,
                        uncertain=False,
                    )
                    for request_id, text in zip(ids, sent["sent"], strict=True)
                ]
            )
            labels = list(zip(ids, sent["given"], strict=True))
            log.record_feedback_batch(labels, SOURCE)
            if attack.kind == "relabel":
                again = [label for label, hit in zip(labels, sent["attacked"], strict=True) if hit]
                reason = "dropped by an operator (bench screen --attack relabel)"
                log.set_feedback_status({request_id: (DROPPED, reason) for request_id, _ in again})
                log.record_feedback_batch(again, SOURCE)  # the key labels them again
            return log.feedback_rows(model_name), log.label_history_rows(model_name)
        finally:
            store.engine.dispose()


SOURCE = "key:bench"


def to_markdown(summary: dict) -> str:
    machine = summary["machine"]
    lines = [
        f"Measured {summary['measured_at']} on {machine['cpus']} CPUs ({machine['processor']}): the label "
        f"screen of champion v{summary['champion']} on {summary['comments']} GoEmotions train comments, one "
        f"key, {100 * summary['share']:.0f} % poisoned:",
        "",
        "| attack | poisoned rows stopped | honest rows quarantined | raised for the gate | seconds |",
        "| --- | ---: | ---: | --- | ---: |",
    ]
    for r in summary["results"]:
        raised = ", ".join(f"'{probe}' ({label})" for probe, label in list(r["raised"].items())[:4]) or "none"
        more = f" +{len(r['raised']) - 4}" if len(r["raised"]) > 4 else ""
        honest = 100 * r["honest_quarantined"] / max(r["honest_rows"], 1)
        lines.append(
            f"| {r['attack']} | {r['attack_stopped']} of {r['attack_rows']} "
            f"| {r['honest_quarantined']} of {r['honest_rows']} ({honest:.2f} %) | {raised}{more} "
            f"| {r['seconds']} |"
        )
    return "\n".join(lines) + "\n"


class StoredScores:
    """The champion, remembering what it said of each text: the honest runs resample rows it has
    already read, so a thousand screens cost one pass over the pool (and one over the stripped
    texts of each suspect, the first time it is a suspect)."""

    def __init__(self, predictor) -> None:
        self.predictor = predictor
        self.labels = predictor.labels
        self.tokenizer = getattr(predictor, "tokenizer", None)
        self._probabilities: dict[str, np.ndarray] = {}
        self._embeddings: dict[str, np.ndarray] = {}

    def decisions(self, probabilities: np.ndarray) -> np.ndarray:
        return self.predictor.decisions(probabilities)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        missing = [text for text in dict.fromkeys(texts) if text not in self._probabilities]
        if missing:
            self._probabilities.update(zip(missing, self.predictor.predict_proba(missing), strict=True))
        return np.stack([self._probabilities[text] for text in texts])

    def proba_and_embed(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        missing = [text for text in dict.fromkeys(texts) if text not in self._embeddings]
        if missing:
            probabilities, embeddings = self.predictor.proba_and_embed(missing)
            self._probabilities.update(zip(missing, probabilities, strict=True))
            self._embeddings.update(zip(missing, embeddings, strict=True))
        return self.predict_proba(texts), np.stack([self._embeddings[text] for text in texts])


def remembering_reader(tokenizer):
    """A ``TextReader`` that reads each text once (the base data is read again in every run)."""
    from training.screen import TextReader

    class RememberingReader(TextReader):
        def __init__(self) -> None:
            super().__init__(tokenizer)
            self._read: dict[str, dict] = {}

        def read(self, texts: list[str]) -> list[dict]:
            missing = [text for text in dict.fromkeys(texts) if text not in self._read]
            if missing:
                self._read.update(zip(missing, super().read(missing), strict=True))
            return [self._read[text] for text in texts]

    return RememberingReader()


HONEST_POOLS = ("goemotions", "dair")


def honest_runs(
    settings: TrainingSettings,
    runs: int = 1000,
    pool_name: str = "goemotions",
    comments: int = 2000,
    goemotions: str | None = None,
    seed: int = 0,
    output_root: Path | None = None,
    progress=print,
) -> Path:
    """The screen's false-alarm rate on honest-only feedback: ``runs`` screens of ``comments``
    honest rows drawn from a pool (GoEmotions train, or the dair-ai test split: the champion's
    own domain) with the champion's scores stored. A run is a false alarm when a budgeted check
    (sources, backdoors) quarantines anything; the noise check is not under the budget and is
    left out. Results go to ``var/bench/<time>/screen-honest.json`` and ``.md``."""
    from scipy.stats import binomtest

    from training.data import load_emotion_dataset
    from training.screen import screen_feedback

    if pool_name not in HONEST_POOLS:
        raise ValueError(f"unknown pool '{pool_name}': choose one of {', '.join(HONEST_POOLS)}")
    if runs < 1:
        raise ValueError(f"--runs {runs}: at least one run")
    started_at = datetime.now(UTC)
    bundle = load_bundle(connect(settings), settings)
    if bundle.task == "multilabel":
        raise ValueError("the honest runs screen single-label feedback: the champion is multi-label")
    base = load_emotion_dataset(settings.resolve_data_source(), splits=("train", "validation", "test"))
    # dair: the champion's domain, rows it was not trained on.
    pool = goemotions_train(goemotions) if pool_name == "goemotions" else base.splits["test"]
    # One row per text, as the store gives the retrain its feedback.
    pool = pool[pool["label"].isin(base.labels)].drop_duplicates(subset="text").reset_index(drop=True)
    if comments > len(pool) // 2:
        # Runs of most of the pool would screen nearly the same rows each time.
        raise ValueError(
            f"--comments {comments}: the {pool_name} pool has {len(pool)} rows; "
            f"take at most half of them ({len(pool) // 2}) so the runs differ"
        )
    champion = StoredScores(bundle.predictor())
    reader = remembering_reader(champion.tokenizer)
    progress(f"screen honest runs: the champion reads the {len(pool)} rows of the {pool_name} pool once")
    champion.proba_and_embed(pool["text"].tolist())
    rng = np.random.default_rng(seed)
    alarms: list[dict] = []
    subjects: Counter[str] = Counter()
    quarantined_shares = []
    clock = time.perf_counter()
    for run_number in range(runs):
        chosen = np.sort(rng.choice(len(pool), size=comments, replace=False))
        frame = pd.DataFrame(
            {
                "id": [f"row-{i}" for i in chosen],
                "text": pool["text"].to_numpy()[chosen],
                "label": pool["label"].to_numpy()[chosen],
                "source": "key:honest",
                "status": None,
                "feedback_at": pd.date_range("2026-12-01", periods=comments, freq="s", tz="UTC"),
            }
        )
        report = screen_feedback(
            frame,
            base.splits["train"],
            base.labels,
            champion,
            curated=base.splits["validation"],
            false_alarm_rate=settings.label_screen_false_alarm_rate,
            min_rows=settings.label_screen_min_rows,
            seed=seed + run_number,
            reader=reader,
            label_noise=False,
        )
        budgeted = [f for f in report.findings if f.check in ("source", "backdoor")]
        quarantined_shares.append(len(report.quarantined) / comments)
        if budgeted:
            alarms.append({"run": run_number, "findings": [f"{f.check}: {f.subject}" for f in budgeted]})
            subjects.update({f"{f.check}: {f.subject}" for f in budgeted})
        if (run_number + 1) % max(1, runs // 10) == 0:
            progress(f"screen honest runs: {run_number + 1} of {runs}, {len(alarms)} with a finding")
    seconds = time.perf_counter() - clock
    interval = binomtest(len(alarms), runs).proportion_ci(confidence_level=0.95, method="exact")
    summary = {
        "measured_at": started_at.isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "champion": bundle.version,
        "pool": pool_name,
        "pool_rows": len(pool),
        "comments": comments,
        "runs": runs,
        "stated_rate": settings.label_screen_false_alarm_rate,
        "runs_with_a_finding": len(alarms),
        "rate": len(alarms) / runs,
        "rate_ci95": [interval.low, interval.high],
        "mean_rows_quarantined_share": float(np.mean(quarantined_shares)),
        "commonest_findings": subjects.most_common(10),
        "alarms": alarms[:50],
        "seconds_per_run": round(seconds / runs, 3),
    }
    output = (output_root or settings.var_dir / "bench") / started_at.strftime("%Y%m%dT%H%M%SZ")
    output.mkdir(parents=True, exist_ok=True)
    (output / "screen-honest.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    (output / "screen-honest.md").write_text(honest_markdown(summary))
    return output


def honest_markdown(summary: dict) -> str:
    machine = summary["machine"]
    low, high = summary["rate_ci95"]
    commonest = ", ".join(f"{subject} ({count})" for subject, count in summary["commonest_findings"][:5])
    return (
        f"Measured {summary['measured_at']} on {machine['cpus']} CPUs ({machine['processor']}): "
        f"{summary['runs']} honest-only screens by champion v{summary['champion']}, each of "
        f"{summary['comments']} rows drawn from the {summary['pool']} pool ({summary['pool_rows']} rows), "
        "one key, the champion's scores stored. The runs resample one pool, so the interval "
        "counts the resampling only, not another pool's draw:\n\n"
        "| pool | runs | stated rate | runs with a finding | rate (95 % CI) | rows quarantined (mean) "
        "| seconds per run |\n"
        "| --- | ---: | ---: | ---: | --- | ---: | ---: |\n"
        f"| {summary['pool']} | {summary['runs']} | {100 * summary['stated_rate']:.1f} % "
        f"| {summary['runs_with_a_finding']} | {100 * summary['rate']:.1f} % "
        f"({100 * low:.1f} to {100 * high:.1f} %) | {100 * summary['mean_rows_quarantined_share']:.2f} % "
        f"| {summary['seconds_per_run']} |\n\n"
        f"Commonest findings: {commonest or 'none'}.\n"
    )
