"""The shadow's parts on their own: the bounded offer, the summary a reviewer reads (on a real
SQLite store), what the gate asks of it, and a pass that waits for it (on a real registry).
The whole shadow in a running service is tested in test_console.py."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime

from core.labels import QUARANTINED
from core.registry import AWAITING_REVIEW, CHALLENGER, CHAMPION, connect, version_by_alias
from core.settings import ServiceSettings, TrainingSettings
from core.shadow import ShadowRequirement
from core.store import Store
from service.shadow import ShadowScorer
from tests.utils.factories import TINY_TRAINING, logged_row
from training.pipeline import train_and_register
from training.promote import promote


def test_an_offer_never_waits_and_a_full_queue_skips_the_text(tmp_path):
    settings = ServiceSettings(var_dir=tmp_path, shadow_queue_texts=2)
    skipped = []
    scorer = ShadowScorer(
        settings, Store.open(settings.log_store_url).shadow, on_skipped=lambda r, n: skipped.append(r)
    )
    assert not scorer.wanted()  # no challenger loaded: nothing is offered
    for index in range(3):
        scorer.offer(f"id-{index}", "i feel fine", "1", "joy")
    assert skipped == ["busy"]


def _shadow_row(request_id: str, champion: str, challenger: str, probabilities: dict) -> dict:
    return {
        "id": request_id,
        "created_at": datetime.now(UTC),
        "model_name": "emotion-classifier",
        "champion_version": "1",
        "challenger_version": "2",
        "champion_emotion": champion,
        "challenger_emotion": challenger,
        "challenger_confidence": max(probabilities.values()),
        "challenger_probabilities": probabilities,
        "latency_ms": 2.0,
    }


def test_the_summary_counts_agreement_divergence_and_accuracy_on_trusted_labels(tmp_path):
    store = Store.open(f"sqlite:///{tmp_path / 'log.db'}")
    champion_says = {"joy": 0.9, "anger": 0.1}
    logged = [
        logged_row(
            request_id="a",
            text="lovely day",
            emotion="joy",
            probabilities=champion_says,
            feedback_label="joy",
        ),
        logged_row(
            request_id="b", text="grr", emotion="joy", probabilities=champion_says, feedback_label="anger"
        ),
        logged_row(
            request_id="c",
            text="meh",
            emotion="joy",
            probabilities=champion_says,
            feedback_label="anger",
            feedback_status=QUARANTINED,  # a label the screen kept out
        ),
        logged_row(request_id="d", text="fine", emotion="joy", probabilities=champion_says),
    ]
    # One batch writes rows of one shape: every row names both label columns.
    unlabelled = {"feedback_label": None, "feedback_status": None}
    store.predictions.insert_many([{**unlabelled, **row} for row in logged])
    store.shadow.insert_many(
        [
            _shadow_row("a", "joy", "joy", {"joy": 0.8, "anger": 0.2}),
            _shadow_row("b", "joy", "anger", {"joy": 0.3, "anger": 0.7}),
            _shadow_row("c", "joy", "anger", {"joy": 0.05, "anger": 0.95}),
            _shadow_row("d", "joy", "joy", {"joy": 0.7, "anger": 0.3}),
        ]
    )
    summary = store.shadow.summary("emotion-classifier", "2", "1")
    assert summary["rows"] == 4 and summary["agreement"] == 0.5
    by_label = {row["label"]: row for row in summary["labels"]}
    assert by_label["joy"]["champion_only"] == 2 and by_label["anger"]["challenger_only"] == 2
    # Most different first: "meh" (0.85 apart) before "grr" (0.6 apart).
    assert [row["text"] for row in summary["most_different"]] == ["meh", "grr"]
    # The quarantined label is no evidence: two trusted labels; the champion is right on one.
    assert summary["labelled"] == 2
    assert summary["champion_accuracy"] == 0.5 and summary["challenger_accuracy"] == 1.0
    assert store.shadow.summary("emotion-classifier", "3")["rows"] == 0  # another challenger: none


def test_the_requirement_says_what_is_short():
    summary = {
        "rows": 600,
        "challenger_version": "2",
        "agreement": 0.88,
        "labelled": 20,
        "challenger_accuracy": 0.9,
    }
    assert ShadowRequirement().shortfall(summary) is None  # nothing asked
    assert "needs 1000" in ShadowRequirement(min_agreement=0.5, min_rows=1000).shortfall(summary)
    assert "on 88.0% of 600 live texts, the gate needs 90.0%" in ShadowRequirement(
        min_agreement=0.9
    ).shortfall(summary)
    assert "20 of the shadow's texts have a label" in ShadowRequirement(min_accuracy=0.8).shortfall(summary)
    assert ShadowRequirement(min_agreement=0.85, min_accuracy=0.8, min_labels=10).shortfall(summary) is None
    # The approver's bar and the gate's record: each at the higher; nothing recorded keeps the bar.
    mine = ShadowRequirement(min_agreement=0.8, min_rows=10)
    assert mine.stricter(ShadowRequirement()) == mine
    assert mine.stricter(ShadowRequirement(min_agreement=0.9, min_accuracy=0.7)) == ShadowRequirement(
        0.9, 0.7, 500, 50
    )
    assert ShadowRequirement.from_tags({"promotion.shadow_requirement": mine.to_tag()}) == mine


def test_a_pass_over_a_champion_waits_for_the_shadow_when_the_gate_asks_for_it(
    registry, tiny_data, tiny_base_model, tmp_path
):
    var_dir = tmp_path / "var"
    shutil.copytree(registry, var_dir)
    settings = TrainingSettings(
        var_dir=var_dir, promotion_floor=0.0, promotion_tolerance=1.0, shadow_min_agreement=0.9
    )
    train_and_register(
        settings, TINY_TRAINING, str(tiny_data), str(tiny_base_model), with_baseline=False, progress=False
    )
    result = promote(settings, str(tiny_data))  # asked to move the champion, on a pass
    assert result.decision.passed and result.awaiting_review and not result.promoted
    client = connect(settings)
    assert str(version_by_alias(client, settings.model_name, CHAMPION).version) == "1"
    waiting = version_by_alias(client, settings.model_name, CHALLENGER)
    assert waiting.tags["promotion.decision"] == AWAITING_REVIEW
    assert "waits for the shadow's evidence" in waiting.tags["promotion.reason"]
    # The bar is on the version: an approver whose settings ask nothing is held to it.
    assert ShadowRequirement.from_tags(waiting.tags) == ShadowRequirement(min_agreement=0.9)
