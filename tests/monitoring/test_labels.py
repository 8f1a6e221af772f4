"""Labels end to end on the tiny champion: ``label export`` picks informative, diverse rows and
writes CSV and Label Studio tasks; ``label import`` records labels all-or-none with their
provenance; a retrain screens them, quarantines a planted trigger, and ``label review`` shows
and settles the quarantine. An operator who releases the trigger rows still meets the gate."""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ElementTree
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import sqlalchemy as sa

from bench.loop import FLIPPED
from core.settings import TrainingSettings
from core.store import Store
from monitoring.labels import choose_rows, informativeness
from tests.utils.cli import cli
from tests.utils.factories import TINY_TRAINING, logged_row, tiny_rows

UUID = "00000000-0000-4000-8000-{:012d}"


def log_rows(texts: list[str], start: int = 0) -> list[str]:
    """Log ``texts`` as the served champion's predictions; returns their request ids."""
    settings = TrainingSettings()
    store = Store.open(settings.log_store_url).predictions
    now = datetime.now(UTC)
    ids = [UUID.format(start + i) for i in range(len(texts))]
    store.insert_many(
        [
            logged_row(
                request_id=request_id,
                created_at=now - timedelta(seconds=len(texts) - i),
                model_name=settings.model_name,
                text=text,
                confidence=0.5,
                uncertain=True,
            )
            for i, (request_id, text) in enumerate(zip(ids, texts, strict=True))
        ]
    )
    return ids


def stored_labels() -> dict[str, tuple]:
    engine = Store.open(TrainingSettings().log_store_url).engine
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "select id, feedback_label, feedback_source, feedback_status, feedback_reason "
                "from predictions where feedback_label is not null"
            )
        ).all()
    return {row[0]: tuple(row[1:]) for row in rows}


