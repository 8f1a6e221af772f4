"""Start a real server binary from Debian's packages (Pushgateway, Prometheus) on loopback."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from bench.processes import answers, free_port, running_process


@contextmanager
def running_binary(name: str, args: list[str], log_path: Path, package: str, timeout: float = 30.0):
    """Yield the base URL of ``name`` listening on a free loopback port once ``/-/ready`` is 200.

    ``args`` may use ``{address}`` for the ``host:port`` to listen on.
    """
    binary = shutil.which(name)
    if binary is None:
        raise RuntimeError(f"{name} is not installed; run: apt-get install {package}")
    address = f"127.0.0.1:{free_port()}"
    url = f"http://{address}"
    command = [binary, *(arg.format(address=address) for arg in args)]
    with running_process(
        command, dict(os.environ), lambda: answers(f"{url}/-/ready", timeout=1.0), log_path, timeout
    ):
        yield url


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
