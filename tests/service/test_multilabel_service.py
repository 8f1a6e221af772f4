"""A multi-label champion served by the real bentoml: the answer's ``emotions`` are the labels
over the model's thresholds, feedback takes a list of labels, the metrics count every decided
label, and the drift job reads the logged traffic as label sets (per-label frequency, micro- and
macro-F1 on the feedback)."""

from __future__ import annotations

import json
from collections import Counter

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from core.labels import decided_labels
from core.settings import TrainingSettings
from tests.utils.cli import cli
from tests.utils.factories import TINY_TRAINING, write_tiny_multilabel_dataset
from tests.utils.server import HEADERS, running_service, service_env
from training.pipeline import train_and_register
from training.promote import promote

MODEL = "emotion-classifier-multilabel"
TEXTS = ["i feel happy and so lonely", "so scared and angry", "i adore it", "the day"]


@pytest.fixture(scope="module")
def multilabel_registry(tmp_path_factory, tiny_base_model):
    folder = tmp_path_factory.mktemp("multilabel")
    data = write_tiny_multilabel_dataset(folder / "data")
    settings = TrainingSettings(var_dir=folder / "var", task="multilabel", promotion_floor_multilabel=0.0)
    train_and_register(
        settings, TINY_TRAINING, str(data), str(tiny_base_model), with_baseline=False, progress=False
    )
    assert promote(settings, str(data)).decision.passed
    return folder / "var"


@pytest.fixture(scope="module")
def multilabel_url(multilabel_registry, tmp_path_factory):
    env = service_env(multilabel_registry, EMOTION_TASK="multilabel")
    with running_service(env, tmp_path_factory.mktemp("logs") / "serve.log") as url:
        yield url


def post(url: str, path: str, body: dict) -> httpx.Response:
    return httpx.post(url + path, json=body, headers=HEADERS, timeout=30)


def test_answers_list_the_labels_over_their_thresholds(multilabel_url):
    model = httpx.get(multilabel_url + "/model", headers=HEADERS).json()
    assert model["name"] == MODEL and model["task"] == "multilabel"
    thresholds = model["thresholds"]
    assert set(thresholds) == set(model["labels"])
    answers = post(multilabel_url, "/predict_batch", {"texts": TEXTS}).json()
    for answer in answers:
        probabilities = answer["all_emotions"]
        over = {label for label, p in probabilities.items() if p >= thresholds[label]}
        assert set(answer["emotions"]) == (over or {answer["emotion"]})
        shown = [probabilities[label] for label in answer["emotions"]]
        assert shown == sorted(shown, reverse=True)  # most probable first
    # Independent probabilities: nothing makes a row sum to 1.
    assert any(abs(sum(answer["all_emotions"].values()) - 1) > 0.05 for answer in answers)


def test_feedback_takes_a_list_of_labels_and_judges_the_whole_set(multilabel_url, multilabel_registry):
    answer = post(multilabel_url, "/predict", {"text": TEXTS[0]}).json()
    given = ["sadness", "joy"]
    receipt = post(multilabel_url, "/feedback", {"request_id": answer["request_id"], "labels": given})
    assert receipt.status_code == 200, receipt.text
    body = receipt.json()
    assert body["labels"] == ["joy", "sadness"] and body["label"] == "joy,sadness"
    assert body["predicted"] == ",".join(sorted(answer["emotions"]))
    assert body["correct"] is (sorted(answer["emotions"]) == ["joy", "sadness"])

    one = post(multilabel_url, "/predict", {"text": TEXTS[1]}).json()
    assert (
        post(multilabel_url, "/feedback", {"request_id": one["request_id"], "label": "fear"}).status_code
        == 200
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"labels": ["joy", "bliss"]}, "unknown label(s) ['bliss']"),
        ({"labels": []}, "invalid request body"),
        ({"label": "joy", "labels": ["joy"]}, "invalid request body"),
        ({"label": None}, "invalid request body"),
        ({"labels": ["joy"] * 7}, "give at most 6 label(s)"),
    ],
)
def test_bad_feedback_gets_a_clear_error(multilabel_url, body, message):
    answer = post(multilabel_url, "/predict", {"text": TEXTS[2]}).json()
    response = post(multilabel_url, "/feedback", {"request_id": answer["request_id"], **body})
    assert response.status_code == 400 and message in response.text, response.text


def test_the_document_declares_labels_up_to_what_the_model_takes(multilabel_url):
    feedback = httpx.get(multilabel_url + "/docs.json").json()["components"]["schemas"]["Feedback"]
    assert feedback["properties"]["labels"]["maxItems"] == 6  # six short labels always fit
    assert feedback["properties"]["labels"]["items"]["enum"] == list(feedback["properties"]["label"]["enum"])
    assert len(feedback["oneOf"]) == 2


def test_metrics_count_every_decided_label(multilabel_url):
    answers = post(multilabel_url, "/predict_batch", {"texts": TEXTS}).json()
    families = {
        f.name: f for f in text_string_to_metric_families(httpx.get(multilabel_url + "/metrics").text)
    }
    decided = sum(s.value for s in families["emotion_predicted_labels"].samples if s.name.endswith("_total"))
    texts = sum(s.value for s in families["emotion_predictions"].samples if s.name.endswith("_total"))
    # Every text counts its most probable label at least; a multi-label text counts each one.
    assert decided >= texts >= len(answers)


def test_drift_reads_label_sets_from_the_log(
    multilabel_url, multilabel_registry, pushgateway_url, monkeypatch
):
    answers = post(multilabel_url, "/predict_batch", {"texts": TEXTS * 15}).json()
    for answer in answers[:20]:
        post(multilabel_url, "/feedback", {"request_id": answer["request_id"], "labels": answer["emotions"]})
    monkeypatch.setenv("EMOTION_VAR_DIR", str(multilabel_registry))
    monkeypatch.setenv("EMOTION_TASK", "multilabel")
    monkeypatch.setenv("EMOTION_PUSHGATEWAY_URL", pushgateway_url)
    monkeypatch.setenv("EMOTION_DRIFT_MIN_ROWS", "20")
    run = cli("drift", "--rows", "1000")
    assert run.exit_code == 0, run.output
    assert "label frequency" in run.output and "micro-F1" in run.output, run.output
    report_id = run.output.split()[1].rstrip(":")
    summary = json.loads((multilabel_registry / "reports" / report_id / "summary.json").read_text())
    assert summary["model"]["name"] == MODEL
    # Each label's share of the logged texts it was decided for, as the service decided them.
    thresholds = httpx.get(multilabel_url + "/model", headers=HEADERS).json()["thresholds"]
    engine = sa.create_engine(f"sqlite:///{multilabel_registry / 'predictions.db'}")
    with engine.connect() as connection:
        rows = connection.execute(sa.text("select probabilities from predictions")).scalars()
        logged = [json.loads(value) if isinstance(value, str) else value for value in rows]
    counts = Counter(label for p in logged for label in decided_labels(p, thresholds).split(","))
    frequency = summary["label_frequency"]
    assert frequency["current"] == {label: round(n / len(logged), 4) for label, n in sorted(counts.items())}
    assert set(frequency["reference"]) <= set(thresholds)
    quality = summary["quality"]
    assert quality["labelled_rows"] >= 20 and quality["micro_f1"] > 0.5  # most feedback agrees
    pushed = httpx.get(pushgateway_url + "/metrics").text
    assert f'emotion_live_micro_f1{{instance="",job="emotion_drift",model_name="{MODEL}"' in pushed
    assert "emotion_drift_label_frequency{" in pushed
