"""MLflow tracking and Model Registry access shared by training, promotion and serving.

Models are addressed by alias (``challenger``, ``champion``), never by registry stage.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import mlflow
from filelock import FileLock
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from core.artifact import ModelBundle
from core.settings import CoreSettings

CHALLENGER = "challenger"
CHAMPION = "champion"


class RegistryError(RuntimeError):
    """The registry lacks what was asked for; the message says what to do."""


def connect(settings: CoreSettings) -> MlflowClient:
    """Point MLflow at the configured tracking and registry stores and return a client."""
    if settings.tracking_uri.startswith("sqlite:///"):
        Path(settings.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    # mlflow.set_tracking_uri / set_registry_uri also export MLFLOW_TRACKING_URI and
    # MLFLOW_REGISTRY_URI, which every settings class reads first: left there, they would pin
    # every later settings object (and child process) to this store.
    exported = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.registry_uri)
    for name, user_value in exported.items():
        if user_value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = user_value
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri)


def ensure_experiment(client: MlflowClient, settings: CoreSettings) -> str:
    """The experiment's id, creating it with artifacts under the configured root."""
    experiment = client.get_experiment_by_name(settings.experiment_name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(settings.experiment_name, artifact_location=settings.artifact_location)


def version_by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        if error.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}:
            return None
        raise


COMPLETE_MARKER = ".download-complete"


def download_version(client: MlflowClient, settings: CoreSettings, version: ModelVersion) -> ModelBundle:
    """Download one registered version (cached by version: versions never change).

    Workers of one host share the cache and start together on a cold one: a file lock makes
    one download while the others wait, each download goes to a folder of its own, and a cached
    copy is trusted only once its completion marker exists (a copy cut short is fetched again).
    """
    target = settings.model_cache / version.name / str(version.version)
    if not (target / COMPLETE_MARKER).is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(target) + ".lock"):
            if not (target / COMPLETE_MARKER).is_file():
                _download_into(target, version)
    return ModelBundle(
        name=version.name,
        version=str(version.version),
        local_dir=target,
        aliases=tuple(version.aliases or ()),
    )


