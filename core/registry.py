"""MLflow tracking and Model Registry access shared by training, promotion and serving.

Models are addressed by alias (``challenger``, ``champion``), never by registry stage.
"""

from __future__ import annotations

import os
import shutil
import tempfile
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
