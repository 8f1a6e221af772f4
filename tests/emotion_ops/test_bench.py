"""The benchmark end to end on the tiny model with a handful of requests (no timing asserts):
every case runs against real servers and the tables are written."""

from __future__ import annotations

import json

from tests.utils.cli import cli


def test_bench_runs_every_case_and_writes_the_tables(registry, tiny_data, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EMOTION_VAR_DIR", str(registry))
    monkeypatch.setenv("EMOTION_DATA_DIR", str(tiny_data))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = cli(
        "bench", "--requests", "6", "--concurrency", "1,2", "--drift-rows", "300", "--ceiling-texts", "64"
    )
    assert result.exit_code == 0, result.output

    (run,) = [path for path in (registry / "bench").iterdir() if path.is_dir()]
    results = json.loads((run / "results.json").read_text())
    assert set(results["compute_ceiling"]) == {"torch-fp32", "torch-int8", "onnx-fp32", "onnx-int8"}
    assert all(
        c["texts_per_s"] > 0 and 0 <= c["test_accuracy"] <= 1 for c in results["compute_ceiling"].values()
    )
    assert results["served"] == "onnx-int8"  # the defaults
    cases = {(row["case"], row["runtime"], row["precision"], row["concurrency"]) for row in results["load"]}
    assert cases == {
        (case, runtime, precision, level)
        for case, runtime, precision in (
            ("baseline", "torch", "fp32"),
            ("bentoml", "torch", "fp32"),
            ("bentoml", "torch", "int8"),
            ("bentoml", "onnx", "fp32"),
            ("bentoml", "onnx", "int8"),
            ("bentoml-no-monitoring", "onnx", "int8"),
            ("bentoml-no-novelty", "onnx", "int8"),
        )
        for level in (1, 2)
    }
    for row in results["load"]:
        assert row["errors"] == 0 and row["requests"] == 6 and row["req_per_s"] > 0, result.output
        assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
        assert row["vs_baseline"] > 0 and row["vs_ceiling"] > 0
    for row in results["load"]:
        served = (row["runtime"], row["precision"]) == ("onnx", "int8")
        if row["case"] == "bentoml":  # an overhead exactly where the same model ran without monitoring
            assert (row["monitoring_overhead"] is not None) == served
            assert (row["novelty_cost"] is not None) == served
    (drift,) = results["drift"]
    assert drift["rows"] == 300 and drift["analysed_rows"] == 300 and drift["seconds"] > 0
    assert drift["torch_loaded"] is False  # its peak memory is the drift job's own
    table = (run / "results.md").read_text()
    assert "| case | runtime | precision | clients |" in table and "drift job" in table
    assert (registry / "bench" / "latest.md").read_text() == table
    assert "results:" in result.output


def test_bench_rejects_bad_options(isolated_env):
    for args, message in [
        (("bench", "--concurrency", "1,x"), "comma-separated whole numbers"),
        (("bench", "--concurrency", "0"), "at least 1"),
        (("bench", "--concurrency", ""), "at least one client count"),
    ]:
        result = cli(*args)
        assert result.exit_code == 2 and message in result.output, result.output


def test_the_drift_bench_measures_power_and_false_alarms(registry, tiny_data, monkeypatch, tmp_path):
    from tests.utils.factories import write_goemotions

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EMOTION_VAR_DIR", str(registry))
    goemotions = write_goemotions(tmp_path / "goemotions")
    result = cli(
        "bench", "drift", "--windows", "100", "--data", str(tiny_data), "--goemotions", str(goemotions)
    )
    assert result.exit_code == 0, result.output
    (run,) = [path for path in (registry / "bench").iterdir() if (path / "drift.json").is_file()]
    summary = json.loads((run / "drift.json").read_text())
    assert summary["windows_per_case"] == 100 and summary["false_alarm_rate"] == 0.01
    assert [(row["rows"], row["share"]) for row in summary["power"]] == [
        (size, share) for size in (100, 500) for share in (0.05, 0.1, 0.2, 1.0)
    ]
    assert [row["rows"] for row in summary["false_alarms"]] == [100, 500]
    assert {row["emotion"] for row in summary["label_shift"]} == {"anger", "love"}
    for row in summary["power"] + summary["false_alarms"] + summary["label_shift"]:
        low, high = row["interval"]
        assert 0 <= low <= row["flagged"] <= high <= 1
        assert row["flagged"] >= max(row["by_novelty"], row["by_label_mix"])
    assert summary["ms_per_window_judged"] > 0
    assert "| window rows | Reddit share | flagged |" in (run / "drift.md").read_text()
