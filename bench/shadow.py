"""``emotion-ops bench shadow``: what the shadow costs the service, and what it finds.

The champion served with the shadow off and at each asked share, side by side under the same
interleaved load (the test split's texts, one per request): served req/s and latency against
shadow-off at each client count, then, from each server's own log, how many texts the
challenger scored or skipped, its agreement with the champion and the labels they differ on.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench.load import interleaved_load, ratio
from bench.processes import machine_facts, tree_cpu_seconds, tree_rss_mb
from bench.servers import Case, serve_case
from core.registry import CHALLENGER, CHAMPION, RegistryError, connect, version_by_alias
from core.settings import ServiceSettings
from core.store import Store
from training.data import load_emotion_dataset


def shadow_case(settings: ServiceSettings, share: float) -> Case:
    precision = "int8" if settings.quantize else "fp32"
    return Case(
        f"shadow-{share:g}" if share else "shadow-off", settings.runtime, precision, shadow_share=share
    )


def run(
    settings: ServiceSettings,
    data_source: str,
    shares: tuple[float, ...] = (0.1, 1.0),
    concurrency: tuple[int, ...] = (1, 32),
    requests: int = 1000,
    rounds: int = 4,
    output_root: Path | None = None,
    progress=print,
) -> Path:
    """Shadow off and at each of ``shares``, under the same load; returns the results folder."""
    client, name = connect(settings), settings.model_name
    champion, challenger = (
        version_by_alias(client, name, CHAMPION),
        version_by_alias(client, name, CHALLENGER),
    )
    if champion is None or challenger is None or str(champion.version) == str(challenger.version):
        raise RegistryError(
            f"'{name}' needs a champion and a different challenger for the shadow to score: train one "
            "('emotion-ops train' registers it as challenger)"
        )
    texts = load_emotion_dataset(data_source, splits=("test",)).splits["test"]["text"].tolist()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    output = (output_root or settings.var_dir / "bench") / f"{stamp}-shadow"
    output.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-", dir=output))
    cases = [shadow_case(settings, 0.0), *(shadow_case(settings, share) for share in shares if share > 0)]
    logs = {case: f"sqlite:///{work / f'predictions-{case.name}.db'}" for case in cases}
    loads, cpu_ms = [], {}
    with ExitStack() as servers:
        urls, processes = {}, {}
        for case in cases:
            progress(f"starting {case.name} {case.variant}")
            server, urls[case] = serve_case(settings, work, case, logs[case])
            processes[case] = servers.enter_context(server)
        for level in concurrency:
            progress(f"load at {level} clients, {requests} requests per case in {rounds} interleaved rounds")
            before = {case: tree_cpu_seconds(process) for case, process in processes.items()}
            loads += interleaved_load(urls, texts, level, requests, rounds, progress, settle=_drained)
            sent = requests + min(requests, 2 * level)  # the warm-up's too
            for case, process in processes.items():
                cpu_ms[(case, level)] = (tree_cpu_seconds(process) - before[case]) * 1000 / sent
        memory = {case: tree_rss_mb(process) for case, process in processes.items()}
        skipped = {case.name: _skipped(url) for case, url in urls.items()}
    rows = [
        {
            **result.row(),
            "shadow_share": result.case.shadow_share,
            "cpu_ms_per_request": round(cpu_ms[(result.case, result.concurrency)], 2),
            "rss_mb": memory[result.case],
        }
        for result in loads
    ]
    for row in rows:
        reference = next(r for r in rows if r["shadow_share"] == 0 and r["concurrency"] == row["concurrency"])
        row["vs_off"] = ratio(row["req_per_s"], reference["req_per_s"])
        row["cpu_vs_off"] = ratio(row["cpu_ms_per_request"], reference["cpu_ms_per_request"])
    findings = {}
    for case in cases[1:]:
        summary = Store.open(logs[case]).shadow.summary(name, str(challenger.version), str(champion.version))
        findings[case.name] = {
            "scored": summary["rows"],
            "skipped": skipped.get(case.name, {}),
            "agreement": summary["agreement"],
            "latency_ms": summary["latency_ms"],
            "labels": summary["labels"][:6],
        }
    results = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "model": {"name": name, "champion": str(champion.version), "challenger": str(challenger.version)},
        "served": f"{settings.runtime}-{'int8' if settings.quantize else 'fp32'}",
        "requests_per_case": requests,
        "rounds": rounds,
        "texts": len(texts),
        "load": rows,
        "findings": findings,
    }
    (output / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (output / "results.md").write_text(to_markdown(results))
    shutil.rmtree(work, ignore_errors=True)
    return output


def _drained(url: str, timeout: float = 120.0) -> None:
    """Wait until the server's shadow queue is empty: its backlog is scored in its own turn's
    wake, not in the next case's."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        depth = _metric(url, "emotion_shadow_queue_depth")
        if not depth or sum(depth.values()) <= 0:
            time.sleep(0.6)  # the batch in hand when the queue emptied
            return
        time.sleep(0.2)


