"""The API document clients generate code from stays what it was unless a change means to
alter it (then the snapshot is rewritten and the diff reviewed: tests/utils/snapshots.py)."""

from __future__ import annotations

import json

import httpx

from tests.utils.snapshots import assert_matches_snapshot


def test_the_served_document_is_the_committed_one(service_url):
    document = httpx.get(service_url + "/docs.json").json()
    assert_matches_snapshot(json.dumps(document, indent=1, sort_keys=True) + "\n", "openapi.json")
