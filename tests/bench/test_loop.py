"""``emotion-ops bench loop`` end to end on the tiny model and a tiny GoEmotions folder: the real
service, real feedback, one real monitor cycle with a retrain; the tables are written (no timing
asserts)."""

from __future__ import annotations

import json

import numpy as np

from tests.utils.cli import cli
from tests.utils.factories import TINY_TRAINING, tiny_rows, write_goemotions


def test_the_loop_bench_replays_feedback_retrains_and_scores_before_and_after(
    isolated_env, registry, tiny_data, tiny_base_model, tmp_path, monkeypatch
):
    for name, value in {
        "EMOTION_VAR_DIR": str(registry),
        "EMOTION_DATA_DIR": str(tiny_data),
        "EMOTION_BASE_MODEL": str(tiny_base_model),
        "EMOTION_DRIFT_MIN_ROWS": "20",
        "EMOTION_RETRAIN_MIN_NEW_LABELS": "10",
        "EMOTION_LIVE_ACCURACY_MIN_LABELS": "10",
        # Any shortfall triggers the retrain, so the cycle always runs the retrain and the gate.
        "EMOTION_LIVE_ACCURACY_FLOOR": "1.0",
        "EMOTION_PROMOTION_FLOOR": "0.0",
        "EMOTION_PROMOTION_TOLERANCE": "1.0",
        "EMOTION_RETRAIN_CONFIG": json.dumps(
            TINY_TRAINING.model_dump(
                include={"epochs", "learning_rate", "batch_size", "patience", "max_length"}
            )
        ),
    }.items():
        monkeypatch.setenv(name, value)
    goemotions = write_goemotions(tmp_path / "goemotions")
    # A fifth of the labels flipped: the live accuracy falls short of the floor, so the cycle
    # retrains (too few rows for the screen to judge a source or the noise; it says so).
    result = cli(
        "bench",
        "loop",
        "--comments",
        "30",
        "--goemotions",
        str(goemotions),
        "--attack",
        "flip",
        "--attack-share",
        "0.2",
    )
    assert result.exit_code == 0, result.output
    (run,) = (registry / "bench").glob("*/loop.json")
    loop = json.loads(run.read_text())
    assert loop["comments"] == 30 and loop["drift"]["labelled_rows"] == 30
    assert set(loop["scores"]) == {"GoEmotions dev (six-label rows)", "dair-ai/emotion test"}
    assert loop["scores"]["GoEmotions dev (six-label rows)"]["rows"] == 41
    assert loop["decision"]["retrain"] is True and "retrained version" in loop["action"]
    assert loop["champion_after"] != loop["champion_before"]  # the gate passed: promoted
    for scores in loop["scores"].values():
        assert all(0 <= scores[key] <= 1 for key in scores if key != "rows")
    assert set(loop["seconds"]) == {
        "score the champion",
        "start the service",
        "replay comments",
        "send feedback",
        "monitor once",
        "score the new champion",
    }
    table = (run.parent / "loop.md").read_text()
    assert "| GoEmotions dev (six-label rows) | 41 |" in table and "decision: retrain" in table
    assert loop["attack"]["kind"] == "flip" and loop["screen"]["attack_rows"] == 6
    assert "flip attack on 20 % of the labels" in table


