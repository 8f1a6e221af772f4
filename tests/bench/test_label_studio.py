"""The labelling round trip against a real Label Studio on loopback: ``label export`` →
project and tasks imported → annotations → Label Studio's JSON export → ``label import``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.label_studio import round_trip
from tests.monitoring.test_labels import log_rows, stored_labels
from tests.utils.cli import cli
from tests.utils.factories import tiny_rows

REPO_ROOT = Path(__file__).resolve().parents[2]
LABEL_STUDIO = Path(os.environ.get("EMOTION_LABEL_STUDIO", REPO_ROOT / ".venv-label-studio/bin/label-studio"))


@pytest.mark.skipif(not LABEL_STUDIO.exists(), reason="no Label Studio: run 'make label-studio'")
def test_labels_go_through_label_studio_and_come_back_as_feedback(registry_copy, tmp_path):
    rows = tiny_rows(30, seed=81)
    ids = log_rows(rows["text"].tolist())
    truth = dict(zip(ids, rows["label"], strict=True))
    exported = cli("label", "export", "--rows", "8", "--output", str(tmp_path / "out"))
    assert exported.exit_code == 0, exported.output

    chosen = [
        line.split(",")[0].strip('"')
        for line in (tmp_path / "out" / "labels.csv").read_text().splitlines()[1:]
    ]
    answer_key = {request_id: truth[request_id] for request_id in chosen[:6]}  # two left for later
    trip = round_trip(LABEL_STUDIO, tmp_path / "out", answer_key, tmp_path, progress=lambda _: None)
    assert trip.tasks == 8 and trip.annotated == 6

    imported = cli("label", "import", str(trip.export_path), "--operator", "annotator")
    assert imported.exit_code == 0, imported.output
    # Label Studio exports the annotated tasks only: the two left unlabelled are not in the file.
    assert "recorded 6 label(s)" in imported.output and "skipped" not in imported.output
    source = f"import:annotator:{trip.export_path.name}"
    assert stored_labels() == {
        request_id: (label, source, None, None) for request_id, label in answer_key.items()
    }
