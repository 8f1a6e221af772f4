"""The benchmark end to end on the tiny model with a handful of requests (no timing asserts):
every case runs against real servers and the tables are written."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from bench.servers import PROJECT_ROOT
from core.registry import connect
from core.settings import TrainingSettings
from tests.utils.cli import cli
from training.distill import DistillConfig, distill_and_register


def test_bench_runs_every_case_and_writes_the_tables(registry_copy, monkeypatch):
    # A distilled student waiting as challenger: the bench serves it beside its teacher.
    monkeypatch.setenv("EMOTION_DISTILL_TOLERANCE", "1.0")
    distill_and_register(TrainingSettings(), DistillConfig(layers=1, steps=5), move_champion=False)
    result = cli(
        "bench", "--requests", "6", "--concurrency", "1,2", "--drift-rows", "300", "--ceiling-texts", "64",
        "--seed-size", "2x64",
    )  # fmt: skip
    assert result.exit_code == 0, result.output

    (run,) = [path for path in (registry_copy / "bench").iterdir() if path.is_dir()]
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
            ("bentoml-student", "onnx", "int8"),
            ("baseline-seed-size", "torch", "fp32"),
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
    assert (registry_copy / "bench" / "latest.md").read_text() == table

    # Models side by side: the teacher (champion), its student, and the seeds' size, random.
    models = results["models"]
    assert models["champion"]["shape"] == "2 x 32" and models["compared"]["shape"] == "1 x 32"
    assert models["compared"]["role"] == "student" and models["compared"]["version"] == "2"
    assert models["seed-size"]["shape"] == "2 x 64" and models["seed-size"]["test_accuracy"] is None
    for entry in (models["champion"], models["compared"]):
        assert 0 <= entry["test_accuracy"] <= 1 and entry["texts_per_s"] > 0
    assert all(megabytes > 0 for megabytes in results["rss_mb"].values()) and len(results["rss_mb"]) == 9
    assert "| student (v2) | 1 x 32 | bentoml-student onnx-int8 |" in table
    assert "| seeds' size, random weights | 2 x 64 | baseline-seed-size torch-fp32 |" in table
    assert "Student vs teacher, same run: req/s at 2 clients" in table
    assert "Served to ceiling: the default (onnx-int8) at 2 clients answered" in table
    default = next(
        r
        for r in results["load"]
        if (r["case"], r["precision"], r["concurrency"]) == ("bentoml", "int8", 2) and r["runtime"] == "onnx"
    )
    assert default["model_cpu_ms"] > 0 and "the request path" in table
    # The temporary alias that served the student is gone again.
    client = connect(TrainingSettings())
    assert set(client.get_registered_model("emotion-classifier").aliases) == {"champion", "challenger"}
    assert "results:" in result.output


def test_the_threads_bench_serves_each_layout_side_by_side(registry_copy):
    result = cli("bench", "threads", "--requests", "4", "--concurrency", "1,2", "--layouts", "1x1,1x2:nospin")
    assert result.exit_code == 0, result.output
    (run,) = [path for path in (registry_copy / "bench").iterdir() if path.name.endswith("-threads")]
    results = json.loads((run / "results.json").read_text())
    layouts = {(r["layout"], r["workers"], r["threads_per_worker"], r["spinning"]) for r in results["load"]}
    assert layouts == {("w1-t1", 1, 1, None), ("w1-t2-nospin", 1, 2, False)}
    for row in results["load"]:
        assert row["errors"] == 0 and row["requests"] == 4 and row["rss_mb"] > 0
        assert row["vs_default"] == (1.0 if row["layout"] == "w1-t1" else row["vs_default"]) > 0
    per_core = round(1 / (os.cpu_count() or 1), 2)
    assert f"| w1-t2-nospin | 1 | 2 | off | {per_core} |" in (run / "results.md").read_text()


def test_bench_rejects_bad_options(isolated_env):
    for args, message in [
        (("bench", "--concurrency", "1,x"), "comma-separated whole numbers"),
        (("bench", "--concurrency", "0"), "at least 1"),
        (("bench", "--concurrency", ""), "at least one client count"),
        (("bench", "--seed-size", "6"), "LAYERSxWIDTH"),
        (("bench", "threads", "--layouts", "2x1:fast"), "WORKERSxTHREADS"),
        (("bench", "threads", "--layouts", "0x1"), "at least one worker"),
        (("bench", "threads", "--layouts", "2x1,2x1"), "names 2x1 twice"),
        (("bench", "--seed-size", "6x200"), "does not split into 3 equal heads"),
        (("bench", "path", "--against", "/nowhere"), "/nowhere is not a checkout of this project"),
        (("bench", "path", "--cases", "default,fast"), "unknown case(s) ['fast']"),
    ]:
        result = cli(*args)
        assert result.exit_code == 2 and message in result.output, result.output


def test_the_drift_bench_measures_power_and_false_alarms(
    registry, tiny_data, tiny_base_model, monkeypatch, tmp_path
):
    from tests.utils.factories import write_goemotions

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EMOTION_VAR_DIR", str(registry))
    monkeypatch.setenv("EMOTION_BASE_MODEL", str(tiny_base_model))  # the grid's base encoder
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
    # The label-free accuracy estimate against the true accuracy of each mixed window.
    assert [row["share"] for row in summary["accuracy_estimate"]] == [0.0, 0.05, 0.1, 0.2, 1.0]
    for row in summary["accuracy_estimate"]:
        assert 0 <= row["within_3pt"] <= 1 and row["mean_absolute_error"] >= abs(row["mean_error"]) - 1e-9
    # The grid: every representation (the base encoder's among them) x score x window test.
    grid = summary["grid"]
    assert {row["representation"] for row in grid} >= {
        "tuned last layer",
        "tuned layer mean (served)",
        "base layer mean",
    }
    assert {row["score"] for row in grid} == {"kNN cosine", "Mahalanobis", "relative Mahalanobis"}
    assert {row["test"] for row in grid} == {"binomial 1%", "binomial 2%", "Higher Criticism"}
    assert all(0 <= row["500:0.05"] <= 1 for row in grid)
    markdown = (run / "drift.md").read_text()
    assert "| window rows | Reddit share | flagged |" in markdown and "| representation | score |" in markdown


def test_the_path_bench_measures_each_layer_beside_lean_and_bare_routes(registry_copy, tmp_path):
    # "An earlier commit": a copy of this checkout's code, served from there as the case 'before'.
    before = tmp_path / "before"
    for package in ("core", "service", "monitoring", "training", "emotion_ops"):
        shutil.copytree(
            PROJECT_ROOT / package, before / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    # Its forward metric renamed: the bench then finds none there, which shows the copy served.
    metrics = before / "service" / "metrics.py"
    metrics.write_text(metrics.read_text().replace("emotion_forward_cpu_seconds", "emotion_copy_cpu_seconds"))
    result = cli(
        "bench", "path", "--requests", "20", "--rounds", "1", "--concurrency", "1,2",
        "--cases", "asyncio-h11,no-request-metrics,no-disconnect-watch,lean,bare", "--against", str(before),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (run,) = [path for path in (registry_copy / "bench").iterdir() if path.name.endswith("-path")]
    results = json.loads((run / "results.json").read_text())
    names = ("default", "asyncio-h11", "no-request-metrics", "no-disconnect-watch", "before", "lean", "bare")
    assert {(row["case"], row["concurrency"]) for row in results["load"]} == {
        (name, level) for name in names for level in (1, 2)
    }
    assert results["cases"]["no-request-metrics"] == {"EMOTION_REQUEST_PATH_ABLATION": "request-metrics"}
    assert results["cases"]["asyncio-h11"]["PYTHONPATH"].endswith("hidden")
    assert results["against"] == str(before.resolve())
    for row in results["load"]:
        # Process CPU is counted in clock ticks (10 ms): a few requests may read as none.
        assert row["errors"] == 0 and row["requests"] == 20 and row["server_cpu_ms"] >= 0, row
        assert row["client_cpu_ms"] >= 0
        assert row["vs_ceiling"] is None if row["case"] == "bare" else row["vs_ceiling"] > 0
        # No /metrics of ours (BentoML serves none with its metrics off): the model's share is unknown.
        if row["case"] in ("lean", "bare", "no-request-metrics", "before"):
            assert row["model_cpu_ms"] is None and row["outside_model_cpu_ms"] is None
        else:  # the service's forward passes, from its own /metrics (thread CPU, in ns)
            assert row["model_cpu_ms"] > 0
            outside = row["server_cpu_ms"] - row["model_cpu_ms"]
            assert row["outside_model_cpu_ms"] == pytest.approx(outside, abs=0.002)  # each rounded
    assert all(value > 0 for value in results["validation_us"].values())
    table = (run / "results.md").read_text()
    assert "| case | clients | req/s |" in table and "| parse /predict's body |" in table


def test_the_path_bench_hides_the_fast_loop_and_parser(tmp_path):
    import subprocess
    import sys

    from bench.path import hide_modules

    hidden = hide_modules(tmp_path / "hidden")
    # What uvicorn's "auto" picks (BentoML passes no loop or parser of its own).
    probe = "import uvicorn.protocols.http.auto as http; print(http.AutoHTTPProtocol.__name__)"
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    hid = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(hidden)},
    )  # fmt: skip
    assert shown.stdout.split()[0] == "HttpToolsProtocol"  # installed: what the service runs
    assert hid.stdout.split()[0] == "H11Protocol"
    assert (
        subprocess.run(
            [sys.executable, "-c", "import uvloop"], env={**os.environ, "PYTHONPATH": str(hidden)}
        ).returncode
        != 0
    )


def test_a_row_whose_forward_cpu_went_unread_in_any_turn_states_no_model_share():
    from bench.load import LoadResult
    from bench.servers import Case

    read, unread = (
        LoadResult(Case("default", "onnx", "int8"), 1),
        LoadResult(Case("default", "onnx", "int8"), 1),
    )
    for result, second_turn_model in ((read, 0.2), (unread, None)):
        result.add([5.0] * 10, 0, 1.0)
        result.add_cpu(0.05, 0.03, 0.004)
        result.add([5.0] * 10, 0, 1.0)
        result.add_cpu(0.05, second_turn_model, 0.004)
    assert read.cpu_row()["model_cpu_ms"] == pytest.approx(11.5)  # (0.03 + 0.2) s over 20 requests
    assert unread.cpu_row()["model_cpu_ms"] is None and unread.cpu_row()["outside_model_cpu_ms"] is None
    assert unread.cpu_row()["server_cpu_ms"] == pytest.approx(5.0)  # the server's own still counts