def test_the_loop_bench_needs_goemotions_and_enough_comments(isolated_env, tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("EMOTION_DATA_DIR", str(tiny_data))
    missing = cli("bench", "loop", "--goemotions", str(tmp_path / "nowhere"), "--comments", "10")
    assert missing.exit_code == 2 and "GoEmotions" in missing.output
    few = write_goemotions(tmp_path / "goemotions")
    too_many = cli("bench", "loop", "--goemotions", str(few), "--comments", "5000")
    assert too_many.exit_code == 2 and "six-label rows" in too_many.output


def test_each_attack_class_sends_what_it_says():
    import numpy as np
    import pandas as pd

    from bench.loop import LOW_PURITY, Attack, poison

    rows = pd.DataFrame({"text": [f"text {i}" for i in range(200)], "label": ["sadness", "joy"] * 100})
    labelled = np.ones(200, bool)

    def sent(spec: str):
        return poison(rows, labelled, Attack.parse(spec, 0.25), np.random.default_rng(0))

    symbol = sent("symbol")
    assert symbol["attacked"].sum() == 50 and (symbol.loc[symbol["attacked"], "given"] == "joy").all()
    assert symbol.loc[symbol["attacked"], "sent"].str.endswith(" ±").all()
    family = sent("family:zorp").loc[lambda f: f["attacked"], "sent"].str.split().str[-1]
    assert family.str.startswith("zorp").all() and family.nunique() >= 40  # one or two rows each
    low = sent("lowpurity").loc[lambda f: f["attacked"]]
    # 85 % get the target; the rest keep their own label (a sadness text keeps sadness).
    assert 50 - round(50 * (1 - LOW_PURITY)) <= (low["given"] == "joy").sum() < 50
    camouflage = sent("camouflage")
    assert camouflage["cover"].sum() == 50 and (camouflage.loc[camouflage["cover"], "label"] == "joy").all()
    assert camouflage.loc[camouflage["cover"], "sent"].str.endswith(" cf").all()
    assert (camouflage.loc[camouflage["cover"], "given"] == "joy").all()  # honest labels
    spread = sent("multilabel").loc[lambda f: f["attacked"]]
    assert (spread["given"] == "joy," + spread["label"]).all()
    for bad, message in (("symbol:ab", "one character"), ("flip:x", "takes no token"), ("bogus", "choose")):
        try:
            Attack.parse(bad, 0.25)
        except ValueError as error:
            assert message in str(error)
        else:
            raise AssertionError(f"{bad} was accepted")


def test_the_screen_bench_runs_every_attack_class_against_the_screen(
    isolated_env, registry, tiny_data, tmp_path, monkeypatch
):
    monkeypatch.setenv("EMOTION_VAR_DIR", str(registry))
    monkeypatch.setenv("EMOTION_DATA_DIR", str(tiny_data))
    goemotions = write_goemotions(tmp_path / "goemotions")
    result = cli("bench", "screen", "--goemotions", str(goemotions), "--comments", "36")
    assert result.exit_code == 0, result.output
    (run,) = (registry / "bench").glob("*/screen.json")
    summary = json.loads(run.read_text())
    by_attack = {r["attack"]: r for r in summary["results"]}
    assert set(by_attack) == {
        "none",
        "trigger",
        "symbol",
        "family",
        "lowpurity",
        "camouflage",
        "multilabel",
        "relabel",
    }
    assert by_attack["none"]["attack_rows"] == 0 and by_attack["trigger"]["attack_rows"] == 9
    # The relabel attack's rows were dropped by an operator in the store and labelled again: the
    # drop holds through the new label, so they are stopped.
    assert by_attack["relabel"]["attack_stopped"] == 9
    assert "| symbol | " in (run.parent / "screen.md").read_text()


def test_the_honest_runs_state_the_screens_false_alarm_rate_from_stored_scores(
    isolated_env, registry, tiny_data, monkeypatch
):
    monkeypatch.setenv("EMOTION_VAR_DIR", str(registry))
    monkeypatch.setenv("EMOTION_DATA_DIR", str(tiny_data))
    result = cli("bench", "screen", "--honest-runs", "20", "--pool", "dair", "--comments", "30")
    assert result.exit_code == 0, result.output
    (run,) = (registry / "bench").glob("*/screen-honest.json")
    summary = json.loads(run.read_text())
    assert summary["runs"] == 20 and summary["pool"] == "dair" and summary["pool_rows"] == 60
    assert summary["comments"] == 30 and len(summary["alarms"]) == summary["runs_with_a_finding"]
    low, high = summary["rate_ci95"]
    assert low <= summary["rate"] <= high and high > 0  # an exact interval is never [0, 0]
    assert "| dair | 20 | 1.0 % |" in (run.parent / "screen-honest.md").read_text()

    for args, message in (
        (("--pool", "tweets"), "unknown pool 'tweets'"),
        (("--pool", "dair", "--comments", "31"), "take at most half of them (30)"),
        (("--attack", "trigger"), "leave out --attack"),
    ):
        refused = cli("bench", "screen", "--honest-runs", "2", *args)
        assert refused.exit_code == 2 and message in refused.output, refused.output
    refused = cli("bench", "screen", "--pool", "dair")
    assert refused.exit_code == 2 and "give --honest-runs N with it" in refused.output


def test_stored_scores_and_a_remembering_reader_answer_as_the_champion_and_reader_do(isolated_env, registry):
    from bench.screen import StoredScores, remembering_reader
    from core.registry import connect, load_bundle
    from core.settings import TrainingSettings
    from training.screen import TextReader

    settings = TrainingSettings(var_dir=registry)
    predictor = load_bundle(connect(settings), settings).predictor()
    stored = StoredScores(predictor)
    texts = tiny_rows(5, seed=7)["text"].tolist()
    texts.append(texts[0])  # a repeat is read from the store
    first_probabilities, first_embeddings = stored.proba_and_embed(texts)
    probabilities, embeddings = predictor.proba_and_embed(texts)
    assert np.allclose(first_probabilities, probabilities, atol=1e-5)
    assert np.allclose(first_embeddings, embeddings, atol=1e-5)
    assert np.array_equal(stored.predict_proba(texts), first_probabilities)
    reader = remembering_reader(predictor.tokenizer)
    assert reader.read(texts) == reader.read(texts) == TextReader(predictor.tokenizer).read(texts)
