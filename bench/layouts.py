"""``emotion-ops bench threads``: the champion served in several process and thread layouts
(workers, intra-op threads per worker, ONNX Runtime's spinning) side by side under the same
interleaved load: what the service's defaults rest on."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from bench.load import ratio, serve_and_load
from bench.models import model_shape
from bench.processes import machine_facts
from bench.servers import Case, serve_case
from core.registry import connect, load_bundle
from core.settings import ServiceSettings
from training.data import load_emotion_dataset

# (workers, intra-op threads per worker, ONNX Runtime spinning); the first is the default. A
# pool of one thread has nobody to spin, so spinning is only varied with two or more.
LAYOUTS: tuple[tuple[int, int, bool | None], ...] = (
    (2, 1, None),
    (1, 2, True),
    (1, 2, False),
    (2, 2, True),
    (2, 2, False),
    (4, 1, None),
)


def parse_layouts(value: str) -> tuple[tuple[int, int, bool | None], ...]:
    """``--layouts``: comma-separated WORKERSxTHREADS[:spin|:nospin], each named once."""
    parsed: list[tuple[int, int, bool | None]] = []
    for part in (part.strip() for part in value.split(",") if part.strip()):
        shape, _, spin = part.partition(":")
        workers, _, threads = shape.lower().partition("x")
        if not (workers.isdigit() and threads.isdigit()) or spin not in ("", "spin", "nospin"):
            raise ValueError(
                f"--layouts takes WORKERSxTHREADS[:spin|:nospin] such as 2x1 or 1x2:nospin, not '{part}'"
            )
        if int(workers) < 1 or int(threads) < 1:
            raise ValueError(f"--layouts needs at least one worker and one thread, not '{part}'")
        layout = (int(workers), int(threads), None if not spin else spin == "spin")
        if layout in parsed:
            raise ValueError(f"--layouts names {part} twice")
        parsed.append(layout)
    if not parsed:
        raise ValueError("--layouts needs at least one layout")
    return tuple(parsed)


def layout_case(settings: ServiceSettings, workers: int, threads: int, spinning: bool | None) -> Case:
    precision = "int8" if settings.quantize else "fp32"
    spin = "" if spinning is None else ("-spin" if spinning else "-nospin")
    return Case(
        f"w{workers}-t{threads}{spin}",
        settings.runtime,
        precision,
        workers=workers,
        threads=threads,
        spinning=spinning,
    )


def run_layouts(
    settings: ServiceSettings,
    data_source: str,
    layouts: tuple[tuple[int, int, bool | None], ...] = LAYOUTS,
    concurrency: tuple[int, ...] = (1, 32),
    requests: int = 1000,
    rounds: int = 4,
    output_root: Path | None = None,
    progress=print,
) -> Path:
    """The champion on the default runtime and precision in each process and thread layout,
    side by side under the same interleaved load; returns the folder with results.json and .md."""
    bundle = load_bundle(connect(settings), settings)
    texts = load_emotion_dataset(data_source, splits=("test",)).splits["test"]["text"].tolist()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    output = (output_root or settings.var_dir / "bench") / f"{stamp}-threads"
    output.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-", dir=output))
    cases = [layout_case(settings, *layout) for layout in layouts]
    loads, memory = serve_and_load(
        cases, lambda case: serve_case(settings, work, case), texts, concurrency, requests, rounds, progress
    )
    rss = {case.name: megabytes for case, megabytes in memory.items()}
    cores = os.cpu_count() or 1
    rows = []
    for result in loads:
        case = result.case
        rows.append(
            {
                **result.row(),
                "layout": case.name,
                "workers": case.workers,
                "threads_per_worker": case.threads,
                "spinning": case.spinning,
                "workers_per_core": round(case.workers / cores, 2),
                "rss_mb": rss[case.name],
            }
        )
    default = cases[0].name
    for row in rows:
        reference = next(r for r in rows if r["layout"] == default and r["concurrency"] == row["concurrency"])
        row["vs_default"] = ratio(row["req_per_s"], reference["req_per_s"])
    results = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "model": {"name": bundle.name, "version": bundle.version, "shape": model_shape(bundle.model_dir)},
        "served": f"{settings.runtime}-{'int8' if settings.quantize else 'fp32'}",
        "requests_per_case": requests,
        "rounds": rounds,
        "default_layout": default,
        "load": rows,
    }
    (output / "results.json").write_text(json.dumps(results, indent=2))
    (output / "results.md").write_text(layouts_markdown(results))
    shutil.rmtree(work, ignore_errors=True)
    return output


def layouts_markdown(results: dict) -> str:
    machine = results["machine"]
    lines = [
        f"Measured {results['measured_at']} on {machine['cpus']} CPUs ({machine['processor']}), model "
        f"{results['model']['name']} v{results['model']['version']} ({results['model']['shape']}) on "
        f"{results['served']}, {results['requests_per_case']} requests per layout and client count in "
        f"{results['rounds']} interleaved rounds; vs default is against {results['default_layout']}.",
        "",
        "| layout | workers | threads per worker | spinning | workers per core | clients | req/s | p50 ms "
        "| p95 ms | p99 ms | errors | vs default | RSS MB |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in sorted(results["load"], key=lambda r: r["concurrency"]):
        spinning = "n/a" if r["spinning"] is None else ("on" if r["spinning"] else "off")
        lines.append(
            f"| {r['layout']} | {r['workers']} | {r['threads_per_worker']} | {spinning} | "
            f"{r['workers_per_core']} | {r['concurrency']} | {r['req_per_s']} | {r['p50_ms']} | "
            f"{r['p95_ms']} | {r['p99_ms']} | {r['errors']} | {r['vs_default']}x | {r['rss_mb']} |"
        )
    return "\n".join(lines) + "\n"
