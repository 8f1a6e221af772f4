"""Compare a text with its committed snapshot (``tests/snapshots/``); with
``EMOTION_UPDATE_SNAPSHOTS=1`` the snapshot is rewritten instead, for a change that means to
alter it (review the diff before committing it)."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

SNAPSHOTS = Path(__file__).resolve().parents[1] / "snapshots"


def assert_matches_snapshot(text: str, name: str) -> None:
    path = SNAPSHOTS / name
    if os.environ.get("EMOTION_UPDATE_SNAPSHOTS") == "1":
        path.write_text(text, encoding="utf-8")
        return
    expected = path.read_text(encoding="utf-8")
    if text != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True), text.splitlines(keepends=True), str(path), "now"
            )
        )
        raise AssertionError(f"{name} differs from its snapshot:\n{diff[:6000]}")
