"""The real service over HTTP: every endpoint, every bad input, metrics and the prediction log."""

from __future__ import annotations

import json

import httpx
import pytest
import sqlalchemy as sa

from tests.utils.server import HEADERS, VENDOR_KEY

LABELS = ["anger", "fear", "joy", "love", "sadness", "surprise"]
UNSEEN_ID = "00000000-0000-4000-8000-000000000000"


def post(url: str, path: str, body, **kwargs) -> httpx.Response:
    if isinstance(body, str | bytes):
        headers = {**HEADERS, "content-type": "application/json"}
        return httpx.post(url + path, content=body, headers=headers, **kwargs)
    return httpx.post(url + path, json=body, headers=HEADERS, **kwargs)


def test_predict_returns_emotion_distribution_and_model(service_url):
    response = post(service_url, "/predict", {"text": "i feel so happy and glad today"})
    assert response.status_code == 200
    body = response.json()
    assert body["emotion"] == "joy"
    assert set(body["all_emotions"]) == set(LABELS)
    assert abs(sum(body["all_emotions"].values()) - 1) < 1e-4
    assert body["confidence"] == max(body["all_emotions"].values())
    assert (body["model_name"], body["model_version"], body["model_alias"]) == (
        "emotion-classifier",
        "1",
        "champion",
    )
    assert body["truncated"] is False and body["tokens"] == 9
    assert len(body["request_id"]) == 36


def test_predict_batch_gives_one_unique_id_per_text(service_url):
    texts = ["i am so angry and mad", "i feel scared", "what a surprise, i am amazed"]
    response = post(service_url, "/predict_batch", {"texts": texts})
    assert response.status_code == 200
    results = response.json()
    assert [r["emotion"] for r in results] == ["anger", "fear", "surprise"]
    assert len({r["request_id"] for r in results}) == 3


def test_the_seed_projects_clients_work_unchanged(service_url):
    """``{"input": [...]}`` as their batch body, ``emotions`` as the list of emotions, and the
    interactive docs at /docs, where FastAPI users look."""
    texts = ["i am so angry and mad", "i feel scared"]
    by_input = post(service_url, "/predict_batch", {"input": texts})
    assert by_input.status_code == 200, by_input.text
    assert [(r["emotion"], r["emotions"]) for r in by_input.json()] == [
        ("anger", ["anger"]),
        ("fear", ["fear"]),
    ]
    both = post(service_url, "/predict_batch", {"texts": texts, "input": texts})
    assert both.status_code == 400 and "not both" in both.json()["error"]
    empty = post(service_url, "/predict_batch", {"input": []})
    assert empty.status_code == 400 and "at least 1 item" in json.dumps(empty.json())
    # The rename leaves alone what it does not understand; the framework judges it as before.
    unicode = post(service_url, "/predict_batch", {"input": ["i am so happy 😀 ünïcode"]})
    assert unicode.status_code == 200 and unicode.json()[0]["emotion"] == "joy"
    quoted = post(service_url, "/predict", {"text": 'she said "input" and left'})
    assert quoted.status_code == 200
    for body in ('["input"]', '{"input": ' + "[" * 5000 + "]" * 5000 + "}"):
        refused = post(service_url, "/predict_batch", body)
        assert refused.status_code == 400 and "error" in refused.json(), refused.text
    docs = httpx.get(service_url + "/docs")
    assert docs.status_code == 200 and docs.text == httpx.get(service_url + "/").text
    assert "swagger-ui" in docs.text


def test_long_text_is_truncated_and_says_so(service_url):
    body = post(service_url, "/predict", {"text": "i feel very happy " * 40}).json()
    assert body["truncated"] is True
    assert body["tokens"] == 32


