"""Start a real server binary from Debian's packages (Pushgateway, Prometheus) on loopback."""

from __future__ import annotations

import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.utils.server import free_port


@contextmanager
def running_binary(name: str, args: list[str], log_path: Path, package: str, timeout: float = 30.0):
    """Yield the base URL of ``name`` listening on a free loopback port once ``/-/ready`` is 200.

    ``args`` may use ``{address}`` for the ``host:port`` to listen on.
    """
    binary = shutil.which(name)
    if binary is None:
        raise RuntimeError(f"{name} is not installed; run: apt-get install {package}")
    address = f"127.0.0.1:{free_port()}"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [binary, *(arg.format(address=address) for arg in args)], stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://{address}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {process.returncode}:\n{log_path.read_text()[-3000:]}"
                )
            try:
                if httpx.get(f"{url}/-/ready", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready after {timeout:.0f} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def running_pushgateway(folder: Path):
    with running_binary(
        "prometheus-pushgateway",
        ["--web.listen-address={address}", f"--persistence.file={folder / 'pushgateway.data'}"],
        folder / "pushgateway.log",
        package="prometheus-pushgateway",
    ) as url:
        yield url


@contextmanager
def running_prometheus(config: Path, folder: Path):
    with running_binary(
        "prometheus",
        [
            f"--config.file={config}",
            f"--storage.tsdb.path={folder / 'tsdb'}",
            "--web.listen-address={address}",
        ],
        folder / "prometheus.log",
        package="prometheus",
        timeout=60,
    ) as url:
        yield url
