"""Secure defaults and bounds of the running service: the key, feedback, load shedding, metric
labels, a second service on the same host, and the docs page's own assets."""

from __future__ import annotations

import httpx

from tests.utils.cli import cli
from tests.utils.server import HEADERS, running_service, service_env


def _predicted(url: str, headers: dict | None = None) -> float:
    total = 0.0
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("emotion_predictions_total{"):
            total += float(line.rpartition(" ")[2])
    return total


def test_serve_refuses_to_start_on_an_open_interface_without_a_key(isolated_env, monkeypatch):
    def exec_instead_of_refusing(*args):
        raise AssertionError("serve went on to exec BentoML")

    monkeypatch.setattr("os.execve", exec_instead_of_refusing)  # a regression fails, not hangs
    monkeypatch.setenv("EMOTION_HOST", "0.0.0.0")
    monkeypatch.setenv("EMOTION_API_KEY", "")  # what compose passes for an unset key
    refused = cli("serve")
    assert refused.exit_code == 2
    assert "no API key: set EMOTION_API_KEY" in refused.output and "EMOTION_ALLOW_ANONYMOUS" in refused.output


def test_named_keys_that_could_not_be_told_apart_or_guessed_are_refused_at_start(isolated_env, monkeypatch):
    monkeypatch.setattr("os.execve", lambda *args: (_ for _ in ()).throw(AssertionError("exec'd")))
    monkeypatch.setenv("EMOTION_API_KEY", "the-default-key-0123")
    for keys, message in [
        ('{"vendor a": "0123456789abcdef"}', "the name of key 1 in EMOTION_API_KEYS"),
        ('{"a": "0123456789abcdef", "s3cret-but-tiny": "vendor-b"}', "key 2 in EMOTION_API_KEYS is shorter"),
        ('{"a": "0123456789abcdef", "b": "0123456789abcdef"}', "two names in EMOTION_API_KEYS share one key"),
        ('{"default": "0123456789abcdef"}', "EMOTION_API_KEYS names a key 'default'"),
        ("not json", "EMOTION_API_KEYS is JSON"),
    ]:
        monkeypatch.setenv("EMOTION_API_KEYS", keys)
        refused = cli("serve")
        assert refused.exit_code == 2, refused.output
        assert message in refused.output and "Traceback" not in refused.output
        assert "s3cret" not in refused.output  # a key is never echoed, not even a bad one


def test_a_second_service_on_the_host_keeps_both_metrics_and_sheds_and_bounds(
    service_url, registry, tmp_path
):
    for _ in range(5):
        assert (
            httpx.post(service_url + "/predict", json={"text": "i am glad"}, headers=HEADERS).status_code
            == 200
        )
    before = _predicted(service_url)
    assert before >= 5

    # Anonymous on loopback (the embedded default), with a model queue of one text.
    env = {
        **service_env(registry, EMOTION_BATCH_QUEUE_LIMIT="1"),
        "EMOTION_API_KEY": "",
        "EMOTION_API_KEYS": "",
    }
    with running_service(env, tmp_path / "second.log") as second:
        for _ in range(10):
            assert (
                httpx.post(service_url + "/predict", json={"text": "i am glad"}, headers=HEADERS).status_code
                == 200
            )
        # The first service's counters were not blanked by the second one's start.
        assert _predicted(service_url) == before + 10
        assert httpx.post(second + "/predict", json={"text": "i am glad"}).status_code == 200
        assert _predicted(second) == 1

        # Feedback trains models: without a key on the service it is refused.
        feedback = httpx.post(second + "/feedback", json={"request_id": "x", "label": "joy"})
        assert feedback.status_code == 403 and "EMOTION_API_KEY" in feedback.json()["error"]

        # Past the model's queue limit: 503 with Retry-After, a JSON error, no computing.
        shed = httpx.post(second + "/predict_batch", json={"texts": ["a", "b"]})
        assert shed.status_code == 503 and shed.headers["retry-after"] == "1"
        assert "queued" in shed.json()["error"]
        assert "emotion_shed_texts_total 2.0" in httpx.get(second + "/metrics").text

        # Unknown paths do not create new metric series.
        for index in range(20):
            assert httpx.get(f"{second}/x{index}").status_code == 404
        metrics = httpx.get(second + "/metrics").text
        assert 'endpoint="/x1"' not in metrics and 'endpoint="other"' in metrics


def test_the_docs_page_loads_only_the_services_own_assets(service_url):
    page = httpx.get(service_url + "/")
    assert page.status_code == 200
    assert "googletagmanager" not in page.text and "https://" not in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    for asset in ("/static_content/swagger-ui-bundle.js", "/static_content/swagger-ui.css", "/docs/init.js"):
        assert httpx.get(service_url + asset).status_code == 200
    assert "validatorUrl: null" in httpx.get(service_url + "/docs/init.js").text
    document = httpx.get(service_url + "/docs.json").json()
    assert "shields.io" not in str(document) and document["info"]["title"] == "emotion-ops"
