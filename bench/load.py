"""Closed-loop load on loopback servers, and what it measured.

``concurrency`` clients, each sending its next request when the last one is answered, one text
per request, a bounded number of requests per case. All servers run side by side and the cases
take turns in rounds, so drift in the machine's speed hits them alike.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import ExitStack
from dataclasses import dataclass, field

import numpy as np

from bench.processes import tree_cpu_seconds, tree_rss_mb
from bench.servers import Case


@dataclass
class LoadResult:
    case: Case
    concurrency: int
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    # CPU seconds over the turns (``interleaved_load``'s ``meters``): the server's processes,
    # its forward passes (None where the server does not say), the load client's.
    server_cpu_s: float | None = None
    model_cpu_s: float | None = None
    client_cpu_s: float = 0.0
    cpu_turns: int = 0
    model_cpu_turns: int = 0  # turns whose forward CPU was read: a row's model CPU needs all

    def add(self, latencies: list[float], errors: int, seconds: float) -> None:
        self.requests += len(latencies) + errors
        self.errors += errors
        self.seconds += seconds
        self.latencies_ms.extend(latencies)

    def add_cpu(self, server: float, model: float | None, client: float) -> None:
        self.server_cpu_s = (self.server_cpu_s or 0.0) + server
        self.cpu_turns += 1
        if model is not None:  # a failed /metrics read: the row's model share is unknown, not less
            self.model_cpu_s = (self.model_cpu_s or 0.0) + model
            self.model_cpu_turns += 1
        self.client_cpu_s += client

    @property
    def throughput(self) -> float:
        return (self.requests - self.errors) / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    def row(self) -> dict:
        return {
            "case": self.case.name,
            "model": self.case.model,
            "runtime": self.case.runtime,
            "precision": self.case.precision,
            "concurrency": self.concurrency,
            "requests": self.requests,
            "errors": self.errors,
            "req_per_s": round(self.throughput, 1),
            "texts_per_s": round(self.throughput, 1),  # one text per request
            "p50_ms": round(self.percentile(50), 1),
            "p95_ms": round(self.percentile(95), 1),
            "p99_ms": round(self.percentile(99), 1),
            **self.cpu_row(),
        }

    def cpu_row(self) -> dict:
        """CPU ms per answered request: the server's, its model's, the rest (the request path)."""
        if self.server_cpu_s is None or self.requests == self.errors:
            return {}
        per = 1000 / (self.requests - self.errors)
        server = self.server_cpu_s * per
        known = self.model_cpu_s is not None and self.model_cpu_turns == self.cpu_turns
        model = self.model_cpu_s * per if known and self.model_cpu_s is not None else None
        return {
            "server_cpu_ms": round(server, 3),
            "model_cpu_ms": None if model is None else round(model, 3),
            "outside_model_cpu_ms": None if model is None else round(server - model, 3),
            "client_cpu_ms": round(self.client_cpu_s * per, 3),
        }


async def closed_loop(url: str, texts: list[str], concurrency: int, requests: int, offset: int = 0) -> tuple:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    counter = iter(range(offset, offset + requests))
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def client() -> None:
            nonlocal errors
            for index in counter:
                started = time.perf_counter()
                try:
                    async with session.post(url, json={"text": texts[index % len(texts)]}) as response:
                        await response.read()
                        ok = response.status == 200
                except aiohttp.ClientError:
                    ok = False
                if ok:
                    latencies.append((time.perf_counter() - started) * 1000)
                else:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return latencies, errors, time.perf_counter() - started


def interleaved_load(
    urls: dict[Case, str],
    texts: list[str],
    concurrency: int,
    requests: int,
    rounds: int,
    progress=print,
    settle=None,
    meters=None,
) -> list[LoadResult]:
    """``requests`` per case at ``concurrency`` clients, in ``rounds`` rounds that take the cases in
    turn: a machine that slows down or speeds up mid-run (2 shared cores) then affects every case
    alike instead of whichever ran at that moment. Every case gets a short warm-up first (lazy
    imports, allocator growth, both workers' first forwards). ``settle(url)`` runs after each
    turn, before the next case's: a server that works on after its answers (the shadow) must not
    take that work into another case's turn. ``meters[case]`` (a ``CpuMeter``), where given,
    measures the server's CPU over each turn, with the load client's own."""
    for url in urls.values():
        asyncio.run(closed_loop(f"{url}/predict", texts, concurrency, min(requests, 2 * concurrency)))
        if settle is not None:
            settle(url)
    results = {case: LoadResult(case, concurrency) for case in urls}
    per_round = [requests // rounds + (index < requests % rounds) for index in range(rounds)]
    sent = 0
    for count in per_round:
        for case, url in urls.items():
            meter = (meters or {}).get(case)
            if meter is not None:
                meter.begin()
            client_before = time.process_time()
            results[case].add(*asyncio.run(closed_loop(f"{url}/predict", texts, concurrency, count, sent)))
            client = time.process_time() - client_before  # before the meter's own /metrics read
            if meter is not None:
                server, model = meter.end()
                results[case].add_cpu(server, model, client)
            if settle is not None:
                settle(url)
        sent += count
    for result in results.values():
        progress(f"  c={concurrency} {result.case.name} {result.case.variant}: {result.row()}")
    return list(results.values())


class CpuMeter:
    """A server's CPU over one turn: every process of its tree (``tree_cpu_seconds``), and its
    forward passes where its /metrics has ``emotion_forward_cpu_seconds_total`` (our service).
    /metrics is read before the turn's tree reading and after its last one, so neither read's
    own cost lands in the turn."""

    def __init__(self, process, url: str) -> None:
        self.process, self.url = process, url
        self._tree = 0.0
        self._model: float | None = None

    def begin(self) -> None:
        self._model = self._forward_cpu()
        self._tree = tree_cpu_seconds(self.process)

    def end(self) -> tuple[float, float | None]:
        tree = tree_cpu_seconds(self.process) - self._tree
        model = self._forward_cpu()
        return tree, None if model is None or self._model is None else model - self._model

    def _forward_cpu(self) -> float | None:
        import httpx
        from prometheus_client.parser import text_string_to_metric_families

        try:
            response = httpx.get(f"{self.url}/metrics", timeout=10)
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                if sample.name == "emotion_forward_cpu_seconds_total":
                    return float(sample.value)
        return None


def serve_and_load(
    cases, start, texts, concurrency, requests: int, rounds: int, progress, before_stopping=None
):
    """Start every case's server (``start(case)`` gives its context manager and URL), put them
    under the interleaved load at each client count, and measure each server's memory after
    it; returns the load results and RSS MB by case. Every server is stopped on the way out,
    after ``before_stopping()`` (a last read of the running servers)."""
    loads: list[LoadResult] = []
    with ExitStack() as servers:
        urls, processes = {}, {}
        for case in cases:
            progress(f"starting {case.name} {case.variant}")
            server, url = start(case)
            processes[case] = servers.enter_context(server)
            urls[case] = url
        for level in concurrency:
            progress(f"load at {level} clients, {requests} requests per case in {rounds} interleaved rounds")
            meters = {case: CpuMeter(processes[case], urls[case]) for case in cases}
            loads += interleaved_load(urls, texts, level, requests, rounds, progress, meters=meters)
        memory = {case: tree_rss_mb(process) for case, process in processes.items()}
        if before_stopping is not None:
            before_stopping()
        return loads, memory


def ratio(value: float, reference: float) -> float:
    """Three significant digits: a tiny test model's ceiling is thousands of times its served
    rate, and a fixed number of decimals would round that ratio to zero."""
    return float(f"{value / reference:.3g}") if reference else float("nan")