def _metric(url: str, name: str) -> dict[str, float]:
    """A metric's samples on the server's /metrics, by their label text."""
    try:
        text = httpx.get(f"{url}/metrics", timeout=10).text
    except httpx.HTTPError:
        return {}
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, _, value = line.rpartition(" ")
            samples[key] = samples.get(key, 0.0) + float(value)
    return samples


def _skipped(url: str) -> dict[str, float]:
    """The server's emotion_shadow_skipped_total by reason, from its /metrics."""
    skipped: dict[str, float] = {}
    for key, value in _metric(url, "emotion_shadow_skipped_total").items():
        reason = key.split('reason="', 1)[1].split('"', 1)[0] if 'reason="' in key else "?"
        skipped[reason] = skipped.get(reason, 0.0) + value
    return skipped


def to_markdown(results: dict) -> str:
    machine, model = results["machine"], results["model"]
    lines = [
        f"Measured {results['measured_at']} on {machine['cpus']} CPUs ({machine['processor']}): champion "
        f"v{model['champion']} served on {results['served']} with challenger v{model['challenger']} in the "
        f"shadow, {results['requests_per_case']} requests per case and client count in {results['rounds']} "
        f"interleaved rounds over {results['texts']} test texts; each turn waits for the shadow's queue "
        "to drain before the next case's. vs off is served req/s against the shadow off; CPU per "
        "request counts every process of the server, the shadow's drain included.",
        "",
        "| case | shadow share | clients | req/s | p50 ms | p95 ms | p99 ms | errors | vs off "
        "| CPU ms per request | CPU vs off | RSS MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in sorted(results["load"], key=lambda r: (r["concurrency"], r["shadow_share"])):
        lines.append(
            f"| {r['case']} | {r['shadow_share']:g} | {r['concurrency']} | {r['req_per_s']} | "
            f"{r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | {r['errors']} | {r['vs_off']}x | "
            f"{r['cpu_ms_per_request']} | {r['cpu_vs_off']}x | {r['rss_mb']} |"
        )
    lines += [
        "",
        "| case | scored | skipped (busy / failed) | agreement | challenger ms per text p50 / p95 "
        "| labels they differ on most |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, found in results["findings"].items():
        skipped = found["skipped"]
        agreement = "n/a" if found["agreement"] is None else f"{found['agreement']:.1%}"
        latency = found["latency_ms"]
        timing = "n/a" if latency["p50"] is None else f"{latency['p50']:.2f} / {latency['p95']:.2f}"
        differ = ", ".join(
            f"{row['label']} ({row['champion_only']} lost, {row['challenger_only']} gained)"
            for row in found["labels"][:3]
            if row["champion_only"] + row["challenger_only"]
        )
        lines.append(
            f"| {name} | {found['scored']} | {skipped.get('busy', 0):g} / {skipped.get('failed', 0):g} | "
            f"{agreement} | {timing} | {differ or 'none'} |"
        )
    return "\n".join(lines) + "\n"
