"""Novelty where the model runs: every answer and log row carries its score, the index travels
with the registered version, and ``emotion-ops drift --input`` judges files against it."""

from __future__ import annotations

import json
import time

import httpx
import pandas as pd
import sqlalchemy as sa

from core.inference.novelty import REPRESENTATION
from core.registry import connect, load_bundle
from core.settings import TrainingSettings
from tests.utils.cli import cli
from tests.utils.factories import tiny_rows
from tests.utils.server import HEADERS


def test_answers_and_log_rows_carry_the_novelty_score(service_url, registry):
    model = httpx.get(service_url + "/model", headers=HEADERS).json()
    novelty = model["novelty"]
    assert novelty["method"] == "mahalanobis" and novelty["calibration_rows"] > 0
    assert 1 <= novelty["classes"] <= len(model["labels"])  # the classes the model gave index texts
    answers = httpx.post(
        service_url + "/predict_batch", json={"texts": ["i feel so happy", "zzz qqq xxx"]}, headers=HEADERS
    ).json()
    for answer in answers:
        assert answer["novelty"] >= 0  # a distance
        assert answer["novel"] is (answer["novelty"] > novelty["threshold"])
    engine = sa.create_engine(f"sqlite:///{registry / 'predictions.db'}")
    deadline = time.monotonic() + 30
    logged = None
    while logged is None:  # the log is written off the request path
        assert time.monotonic() < deadline, "the prediction never reached the log"
        with engine.connect() as connection:
            logged = connection.execute(
                sa.text("select novelty, novel from predictions where id = :id"),
                {"id": answers[0]["request_id"]},
            ).first()
        time.sleep(0.2)
    assert logged[0] == answers[0]["novelty"] and bool(logged[1]) is answers[0]["novel"]


def test_the_card_records_how_the_index_was_made(registry):
    settings = TrainingSettings(var_dir=registry)
    card = load_bundle(connect(settings), settings).card["novelty"]
    assert card["novel_share"] == 0.01 and card["expected_share"] > 0
    assert card["method"] == "mahalanobis" and card["representation"] == REPRESENTATION
    assert card["index_texts"] == "a random sample of the train split"


def test_drift_input_judges_each_file_against_the_champion(registry, tmp_path, monkeypatch):
    monkeypatch.setenv("EMOTION_VAR_DIR", str(registry))
    like = tmp_path / "like.csv"
    tiny_rows(200, seed=7).to_csv(like, index=False)
    unlike = tmp_path / "unlike.jsonl"
    pd.DataFrame({"text": ["zzz qqq xxx www"] * 200}).to_json(unlike, orient="records", lines=True)
    few = tmp_path / "few.parquet"
    pd.DataFrame({"text": ["i feel happy"] * 5}).to_parquet(few)

    run = cli("drift", "--input", str(like), str(unlike), str(few), "--json")
    assert run.exit_code == 0, run.output
    results = {json.loads(line)["file"]: json.loads(line) for line in run.output.strip().splitlines()}
    assert results[str(like)]["rows"] == 200 and results[str(like)]["verdict"] == "no_drift"
    assert results[str(unlike)]["verdict"] == "drift"  # one unseen text, 200 times: the label mix moved
    assert results[str(few)]["verdict"] == "not_enough_data"
    assert set(results[str(like)]["tests"]) == {"label_mix", "novelty_share"}

    text = cli("drift", "--input", str(like))
    assert text.exit_code == 0 and "NO DRIFT (200 texts" in text.output and "novelty_share" in text.output


def test_drift_input_says_what_is_wrong_with_a_file(registry, tmp_path, monkeypatch):
    monkeypatch.setenv("EMOTION_VAR_DIR", str(registry))
    no_text = tmp_path / "comments.csv"
    pd.DataFrame({"body": ["hello"]}).to_csv(no_text, index=False)
    for args, message in (
        (["--input", str(no_text)], "needs a 'text' column; found ['body']"),
        (["--input", str(tmp_path / "missing.csv")], "no such file"),
        (["--input", str(tmp_path / "notes.txt")], "expected a .csv, .jsonl or .parquet file"),
        (["--input"], "--input needs at least one file"),
        ([str(no_text)], "files to judge go after --input"),
        (["--input", str(no_text), "--rows", "10"], "do not apply"),
    ):
        run = cli("drift", *args)
        assert run.exit_code == 2 and message in run.output, (args, run.output)