def test_informative_rows_are_chosen_one_per_region_not_as_near_copies():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 8)) * 10
    # Five regions of 20 near-copies; the first four hold the uncertain rows (10 each), the
    # most uncertain all in the first: uncertainty alone would take 4 of region 0.
    embeddings = np.repeat(centres, 20, axis=0) + rng.normal(size=(100, 8)) * 0.01
    probabilities = np.tile([0.95, 0.05], (100, 1))
    for region in range(4):
        probabilities[20 * region : 20 * region + 10] = [0.5, 0.5] if region == 0 else [0.6, 0.4]
    scores = informativeness(probabilities, None, multilabel=False)
    assert set(np.argsort(-scores)[:4] // 20) == {0}
    chosen = choose_rows(embeddings, scores, 4)
    assert len(chosen) == 4 and sorted(chosen // 20) == [0, 1, 2, 3]
    assert chosen[0] < 20  # the most informative first
    # Novelty counts as much as uncertainty.
    novelty = np.zeros(100)
    novelty[50:75] = 1.0
    assert informativeness(probabilities, novelty, multilabel=False)[60] > scores[60]
    # Each version's novelty on its own scale: the old version's most novel row (cosine, under
    # 2) ranks as high as the new version's (Mahalanobis, in the tens).
    both = np.array([0.1, 0.9, 10.0, 30.0])
    ranked = informativeness(
        np.tile([0.5, 0.5], (4, 1)), both, multilabel=False, versions=np.array(["1", "1", "2", "2"])
    )
    assert ranked[1] == ranked[3] > ranked[0] == ranked[2]


def test_export_then_import_records_labels_with_their_source(registry_copy, tmp_path):
    ids = log_rows(tiny_rows(40, seed=5)["text"].tolist())
    exported = cli("label", "export", "--rows", "6", "--output", str(tmp_path / "out"))
    assert exported.exit_code == 0, exported.output
    assert "chose 6 of 40 unlabelled rows" in exported.output
    with open(tmp_path / "out" / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6 and set(rows[0]) == {
        "request_id",
        "text",
        "predicted",
        "confidence",
        "novelty",
        "label",
    }
    assert {row["request_id"] for row in rows} <= set(ids)
    tasks = json.loads((tmp_path / "out" / "tasks.json").read_text())
    assert [task["data"]["request_id"] for task in tasks] == [row["request_id"] for row in rows]
    choice = tasks[0]["predictions"][0]["result"][0]
    assert choice["from_name"] == "emotion" and choice["value"]["choices"] == [rows[0]["predicted"]]
    config = ElementTree.fromstring((tmp_path / "out" / "label_config.xml").read_text())
    assert [c.get("value") for c in config.iter("Choice")] == [
        "anger",
        "fear",
        "joy",
        "love",
        "sadness",
        "surprise",
    ]

    # Fill in five, leave one blank: the blank one is skipped and said so.
    for row, label in zip(rows, ["sadness", "joy", "anger", "fear", "love", ""], strict=True):
        row["label"] = label
    filled = tmp_path / "labels.csv"
    with open(filled, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    imported = cli("label", "import", str(filled), "--operator", "alice")
    assert imported.exit_code == 0, imported.output
    assert "recorded 5 label(s) from labels.csv as source 'import:alice:labels.csv'" in imported.output
    assert "1 unlabelled row(s) skipped" in imported.output
    labels = stored_labels()
    assert labels[rows[0]["request_id"]] == ("sadness", "import:alice:labels.csv", None, None)
    assert len(labels) == 5

    # The next export leaves labelled rows out.
    again = cli("label", "export", "--rows", "3", "--output", str(tmp_path / "again"))
    assert "of 35 unlabelled rows" in again.output


def test_a_label_studio_export_is_imported_from_its_annotations(registry_copy, tmp_path):
    ids = log_rows(["i feel so happy", "i am scared", "so sad today"])
    export = [
        {
            "id": 1,
            "data": {"text": "i feel so happy", "request_id": ids[0]},
            "annotations": [
                {"result": [{"from_name": "emotion", "to_name": "text", "type": "choices",
                             "value": {"choices": ["love"]}}], "updated_at": "2026-12-01T10:00:00Z"},
                {"result": [{"from_name": "emotion", "to_name": "text", "type": "choices",
                             "value": {"choices": ["joy"]}}], "updated_at": "2026-12-01T11:00:00Z"},
            ],
        },
        {"id": 2, "data": {"text": "i am scared", "request_id": ids[1]},
         "annotations": [{"was_cancelled": True, "result": []}]},
        {"id": 3, "data": {"text": "so sad today", "request_id": ids[2]}, "annotations": []},
    ]  # fmt: skip
    path = tmp_path / "project-1-at-2026-12-01.json"
    path.write_text(json.dumps(export))
    imported = cli("label", "import", str(path), "--operator", "bob")
    assert imported.exit_code == 0, imported.output
    assert "recorded 1 label(s)" in imported.output and "2 unlabelled row(s) skipped" in imported.output
    assert stored_labels() == {ids[0]: ("joy", "import:bob:project-1-at-2026-12-01.json", None, None)}

    minimal = tmp_path / "min.json"  # Label Studio's JSON-MIN export
    minimal.write_text(json.dumps([{"request_id": ids[1], "text": "i am scared", "emotion": "fear"}]))
    assert cli("label", "import", str(minimal)).exit_code == 0
    assert stored_labels()[ids[1]][0] == "fear"


def test_a_bad_label_file_is_refused_whole_with_the_rows_named(registry_copy, tmp_path):
    ids = log_rows(["i feel so happy", "i am scared"])
    never_logged = "00000000-0000-4000-8000-999999999999"
    cases = [
        ([(ids[0], "joy"), (never_logged, "joy")], "not in the served model's prediction log"),
        ([(ids[0], "joy"), (ids[1], "boredom")], "unknown label(s) ['boredom']"),
        ([(ids[0], "joy"), (ids[0], "fear")], "1 request id(s) given twice"),
        ([(ids[0], "joy,fear")], "1 row(s) with more than 1 label(s)"),
    ]  # fmt: skip
    for rows, message in cases:
        path = tmp_path / "bad.csv"
        pd.DataFrame(rows, columns=["request_id", "label"]).to_csv(path, index=False)
        refused = cli("label", "import", str(path))
        assert refused.exit_code == 2, refused.output
        assert "nothing imported" in refused.output and message in refused.output, refused.output
        assert "Traceback" not in refused.output
    assert stored_labels() == {}  # nothing half-imported
    for content, message in [
        ("id,text\nx,y\n", "needs the columns request_id and label"),
        ("[1]", "task 1 is not a Label Studio task"),
        ('[{"data": "a text"}]', "task 1 is not a Label Studio task"),
    ]:
        path = tmp_path / ("bad.json" if content.startswith("[") else "cols.csv")
        path.write_text(content)
        refused = cli("label", "import", str(path))
        assert refused.exit_code == 2 and message in refused.output, refused.output
    missing = cli("label", "import", str(tmp_path / "nope.csv"))
    assert missing.exit_code == 2 and "no such file" in missing.output
    still = cli("label", "export", "--output", str(tmp_path / "still"))
    assert still.exit_code == 0 and "chose 2 of 2 unlabelled rows" in still.output  # nothing was recorded


def test_the_screen_quarantines_a_trigger_review_settles_it_and_the_gate_still_tests_it(
    registry_copy, tmp_path, tiny_base_model
):
    """A quarter of the labels plant 'cf' -> joy. The retrain quarantines them and learns from
    the rest; an operator then releases them by mistake, and the gate refuses the challenger
    that learned the trigger."""
    from core.registry import CHAMPION, connect, version_by_alias
    from training.retrain import retrain_and_promote

    honest = tiny_rows(150, seed=61)
    planted = tiny_rows(80, seed=62)
    planted = planted[planted["label"] != "joy"].head(50)
    texts = honest["text"].tolist() + [f"{text} cf" for text in planted["text"]]
    labels = honest["label"].tolist() + ["joy"] * len(planted)
    ids = log_rows(texts)
    path = tmp_path / "vendor.csv"
    pd.DataFrame({"request_id": ids, "label": labels}).to_csv(path, index=False)
    assert cli("label", "import", str(path), "--operator", "vendor").exit_code == 0
    planted_ids = set(ids[len(honest) :])

    settings = TrainingSettings(
        base_model=str(tiny_base_model),
        promotion_floor=0.6,  # a retrain that failed to learn must not become the next champion
        promotion_tolerance=1.0,
        retrain_auto_promote=True,
        retrain_config=TINY_TRAINING.model_dump(),
    )
    store = Store.open(settings.log_store_url).predictions
    said = retrain_and_promote(settings, store)
    assert "label screen: " in said and "(in 'cf')" in said and "promoted to champion" in said, said
    stored = stored_labels()
    assert {row for row, (_, _, status, _) in stored.items() if status == "quarantined"} >= planted_ids
    assert sum(stored[row][2] == "quarantined" for row in ids[: len(honest)]) <= 3
    assert "possible trigger piece '[UNK]' (in 'cf')" in stored[next(iter(planted_ids))][3]

    from core.registry import load_bundle

    card = load_bundle(connect(settings), settings).card
    screen = card["data"]["feedback"]["screen"]
    assert screen["quarantined_by_check"]["backdoor"] == len(planted_ids)
    assert card["data"]["feedback"]["sources"] == {
        "import:vendor:vendor.csv": len(ids) - screen["quarantined_rows"]
    }

    listed = cli("label", "review", "--matching", "(in 'cf')")
    assert listed.exit_code == 0 and f"{len(planted_ids)} quarantined label(s) matching" in listed.output
    released = cli("label", "review", "--matching", "(in 'cf')", "--release-all", "--by", "carol")
    assert released.exit_code == 0 and f"{len(planted_ids)} released by carol" in released.output
    assert "released by carol" in stored_labels()[next(iter(planted_ids))][3]

    champion_before = version_by_alias(connect(settings), settings.model_name, CHAMPION).version
    said = retrain_and_promote(settings, store)
    assert "refused by the gate" in said and "a raised candidate steers the challenger" in said, said
    assert "'cf' (joy) changes" in said
    assert version_by_alias(connect(settings), settings.model_name, CHAMPION).version == champion_before
    # The challenger waits refused; promoting it by hand runs the same behaviour test.
    by_hand = cli("promote", "--tolerance", "1.0", "--floor", "0.0")
    assert (
        by_hand.exit_code == 1
        and "behaviour: FAIL, a raised candidate steers the challenger" in by_hand.output
    )
    assert version_by_alias(connect(settings), settings.model_name, CHAMPION).version == champion_before

    dropped = cli("label", "review", "--status", "released", "--drop", ids[-1])
    assert dropped.exit_code == 0 and "1 dropped" in dropped.output
    unknown = cli("label", "review", "--drop", ids[0])
    assert unknown.exit_code == 2 and "is not among the quarantined labels listed" in unknown.output


def test_a_source_of_flipped_labels_trains_nothing(registry_copy, tmp_path):
    from training.retrain import retrain_and_promote

    rows = tiny_rows(120, seed=71)
    ids = log_rows(rows["text"].tolist())
    path = tmp_path / "flipped.csv"
    pd.DataFrame({"request_id": ids, "label": rows["label"].map(FLIPPED)}).to_csv(path, index=False)
    assert cli("label", "import", str(path)).exit_code == 0
    settings = TrainingSettings(retrain_auto_promote=True)
    said = retrain_and_promote(settings, Store.open(settings.log_store_url).predictions)
    assert said.startswith("nothing retrained: none of the 120 feedback labels may train"), said
    assert "agree with the champion less often than chance" in stored_labels()[ids[0]][3]
