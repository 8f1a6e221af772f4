"""The shadow: while a challenger waits for review, each worker also scores a sampled share of
live traffic with it, and logs what it said beside what the champion answered.

Never on a request's path and never answered to a client: a request only offers its text to a
bounded queue (``offer``, no waiting; a full queue skips the text, counted) and one thread per
worker scores the queue at the lowest CPU priority the system has. When the cores are busy
serving, the shadow gets what is left over and scores less; it never takes a core from an
answer. Framework-free, like ``service.champion``: tested without BentoML.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from core.labels import joined_labels
from core.registry import CHALLENGER, connect, version_by_alias
from core.settings import ServiceSettings
from core.store import ShadowLog
from service.champion import ServedModel, load_served

log = logging.getLogger(__name__)

# Texts per forward pass of the shadow: the batcher's gain, without holding texts for long.
SHADOW_BATCH = 32


def lowest_priority() -> None:
    """Run the calling thread (and the threads it starts) only on otherwise idle CPU."""
    if sys.platform != "linux":
        return  # elsewhere the priority calls act on the whole process, the answers included
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # 0: this thread, on Linux
    except (AttributeError, OSError):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except OSError as error:
            log.warning("the shadow runs at normal priority: %s", error)


class ShadowScorer:
    """Scores offered texts with the waiting challenger of ``settings.model_name`` (re-resolved
    every ``settings.refresh_seconds``) and writes each answer to ``shadow_log``."""

    def __init__(
        self,
        settings: ServiceSettings,
        shadow_log: ShadowLog,
        on_scored: Callable[[str, bool], None] = lambda version, agreed: None,
        on_skipped: Callable[[str, int], None] = lambda reason, count: None,
        on_depth: Callable[[int], None] = lambda depth: None,
    ):
        self.settings = settings
        self.shadow_log = shadow_log
        self.on_scored, self.on_skipped, self.on_depth = on_scored, on_skipped, on_depth
        self.challenger: ServedModel | None = None
        self._queue: queue.Queue[tuple[Any, ...]] = queue.Queue(maxsize=settings.shadow_queue_texts)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self.settings.shadow_share > 0

    def wanted(self) -> bool:
        """Whether to offer the next text: a challenger is waiting and the text is sampled."""
        share = self.settings.shadow_share
        return self.challenger is not None and (share >= 1 or random.random() < share)

    def offer(self, request_id: str, text: str, champion_version: str, champion_answer: str) -> None:
        """Queue one answered text for the challenger; never waits (a full queue skips it)."""
        try:
            self._queue.put_nowait((request_id, text, champion_version, champion_answer, datetime.now(UTC)))
        except queue.Full:
            self.on_skipped("busy", 1)

    def start(self) -> None:
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="shadow", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        lowest_priority()  # before the challenger loads: its runtime's threads inherit it
        client, resolve_at = None, 0.0
        while not self._stop.is_set():
            if time.monotonic() >= resolve_at:
                resolve_at = time.monotonic() + self.settings.refresh_seconds
                try:
                    client = client or connect(self.settings)
                    self._resolve(client)
                except Exception as error:  # a registry hiccup: keep the challenger there is
                    log.warning("shadow: resolving the challenger failed: %s", error)
            batch = self._take()
            if batch and self.challenger is not None:
                try:
                    self._score(self.challenger, batch)
                except Exception as error:
                    log.warning("shadow: scoring %d texts failed: %s", len(batch), error)
                    self.on_skipped("failed", len(batch))
            self.on_depth(self._queue.qsize())

    def _resolve(self, client) -> None:
        name = self.settings.model_name
        waiting = version_by_alias(client, name, CHALLENGER)
        champion = version_by_alias(client, name, self.settings.model_alias)
        # A challenger the gate refused waits for nothing: it is never approved as it stands.
        refused = waiting is not None and (waiting.tags or {}).get("promotion.decision") == "refused"
        if (
            waiting is None
            or refused
            or (champion is not None and str(waiting.version) == str(champion.version))
        ):
            if self.challenger is not None:
                log.info(
                    "shadow: no challenger waits now; stopped scoring version %s", self.challenger.version
                )
            self.challenger = None
            return
        if self.challenger is not None and self.challenger.version == str(waiting.version):
            return
        # One intra-op thread for ONNX Runtime (its own pool, made in this low-priority thread);
        # PyTorch's count is process-wide, so it keeps the service's.
        threads = 1 if self.settings.runtime == "onnx" else None
        self.challenger = load_served(
            client, self.settings, waiting, CHALLENGER, novelty=False, threads=threads
        )
        log.info("shadow: scoring %.0f%% of logged traffic with challenger version %s",
                 self.settings.shadow_share * 100, waiting.version)  # fmt: skip

    def _take(self) -> list[tuple[Any, ...]]:
        try:
            batch = [self._queue.get(timeout=0.5)]
        except queue.Empty:
            return []
        while len(batch) < SHADOW_BATCH:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _score(self, challenger: ServedModel, batch: list[tuple[Any, ...]]) -> None:
        started = time.perf_counter()
        results = challenger.predict([text for _, text, *_ in batch])
        per_text_ms = (time.perf_counter() - started) * 1000 / len(batch)
        rows = []
        for (request_id, _, champion_version, champion_answer, at), (_, result) in zip(
            batch, results, strict=True
        ):
            answer = joined_labels(result.emotions or (result.emotion,))
            rows.append(
                {
                    "id": request_id,
                    "created_at": at,
                    "model_name": challenger.name,
                    "champion_version": champion_version,
                    "challenger_version": challenger.version,
                    "champion_emotion": champion_answer,
                    "challenger_emotion": answer,
                    "challenger_confidence": result.confidence,
                    "challenger_probabilities": result.probabilities,
                    "latency_ms": round(per_text_ms, 3),
                }
            )
        try:
            self.shadow_log.insert_many(rows)
        except Exception as error:  # the store is down: the shadow's figures are a sample anyway
            log.warning("shadow: writing %d answers failed: %s", len(rows), error)
            self.on_skipped("failed", len(rows))
            return
        for row in rows:
            self.on_scored(challenger.version, row["champion_emotion"] == row["challenger_emotion"])
