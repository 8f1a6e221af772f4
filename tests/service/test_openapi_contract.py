"""The API document is the contract: schemathesis runs every check it has against the running
service (with the API key, as clients send it) and finds nothing."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx

from tests.utils.server import API_KEY

CONFIG = Path(__file__).with_name("schemathesis.toml")


def test_schemathesis_finds_no_failure_with_every_check(service_url, tmp_path):
    st = Path(sys.executable).with_name("st")
    command = [
        str(st),
        "--config-file",
        str(CONFIG),
        "run",
        f"{service_url}/docs.json",
        "--checks",
        "all",
        "--header",
        f"x-api-key: {API_KEY}",
        "--max-examples",
        "40",
        "--generation-deterministic",
        "--no-color",
    ]
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    summary = run.stdout[-12000:]  # the failures with their curl lines, and the summary
    assert run.returncode == 0, summary
    assert " passed" in summary and "failures" not in summary.split("SUMMARY")[-1], summary


def test_the_document_declares_the_key_errors_and_the_served_labels(service_url):
    document = httpx.get(service_url + "/docs.json").json()
    assert document["components"]["securitySchemes"]["ApiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
    }
    predict = document["paths"]["/predict"]["post"]
    assert {"200", "400", "401", "413", "415", "503"} <= set(predict["responses"])
    assert predict["requestBody"]["required"] is True
    text = predict["requestBody"]["content"]["application/json"]["schema"]["properties"]["text"]
    assert text["maxLength"] == 2000
    # Blank by Python's rules or by JSON Schema's: the pattern refuses both.
    for blank, valid in (
        ("  \t", False),
        ("\x1c", False),
        ("\ufeff", False),
        ("\u3000", False),
        (" a", True),
    ):
        assert bool(re.search(text["pattern"], blank)) is valid
    assert "Retry-After" in predict["responses"]["503"]["headers"]
    feedback = document["components"]["schemas"]["Feedback"]["properties"]["label"]
    assert feedback["enum"] == ["anger", "fear", "joy", "love", "sadness", "surprise"]
    assert "422" not in document["paths"]["/feedback"]["post"]["responses"]