def _download_into(target: Path, version: ModelVersion) -> None:
    partial = Path(tempfile.mkdtemp(prefix=f"{target.name}.partial-", dir=target.parent))
    try:
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{version.name}/{version.version}", dst_path=str(partial)
        )
        (partial / COMPLETE_MARKER).touch()
        if target.exists():  # an incomplete copy (no marker) from an older release or a crash
            shutil.rmtree(target)
        partial.rename(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def load_bundle(client: MlflowClient, settings: CoreSettings, alias: str = CHAMPION) -> ModelBundle:
    version = version_by_alias(client, settings.model_name, alias)
    if version is None:
        raise RegistryError(
            f"no model version of '{settings.model_name}' has alias '{alias}' in {settings.registry_uri}; "
            "train one with 'emotion-ops train' and promote it with 'emotion-ops promote'"
        )
    return download_version(client, settings, version)


# The alias moves a reviewer makes: the CLI ('emotion-ops promote --approve', 'rollback',
# 'models') and the console call these same functions.
PREVIOUS_CHAMPION_TAG = "promotion.previous_champion"
AWAITING_REVIEW = "passed, awaiting review"


def _stamp() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def rollback_champion(
    client: MlflowClient, name: str, by: str | None = None, expected_version: str | None = None
) -> tuple[str, str]:
    """Move ``champion`` back to the version it replaced; returns (from, to). With
    ``expected_version``, only while that version is the champion (the approver's page)."""
    champion = version_by_alias(client, name, CHAMPION)
    if champion is None:
        raise RegistryError(f"'{name}' has no '{CHAMPION}'; there is nothing to roll back")
    if expected_version is not None and str(champion.version) != expected_version:
        raise RegistryError(
            f"the champion is version {champion.version}, not {expected_version}: reload the page"
        )
    previous = (champion.tags or {}).get(PREVIOUS_CHAMPION_TAG, "")
    if not previous:
        raise RegistryError(
            f"champion version {champion.version} replaced no earlier champion; cannot roll back"
        )
    client.get_model_version(name, previous)  # fails loudly if that version was deleted
    client.set_registered_model_alias(name, CHAMPION, previous)
    # The rolled-back version must not come back by the next 'promote': take 'challenger' off it.
    challenger = version_by_alias(client, name, CHALLENGER)
    if challenger is not None and str(challenger.version) == str(champion.version):
        client.delete_registered_model_alias(name, CHALLENGER)
    tags = {"rollback.time": _stamp(), "rollback.to": previous}
    if by:
        tags["rollback.by"] = by
    for key, value in tags.items():
        client.set_model_version_tag(name, champion.version, key, value)
    return str(champion.version), previous


def approve_challenger(
    client: MlflowClient,
    name: str,
    by: str,
    check: Callable[[str, str | None, dict[str, str]], dict[str, str]] | None = None,
    expected_version: str | None = None,
) -> tuple[str, str | None]:
    """Make the waiting challenger champion, on the gate's recorded pass; returns (new, old).

    The gate ran where the training stack is (a retrain, or 'emotion-ops promote' with
    EMOTION_RETRAIN_AUTO_PROMOTE off) and recorded "passed, awaiting review" on the version,
    judged against the champion of that moment. A reviewer's approval moves the alias only while
    that verdict still holds: a challenger refused, never gated, or judged against a champion
    that has moved since, is refused here (rerun 'emotion-ops promote'). ``check`` (challenger
    version, champion version, the challenger's tags) may refuse too, by raising, or give tags
    to record (the shadow's figures: ``core.shadow``). ``expected_version``: the version the
    approver saw; another one waiting now is refused (the approver's page was stale)."""
    challenger = version_by_alias(client, name, CHALLENGER)
    if challenger is None:
        raise RegistryError(f"'{name}' has no '{CHALLENGER}' version waiting for review")
    if expected_version is not None and str(challenger.version) != expected_version:
        raise RegistryError(
            f"the challenger is version {challenger.version}, not {expected_version}: reload the page"
        )
    tags = challenger.tags or {}
    decision = tags.get("promotion.decision", "")
    if decision != AWAITING_REVIEW:
        raise RegistryError(
            f"challenger version {challenger.version} is not waiting for review (gate: "
            f"{decision or 'not run'}); run 'emotion-ops promote' to gate it"
        )
    champion = version_by_alias(client, name, CHAMPION)
    current = str(champion.version) if champion is not None else ""
    if tags.get("promotion.champion_version", "") != current:
        raise RegistryError(
            f"challenger version {challenger.version} was gated against champion version "
            f"{tags.get('promotion.champion_version') or 'none'}, the champion is now {current or 'none'}; "
            "run 'emotion-ops promote' to gate it again"
        )
    evidence = check(str(challenger.version), current or None, dict(tags)) if check is not None else {}
    # The alias first: should a tag write fail after it, the version is champion and says it
    # waited, rather than saying "passed" while it still waits (and refusing a retry).
    client.set_registered_model_alias(name, CHAMPION, challenger.version)
    updates = {
        **evidence,
        "promotion.decision": "passed",
        "promotion.approved_by": by,
        "promotion.approved_at": _stamp(),
        PREVIOUS_CHAMPION_TAG: current,
    }
    for key, value in updates.items():
        client.set_model_version_tag(name, challenger.version, key, value)
    return str(challenger.version), current or None


def version_rows(client: MlflowClient, name: str) -> list[dict[str, object]]:
    """Every registered version of ``name``, newest first: aliases, times and all its tags."""
    versions = client.search_model_versions(f"name='{name}'")
    # A search leaves each version's aliases out; the registered model holds them all.
    by_version: dict[str, list[str]] = {}
    if versions:
        for alias, number in (client.get_registered_model(name).aliases or {}).items():
            by_version.setdefault(str(number), []).append(alias)
    return [
        {
            "version": str(version.version),
            "aliases": sorted(by_version.get(str(version.version), [])),
            "created": datetime.fromtimestamp(version.creation_timestamp / 1000, UTC).isoformat(
                timespec="seconds"
            ),
            "tags": dict(version.tags or {}),
        }
        for version in sorted(versions, key=lambda v: int(v.version), reverse=True)
    ]
