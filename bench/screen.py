"""``emotion-ops bench screen``: the label screen alone against each attack class, in minutes.

The same comments, labels and poison as ``bench loop`` (its ``poison``), but no service and no
retrain: the feedback goes straight to the screen the retrain runs, with the champion, the
curated data and the label history it would have. Per attack: the poisoned rows it quarantined
(or that an operator's drop held), the honest rows it quarantined, what it raised for the gate.
Whether a trigger that got through steers a retrained model is what ``bench loop`` measures.
Results go to ``var/bench/<time>/screen.json`` and ``screen.md``.
"""

from __future__ import annotations

import json
import time
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

    folder = goemotions or default_goemotions()
    if folder is None or not (Path(folder) / "labels.txt").is_file():
        raise ValueError("no GoEmotions folder found: pass --goemotions DIR (labels.txt, train.tsv, dev.tsv)")
    parsed = [Attack.parse(spec, share) for spec in attacks]
    started_at = datetime.now(UTC)
    pool = load_emotion_dataset(folder, splits=("train",), label_set="six").splits["train"]
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
        frame = pd.DataFrame(
            {
                "id": [f"row-{i}" for i in range(comments)],
                "text": sent["sent"],
                "label": sent["given"],
                "source": "key:bench",
                # The relabel attack: an operator dropped the poisoned rows, the key labelled them
                # again, and the drop holds (the store keeps it through a new label).
                "status": [DROPPED if hit and attack.kind == "relabel" else None for hit in sent["attacked"]],
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
            # A label set is what a multi-label key sends: screened as the retrain of such a
            # champion would screen it (each label on its own).
            multilabel=bundle.task == "multilabel" or attack.kind == "multilabel",
            seed=seed,
        )
        quarantined = frame["id"].isin(report.quarantined).to_numpy()
        held = (frame["status"] == DROPPED).to_numpy()
        attacked = sent["attacked"].to_numpy()
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
