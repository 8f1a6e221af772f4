"""The labelling round trip against a real Label Studio (run by tests/bench/test_label_studio.py).

A Label Studio server (its own virtual environment: ``make label-studio``; it pins Django and
much else) is started on loopback with a fresh data folder, and then, as an operator would:
``emotion-ops label export`` writes the rows worth a label; a project is made with the exported
``label_config.xml``; ``tasks.json`` is imported; every task gets an annotation (here from a
given answer key, standing in for the human); the project is exported as Label Studio JSON; and
``emotion-ops label import`` records that export as feedback. The labels in the store are then
compared with the annotations.

Label Studio 1.23 turns legacy API tokens off: the script logs in once (as the web page does)
to create a personal access token, and calls the API with it from then on.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.processes import answers, free_port, running_process


@dataclass(frozen=True)
class RoundTrip:
    tasks: int
    annotated: int
    export_path: Path
    seconds: dict[str, float]


class LabelStudio:
    """A client of one Label Studio server, authenticated with a personal access token."""

    def __init__(self, url: str, email: str, password: str):
        self.url = url
        with httpx.Client(base_url=url, follow_redirects=True, timeout=60) as session:
            session.get("/user/login/")
            login = session.post(
                "/user/login/",
                data={
                    "email": email,
                    "password": password,
                    "csrfmiddlewaretoken": session.cookies["csrftoken"],
                },
                headers={"Referer": f"{url}/user/login/"},
            )
            login.raise_for_status()
            created = session.post(
                "/api/token/", headers={"X-CSRFToken": session.cookies["csrftoken"], "Referer": f"{url}/"}
            )
            if created.status_code != 201:
                raise RuntimeError(
                    f"Label Studio gave no access token ({created.status_code}): {created.text}"
                )
            refresh = created.json()["token"]
        access = httpx.post(f"{url}/api/token/refresh", json={"refresh": refresh}, timeout=60)
        access.raise_for_status()
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {access.json()['access']}"}, timeout=120
        )

    def call(self, method: str, path: str, **kwargs) -> httpx.Response:
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise RuntimeError(f"Label Studio {method} {path}: {response.status_code} {response.text[:500]}")
        return response

    def create_project(self, title: str, label_config: str) -> int:
        return self.call("POST", "/api/projects", json={"title": title, "label_config": label_config}).json()[
            "id"
        ]

    def import_tasks(self, project: int, tasks: list[dict]) -> None:
        self.call("POST", f"/api/projects/{project}/import", json=tasks)

    def tasks(self, project: int) -> list[dict]:
        found: list[dict[str, Any]] = []
        page = 1
        while True:
            response = self.http.get(
                "/api/tasks", params={"project": project, "page": page, "page_size": 100}
            )
            if response.status_code == 404:  # past the last page
                return found
            batch = response.json()
            batch = batch.get("tasks", batch) if isinstance(batch, dict) else batch
            if not batch:
                return found
            found += batch
            page += 1

    def annotate(self, task: int, choices: list[str]) -> None:
        result = [
            {"from_name": "emotion", "to_name": "text", "type": "choices", "value": {"choices": choices}}
        ]
        self.call("POST", f"/api/tasks/{task}/annotations", json={"result": result})

    def export(self, project: int) -> list[dict]:
        return self.call("GET", f"/api/projects/{project}/export", params={"exportType": "JSON"}).json()


def round_trip(
    label_studio: Path, export_folder: Path, answer_key: dict[str, str], work: Path, progress=print
) -> RoundTrip:
    """Start Label Studio, import ``export_folder`` (``label export``'s tasks.json and
    label_config.xml), annotate each task from ``answer_key`` (request id -> label) and export
    the project to ``work``/label-studio-export.json."""
    seconds: dict[str, float] = {}
    port, password = free_port(), secrets.token_urlsafe(16)
    email = "operator@example.com"
    data_dir = work / "label-studio-data"
    env = {
        "PATH": str(label_studio.parent) + ":/usr/bin:/bin",
        "HOME": str(work),
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "LABEL_STUDIO_USERNAME": email,
        "LABEL_STUDIO_PASSWORD": password,
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        "SENTRY_DSN": "",
        "COLLECT_ANALYTICS": "false",
    }
    command = [
        str(label_studio),
        "start",
        "--no-browser",
        "--internal-host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
    ]
    url = f"http://127.0.0.1:{port}"
    clock = time.perf_counter()
    progress(f"label studio: starting {label_studio} on {url}")
    with running_process(command, env, lambda: answers(f"{url}/health"), work / "label-studio.log", 600):
        seconds["start Label Studio"] = time.perf_counter() - clock
        clock = time.perf_counter()
        client = LabelStudio(url, email, password)
        project = client.create_project(
            "emotion-ops labels", (export_folder / "label_config.xml").read_text()
        )
        client.import_tasks(project, json.loads((export_folder / "tasks.json").read_text()))
        tasks = client.tasks(project)
        seconds["project + task import"] = time.perf_counter() - clock
        clock = time.perf_counter()
        annotated = 0
        for task in tasks:
            label = answer_key.get(task["data"]["request_id"])
            if label:
                client.annotate(task["id"], label.split(","))
                annotated += 1
        seconds["annotate"] = time.perf_counter() - clock
        clock = time.perf_counter()
        exported = client.export(project)
        seconds["export"] = time.perf_counter() - clock
    path = work / "label-studio-export.json"
    path.write_text(json.dumps(exported, indent=1))
    progress(f"label studio: {len(tasks)} tasks imported, {annotated} annotated, exported to {path}")
    return RoundTrip(tasks=len(tasks), annotated=annotated, export_path=path, seconds=seconds)
