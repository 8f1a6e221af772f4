"""Delivery of prediction rows to the store, off the request path.

Rows go into an in-memory queue bounded in rows and in bytes; a background thread inserts them
in batches. When the database is down, the batch is written to a spool file on local disk
(itself bounded in bytes) and replayed once the database answers again. Inserts ignore ids
already present, so a replay after a partial failure never duplicates a row. When the database
answers but refuses a batch, the batch is split until the rows it refuses are found; those go
to a ``rejected/`` file beside the spool, and every other row is written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from core.store.predictions import PredictionStore

log = logging.getLogger(__name__)


def spool_dir_for(root: Path, url: str) -> Path:
    """The spool folder of one store: rows spooled for one database are never replayed into
    another, even when services with different stores share ``root``."""
    import hashlib

    safe_url = sa.engine.make_url(url).render_as_string(hide_password=True)
    return root / hashlib.sha256(safe_url.encode()).hexdigest()[:16]


class PredictionLogWriter:
    """Batches rows into the store from a background thread; spools to disk when it fails.

    Nothing it meets stops it: a failing cycle is logged, counted (``on_error``) and the next
    one runs. Rows it cannot keep at all (the spool is full or the disk refuses) are counted
    (``on_dropped``) and logged, never silently lost.
    """

    def __init__(
        self,
        store: PredictionStore,
        spool_dir: Path,
        max_queue: int = 10_000,
        max_queue_bytes: int = 64_000_000,
        spool_max_bytes: int = 1_000_000_000,
        batch_size: int = 256,
        flush_interval: float = 0.5,
        linger: float = 0.2,
        retry_interval: float = 5.0,
        stale_claim_seconds: float = 600.0,
        on_write_failure: Callable[[int], None] | None = None,
        on_depth: Callable[[int], None] | None = None,
        on_dropped: Callable[[int], None] | None = None,
        on_rejected: Callable[[int], None] | None = None,
        on_spool_bytes: Callable[[int], None] | None = None,
        on_error: Callable[[], None] | None = None,
    ):
        self.store = store
        self.spool_dir = spool_dir
        self.rejected_dir = spool_dir / "rejected"
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self.max_queue_bytes = max_queue_bytes
        self.spool_max_bytes = spool_max_bytes
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.linger = linger
        self.retry_interval = retry_interval
        self.stale_claim_seconds = stale_claim_seconds
        self.on_write_failure = on_write_failure or (lambda rows: None)
        self.on_depth = on_depth or (lambda depth: None)
        self.on_dropped = on_dropped or (lambda rows: None)
        self.on_rejected = on_rejected or (lambda rows: None)
        self.on_spool_bytes = on_spool_bytes or (lambda size: None)
        self.on_error = on_error or (lambda: None)
        # A process that died mid-replay left its claimed file behind: hand it back to the queue
        # of spooled files (a second replay is harmless, inserts skip ids already present). A
        # young claim belongs to a live process (another worker) and is left to it.
        self._reclaim_stale_claims(stale_claim_seconds)
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=max_queue)
        self._queued_bytes = 0
        self._bytes_lock = threading.Lock()
        self._spool_size = self.spool_bytes()
        self._spool_lock = threading.Lock()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._last_retry = 0.0
        self._schema_ready = False
        try:
            self._ensure_schema()
        except Exception as error:  # the database may be down at start; the writer retries
            log.warning("prediction log store unavailable at start: %s", error)
        self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, rows: list[dict[str, Any]]) -> None:
        """Queue rows without blocking; past the row or byte bound they go to the spool."""
        overflow = []
        for row in rows:
            size = _row_bytes(row)
            with self._bytes_lock:
                fits = self._queued_bytes + size <= self.max_queue_bytes
                if fits:
                    self._queued_bytes += size
            if not fits:
                overflow.append(row)
                continue
            try:
                self._queue.put_nowait(row)
            except queue.Full:
                self._release_bytes([row])
                overflow.append(row)
        if overflow:
            self._spool(overflow)
        self._idle.clear()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued so far has been written or spooled."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.empty() and self._idle.is_set():
                return True
            time.sleep(0.01)
        return False

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (spooling whatever the database refuses), then stop."""
        self._stop.set()
        self._thread.join(timeout)
        leftover = self._drain(max_rows=None)
        if leftover:
            self._spool(leftover)

    def spooled_files(self) -> list[Path]:
        return sorted(self.spool_dir.glob("*.jsonl"))

    def rejected_files(self) -> list[Path]:
        return sorted(self.rejected_dir.glob("*.jsonl")) if self.rejected_dir.is_dir() else []

    def spool_bytes(self) -> int:
        """Bytes in the spool folder and its ``rejected/`` folder (a scan: off the request path)."""
        total = 0
        for folder in (self.spool_dir, self.rejected_dir):
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                with contextlib.suppress(FileNotFoundError):  # another process replayed it just now
                    if path.is_file():
                        total += path.stat().st_size
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._cycle()
            except Exception:  # a bug or an unforeseen failure must not end the thread
                log.exception("prediction log writer cycle failed; carrying on")
                self.on_error()
                self._stop.wait(1.0)
        try:
            remaining = self._drain(max_rows=None)
            if remaining:
                self._write(remaining)
        finally:
            self._idle.set()

    def _cycle(self) -> None:
        batch = self._drain(self.batch_size, wait=self.flush_interval, linger=self.linger)
        if batch:
            self._write(batch)
        self.on_depth(self.depth)
        if self._queue.empty():
            self._idle.set()
        if time.monotonic() - self._last_retry >= self.retry_interval:
            self._last_retry = time.monotonic()
            self._reclaim_stale_claims(self.stale_claim_seconds)
            self._replay_spool()
            self._spool_size = self.spool_bytes()
            self.on_spool_bytes(self._spool_size)

    def _drain(self, max_rows: int | None, wait: float = 0.0, linger: float = 0.0) -> list[dict[str, Any]]:
        """Up to ``max_rows`` rows: waits ``wait`` for the first, then ``linger`` for more to
        gather, so a steady trickle becomes a few large transactions instead of one per request
        (each costs the request path's GIL far more than its rows do)."""
        rows = []
        try:
            rows.append(self._queue.get(timeout=wait) if wait else self._queue.get_nowait())
            if linger and self._queue.qsize() < (max_rows or 0):
                self._stop.wait(linger)
            while max_rows is None or len(rows) < max_rows:
                rows.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        self._release_bytes(rows)
        return rows

    def _release_bytes(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            released = sum(_row_bytes(row) for row in rows)
            with self._bytes_lock:
                self._queued_bytes -= released

    def _write(self, rows: list[dict[str, Any]]) -> None:
        try:
            self._insert(rows)
        except Exception as error:
            if self._rows_at_fault(error):  # the database is up and refused these rows: find which
                log.warning("prediction log store refused a batch of %d rows: %s", len(rows), error)
                self._insert_isolating_rejects(rows)
                return
            log.warning("prediction log write failed (%s rows spooled): %s", len(rows), error)
            self.on_write_failure(len(rows))
            self._spool(rows)

    def _rows_at_fault(self, error: Exception) -> bool:
        """True only for an error about the rows themselves (bad data, a constraint, a value
        no driver can encode) while the database answers. Anything else (down, locked, full,
        read-only, a timeout) is the database's: the rows are spooled and replayed later."""
        about_rows = isinstance(error, sa.exc.DataError | sa.exc.IntegrityError) or (
            isinstance(error, sa.exc.StatementError)
            and isinstance(getattr(error, "orig", None), UnicodeError | ValueError | TypeError)
        )
        return about_rows and self.store.answers()

    def _insert(self, rows: list[dict[str, Any]]) -> None:
        self._ensure_schema()
        for start in range(0, len(rows), self.batch_size):
            self.store.insert_many(rows[start : start + self.batch_size])

    def _insert_isolating_rejects(self, rows: list[dict[str, Any]]) -> None:
        """Split the batch until each refused row is alone; write the rest, set those aside.

        A batch with one bad row costs about 2 log2(n) extra inserts, not n.
        """
        if len(rows) == 1:
            try:
                self._insert(rows)
            except Exception as error:
                self._reject(rows, error)
            return
        for half in (rows[: len(rows) // 2], rows[len(rows) // 2 :]):
            try:
                self._insert(half)
            except Exception as error:
                if not self._rows_at_fault(error):  # the database's fault now: keep for replay
                    self.on_write_failure(len(half))
                    self._spool(half)
                    continue
                self._insert_isolating_rejects(half)

    def _reject(self, rows: list[dict[str, Any]], error: Exception) -> None:
        """Set refused rows aside in ``rejected/`` (counted against the spool's limit) for an
        operator; never replayed, since the database would refuse them again."""
        log.error(
            "prediction log store refused row %s; kept in %s: %s", rows[0].get("id"), self.rejected_dir, error
        )
        self.on_rejected(len(rows))
        try:
            with self._spool_lock:
                if self._spool_size >= self.spool_max_bytes:
                    raise OSError(f"the spool holds {self.spool_max_bytes} bytes or more (its limit)")
                self.rejected_dir.mkdir(parents=True, exist_ok=True)
                self._spool_size += self._write_file(
                    self.rejected_dir, [{**row, "_error": str(error)[:500]} for row in rows]
                )
        except Exception as failure:
            log.error("prediction log: %d refused rows dropped, not kept: %s", len(rows), failure)
            self.on_dropped(len(rows))

    def _ensure_schema(self) -> None:
        if not self._schema_ready:
            self.store.create_schema()
            self._schema_ready = True

    def _spool(self, rows: list[dict[str, Any]]) -> None:
        """Keep rows on disk for a later replay; never raises (it runs on the request path when
        the queue is full): rows the spool cannot take are counted as dropped. The size check
        reads a counter (rescanned each cycle by the writer thread), not the folder."""
        try:
            with self._spool_lock:
                if self._spool_size >= self.spool_max_bytes:
                    raise OSError(f"the spool holds {self.spool_max_bytes} bytes or more (its limit)")
                self._spool_size += self._write_file(self.spool_dir, rows)
        except Exception as error:
            log.error("prediction log: %d rows dropped, the spool cannot take them: %s", len(rows), error)
            self.on_dropped(len(rows))

    def _write_file(self, folder: Path, rows: list[dict[str, Any]]) -> int:
        """Write rows as one JSON-lines file; returns its size in bytes."""
        name = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}"
        partial = folder / f"{name}.partial"
        try:
            with partial.open("w", encoding="utf-8") as handle:
                for row in rows:
                    handle.write(json.dumps(row, default=_json_default) + "\n")
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        # Appear complete or not at all: a replaying process never reads a half-written file.
        size = partial.stat().st_size
        partial.rename(folder / f"{name}.jsonl")
        return size

    def _reclaim_stale_claims(self, max_age: float) -> None:
        """Hand back files claimed for replay by a process that died (claims are touched when
        made, so a live replayer's claim is young), and remove half-written files it left."""
        now = time.time()
        for claimed in self.spool_dir.glob("*.replaying-*"):
            with contextlib.suppress(FileNotFoundError):
                if now - claimed.stat().st_mtime >= max_age:
                    claimed.rename(claimed.with_name(claimed.name.split(".replaying-")[0] + ".jsonl"))
        for partial in [*self.spool_dir.glob("*.partial"), *self.rejected_dir.glob("*.partial")]:
            with contextlib.suppress(FileNotFoundError):
                if now - partial.stat().st_mtime >= max(max_age, 60.0):
                    partial.unlink()

    def _replay_spool(self) -> None:
        for path in self.spooled_files():
            # Claim the file first: replicas sharing this folder never replay it twice.
            claimed = path.with_suffix(f".replaying-{uuid.uuid4().hex[:8]}")
            try:
                path.rename(claimed)
                os.utime(claimed)  # the claim's age, for _reclaim_stale_claims
                rows = [_from_json(line) for line in claimed.read_text(encoding="utf-8").splitlines() if line]
            except FileNotFoundError:  # another process claimed it first
                continue
            try:
                self._insert(rows)
            except Exception as error:
                if not self._rows_at_fault(error):  # still down: put the file back for the next retry
                    with contextlib.suppress(FileNotFoundError):
                        claimed.rename(path)
                    log.info("prediction log store still unavailable; spooled rows wait: %s", error)
                    return
                self._insert_isolating_rejects(rows)
            claimed.unlink(missing_ok=True)
            log.info("replayed %d spooled prediction rows from %s", len(rows), path.name)


def _row_bytes(row: dict[str, Any]) -> int:
    # The text dominates a row; the rest is a few hundred bytes.
    return len(row.get("text", "")) + 300


def _json_default(value: object) -> dict[str, str]:
    if isinstance(value, datetime):
        return {"__datetime__": value.isoformat()}
    raise TypeError(f"cannot spool {type(value).__name__}")


def _from_json(line: str) -> dict[str, Any]:
    row: dict[str, Any] = json.loads(line)
    for key, value in row.items():
        if isinstance(value, dict) and "__datetime__" in value:
            row[key] = datetime.fromisoformat(value["__datetime__"])
    return row