def test_labels_model_and_openapi(service_url):
    assert httpx.get(service_url + "/labels", headers=HEADERS).json() == {
        "labels": LABELS,
        "model_version": "1",
    }
    model = httpx.get(service_url + "/model", headers=HEADERS).json()
    assert model["version"] == "1" and model["alias"] == "champion" and model["labels"] == LABELS
    assert set(model["test_metrics"]) == {"accuracy", "macro_f1"}
    spec = httpx.get(service_url + "/docs.json").json()
    assert {"/predict", "/predict_batch"} <= set(spec["paths"])
    assert httpx.get(service_url + "/livez").status_code == 200
    assert httpx.get(service_url + "/readyz").status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/predict", {"text": "   "}, 400, "non-whitespace"),
        ("/predict", {"text": ""}, 400, "non-whitespace"),
        ("/predict", {"text": 42}, 400, "valid string"),
        ("/predict", {"texts": ["a"]}, 400, "Field required"),
        ("/predict", '{"text": "unclosed', 400, "Invalid JSON"),
        ("/predict_batch", {"texts": []}, 400, "at least 1 item"),
        ("/predict_batch", {"texts": ["ok"] * 257}, 400, "at most 256 items"),
        ("/predict_batch", {"texts": ["ok", " "]}, 400, "non-whitespace"),
        ("/predict", json.dumps({"text": "a" * 6_300_000}), 413, "request body over"),
        ("/feedback", {"label": "joy"}, 400, "request_id"),
        ("/feedback", "{not json", 400, "JSON decode error"),
        ("/feedback", {"request_id": "no-such-id", "label": "joy"}, 400, "String should match pattern"),
        ("/feedback", {"request_id": UNSEEN_ID, "label": "boredom"}, 400, "unknown label(s) ['boredom']"),
        ("/predict", {"text": "a" * 2_001}, 400, "the limit is 2000"),
        ("/reports?limit=0", None, 400, "greater than or equal to 1"),
    ],
)
def test_bad_input_gets_a_json_error(service_url, path, body, status, message):
    if body is None:
        response = httpx.get(service_url + path, headers=HEADERS)
    else:
        response = post(service_url, path, body)
    assert response.status_code == status
    assert message in response.text
    payload = response.json()
    assert "error" in (payload if isinstance(payload, dict) else payload[0])
    assert "Traceback" not in response.text


def test_feedback_is_stored_and_counted(service_url, registry):
    prediction = post(service_url, "/predict", {"text": "i feel lonely and sad"}).json()
    response = post(service_url, "/feedback", {"request_id": prediction["request_id"], "label": "sadness"})
    assert response.status_code == 200
    assert response.json()["correct"] is (prediction["emotion"] == "sadness")
    engine = sa.create_engine(f"sqlite:///{registry / 'predictions.db'}")
    query = sa.text(
        "select text, emotion, model_version, feedback_label, feedback_source from predictions where id = :id"
    )
    with engine.connect() as connection:
        row = connection.execute(query, {"id": prediction["request_id"]}).one()
    assert tuple(row) == ("i feel lonely and sad", prediction["emotion"], "1", "sadness", "key:default")

    # Each named key is its own source: a label says who gave it.
    vendor = {"x-api-key": VENDOR_KEY}
    relabelled = httpx.post(
        service_url + "/feedback",
        json={"request_id": prediction["request_id"], "label": "fear"},
        headers=vendor,
    )
    assert relabelled.status_code == 200, relabelled.text
    with engine.connect() as connection:
        row = connection.execute(query, {"id": prediction["request_id"]}).one()
    assert (row.feedback_label, row.feedback_source) == ("fear", "key:vendor-a")
    wrong = httpx.post(
        service_url + "/feedback",
        json={"request_id": prediction["request_id"], "label": "joy"},
        headers={"x-api-key": VENDOR_KEY + "x"},
    )
    assert wrong.status_code == 401 and wrong.json()["error"] == "missing or invalid x-api-key header"


def _scrape(url: str) -> dict[str, float]:
    series = {}
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("emotion_"):
            name, _, value = line.rpartition(" ")
            series[name] = float(value)
    return series


def test_every_custom_series_moves(service_url):
    before = _scrape(service_url)
    batch = post(service_url, "/predict_batch", {"texts": ["i feel so happy", "i love and adore you " * 20]})
    prediction = post(service_url, "/predict", {"text": "i am furious"}).json()
    # Right and wrong feedback: the label the model predicted, then another one.
    post(service_url, "/feedback", {"request_id": prediction["request_id"], "label": prediction["emotion"]})
    wrong = next(label for label in ("anger", "joy") if label != batch.json()[0]["emotion"])
    post(service_url, "/feedback", {"request_id": batch.json()[0]["request_id"], "label": wrong})
    # The tiny model's labels are not the point here: check the series of what it predicted.
    predicted = {prediction["emotion"], *(item["emotion"] for item in batch.json())}
    post(service_url, "/predict", {"text": " "})
    after = _scrape(service_url)

    def moved(prefix: str) -> bool:
        return any(value > before.get(name, 0) for name, value in after.items() if name.startswith(prefix))

    for prefix in (
        *(f'emotion_predictions_total{{emotion="{emotion}"' for emotion in sorted(predicted)),
        "emotion_prediction_confidence_count",
        "emotion_input_tokens_count",
        "emotion_truncated_total",
        'emotion_errors_total{type="bad_request"}',
        "emotion_feedback_total",
        "emotion_feedback_correct_total",
    ):
        assert moved(prefix), prefix
    served = [name for name, value in after.items() if name.startswith("emotion_model_info{") and value == 1]
    assert len(served) == 1 and 'model_version="1"' in served[0] and 'alias="champion"' in served[0]
    assert "emotion_prediction_log_queue_depth" in after
    assert "emotion_prediction_log_write_failures_total" in after
    # BentoML's own request metrics stay on.
    assert "bentoml_service_request_total" in httpx.get(service_url + "/metrics").text
