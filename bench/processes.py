"""Start a server process on loopback and wait until it is ready; stop its whole process group
afterwards; measure its memory and name the machine. Used by the benchmarks (and the tests) to
run real servers side by side."""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(url: str, headers: dict | None = None, timeout: float = 5.0) -> bool:
    try:
        return httpx.get(url, headers=headers or {}, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def bentoml_ready(url: str, api_key: str | None = None) -> Callable[[], bool]:
    """/readyz can answer before the model service behind it has loaded: ask /labels too."""
    headers = {"x-api-key": api_key} if api_key else {}
    return lambda: answers(f"{url}/readyz", timeout=2.0) and answers(f"{url}/labels", headers, 10.0)


@contextmanager
def running_process(
    command: list[str],
    env: dict[str, str],
    ready: Callable[[], bool],
    log_path: Path,
    timeout: float = 180.0,
    cwd: Path | None = None,
):
    """Yield the process once ``ready()`` is true; SIGTERM (then SIGKILL) its group afterwards."""
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + timeout
        name = Path(command[0]).name
        while not ready():
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {process.returncode}:\n{log_path.read_text()[-4000:]}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready after {timeout:.0f} s:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.5)
        yield process
    finally:
        # SIGTERM first: the service flushes its prediction log before exiting. The group may
        # be gone already (a caller stopped it).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def processor_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_facts() -> dict:
    """What every benchmark's results name the machine by."""
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": processor_name(),
    }


def tree_cpu_seconds(process) -> float:
    """User and system CPU of a server and every process it started, so far."""
    import psutil

    total = 0.0
    try:
        root = psutil.Process(process.pid)
        for member in [root, *root.children(recursive=True)]:
            try:
                times = member.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                continue
    except psutil.NoSuchProcess:
        pass
    return total


def tree_rss_mb(process) -> float:
    """Resident memory of a server and every process it started (BentoML's workers)."""
    import psutil

    try:
        root = psutil.Process(process.pid)
        members = [root, *root.children(recursive=True)]
        total = 0
        for member in members:
            try:
                total += member.memory_info().rss
            except psutil.NoSuchProcess:
                continue
    except psutil.NoSuchProcess:
        return float("nan")
    return round(total / 2**20, 1)
