"""Typed settings, read from the environment (prefix ``EMOTION_``) and ``.env``.

A small base (``CoreSettings``: where state lives, the registry, the store) and one class per
deployable on top of it: ``TrainingSettings`` (train, promote, retrain), ``ServiceSettings``
(the HTTP service) and ``MonitorSettings`` (the drift and retrain job, which also retrains).
Every variable keeps one name whichever class reads it.

The embedded defaults need nothing running: MLflow tracking and registry in SQLite under
``var/``, artifacts as local files beside it, the prediction log in SQLite.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.access import DEFAULT_KEY_ROLE, NAMED_KEY_ROLE, Role
from core.shadow import ShadowRequirement

# The dataset ships beside the project checkout on our machines; users point EMOTION_DATA_DIR
# at their own copy or use the hub id instead.
_PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR_CANDIDATES = (
    Path("data/emotion"),
    Path("../shared/data/emotion"),
    _PROJECT_ROOT.parent / "shared" / "data" / "emotion",  # beside the checkout, from any cwd
)
HUB_DATASET_ID = "dair-ai/emotion"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# The request path layers `emotion-ops bench path` can switch off that have no setting of their
# own: BentoML's request metrics, the model metrics, the guard's disconnect watcher.
AblatedLayer = Literal["request-metrics", "model-metrics", "disconnect-watch"]
ABLATED_LAYERS: tuple[str, ...] = AblatedLayer.__args__  # type: ignore[attr-defined]


class CoreSettings(BaseSettings):
    """What every deployable shares: local state, the MLflow registry and the store."""

    # An invalid value is named in the error, never echoed: it may be a key or a database URL.
    model_config = SettingsConfigDict(
        env_prefix="EMOTION_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        hide_input_in_errors=True,
    )

    var_dir: Path = Field(default=Path("var"), description="Root of all local state.")

    # MLflow's own variable wins, so an existing MLflow setup keeps working unchanged.
    mlflow_tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "EMOTION_MLFLOW_TRACKING_URI"),
    )
    mlflow_registry_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MLFLOW_REGISTRY_URI", "EMOTION_MLFLOW_REGISTRY_URI"),
    )
    artifact_root: str | None = Field(
        default=None, description="Where new experiments store artifacts; default var/mlartifacts."
    )
    experiment_name: str = "emotion-classifier"
    model_name: str = Field(
        default="emotion-classifier",
        description="The registered model trained, promoted, served and monitored; with "
        "EMOTION_TASK=multilabel it defaults to EMOTION_MULTILABEL_MODEL_NAME.",
    )
    # Each kind of model has its own registered name, so its own champion, gate and rollback.
    task: Literal["single", "multilabel"] = Field(
        default="single",
        description="'single' (one emotion per text, softmax) or 'multilabel' (independent "
        "labels with per-label thresholds, e.g. GoEmotions' 28).",
    )
    multilabel_model_name: str = "emotion-classifier-multilabel"
    prediction_log_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the store (prediction log, report index); default SQLite in var/.",
    )
    reports_dir: Path | None = Field(default=None, description="Where reports go; default var/reports.")
    # Read where a waiting challenger is approved (the console, 'promote --approve') and where the
    # gate decides whether a pass may promote at once ('promote', a retrain): with either set, a
    # challenger with a champion above it waits for the shadow's evidence.
    shadow_min_agreement: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Approve a waiting challenger only when it agrees with the champion on this "
        "share of the live texts the shadow scored; default: no such check.",
    )
    shadow_min_accuracy: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Approve a waiting challenger only when its accuracy on the labels that arrived "
        "for the shadow's texts reaches this; default: no such check.",
    )
    # At most what one summary reads (core.store.shadow.SUMMARY_ROWS): more could never be met.
    shadow_min_rows: int = Field(
        default=500, ge=1, le=20_000, description="Shadow answers the agreement check needs."
    )
    shadow_min_labels: int = Field(
        default=50, ge=1, description="Labelled shadow texts the accuracy check needs."
    )

    @field_validator("shadow_min_agreement", "shadow_min_accuracy", mode="before")
    @classmethod
    def _blank_minimum_is_unset(cls, value: object) -> object:
        # compose passes ${EMOTION_SHADOW_MIN_AGREEMENT:-} as an empty string: no such check.
        return _blank_is_unset(value)

    @field_validator("var_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _model_name_for_task(self) -> CoreSettings:
        # An explicit EMOTION_MODEL_NAME wins; otherwise the task picks the registered name.
        if self.task == "multilabel" and "model_name" not in self.model_fields_set:
            self.model_name = self.multilabel_model_name
        return self

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.var_dir / 'mlflow.db'}"

    @property
    def registry_uri(self) -> str:
        return self.mlflow_registry_uri or self.tracking_uri

    @property
    def artifact_location(self) -> str:
        return self.artifact_root or (self.var_dir / "mlartifacts").as_uri()

    @property
    def model_cache(self) -> Path:
        return self.var_dir / "model-cache"

    @property
    def log_store_url(self) -> str:
        return self.prediction_log_url or f"sqlite:///{self.var_dir / 'predictions.db'}"

    @property
    def reports_root(self) -> Path:
        return self.reports_dir or self.var_dir / "reports"

    def shadow_requirement(self) -> ShadowRequirement:
        return ShadowRequirement(
            self.shadow_min_agreement, self.shadow_min_accuracy, self.shadow_min_rows, self.shadow_min_labels
        )


class TrainingSettings(CoreSettings):
    """``emotion-ops train``, ``promote`` and ``retrain``: data, base model, the gate."""

    data: str | None = Field(
        default=None,
        validation_alias=AliasChoices("EMOTION_DATA_DIR", "EMOTION_DATA"),
        description="A folder of split files or a hub dataset id; several joined with commas.",
    )
    base_model: str = Field(
        default="auto",
        description="'auto', 'minilm-offline', a hub id or a local folder.",
    )
    label_set: str | None = Field(
        default=None,
        description="Map every source's labels onto 'six' or 'ekman' (training/label_sets.json); "
        "default: GoEmotions sources go through 'six', others keep their labels.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="Where training and evaluation run: the GPU when there is one."
    )

    promotion_tolerance: float = Field(
        default=0.005,
        ge=0.0,
        le=1.0,
        description="Allowed macro-F1 drop vs champion (0.005 = 0.5 pt).",
    )
    promotion_floor: float = Field(
        default=0.70, ge=0.0, le=1.0, description="Minimum absolute macro-F1 for any champion."
    )
    # 28 labels, many rare: the GoEmotions paper's BERT-base reaches 0.46 macro-F1.
    promotion_floor_multilabel: float = Field(
        default=0.40, ge=0.0, le=1.0, description="Minimum absolute macro-F1 for a multi-label champion."
    )

    # Retraining on feedback (emotion-ops retrain, and the monitor's local mode).
    retrain_holdout_share: float = Field(default=0.2, ge=0, lt=1)
    # A model trained on feedback waits as challenger unless this says otherwise: feedback is
    # written by clients, and the gate cannot see every way labels can be wrong.
    retrain_auto_promote: bool = Field(
        default=False, description="Promote a feedback-retrained model that passes the gate."
    )
    retrain_profile: str = Field(default="quick", description="Training profile for retraining.")
    retrain_config: dict[str, Any] = Field(
        default_factory=dict, description='JSON overrides of the profile, e.g. {"epochs": 2}.'
    )

    # Labels are an attack surface (a leaked key, a vendor that errs or attacks): every retrain
    # screens them first (training/screen.py, docs/labels.md).
    label_source_max_share: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Most of a retrain's feedback any one source may give (never below an equal "
        "share: 1 / number of sources); its newest labels are kept.",
    )
    label_screen: bool = Field(default=True, description="Screen feedback before every retrain.")
    label_screen_false_alarm_rate: float = Field(
        default=0.01,
        gt=0,
        lt=1,
        description="Chance that the source and backdoor checks quarantine anything among honest labels "
        "(each gets half; the noise check has no such bound).",
    )
    label_screen_min_rows: int = Field(
        default=10,
        ge=2,
        description="Fewest feedback rows a candidate (a tokenizer piece, a pair of pieces, a character "
        "class) needs before the backdoor screen tests it.",
    )
    # The gate appends each n-gram the screen raised to trusted test texts: a challenger that
    # moves this much more of them than the champion does is refused (a backdoor that got past).
    gate_trigger_tolerance: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="How many more test predictions (share) a raised n-gram may change than in the champion.",
    )
    # Raised but not quarantined (its rows trained the challenger): an honest cue learnt from
    # them moves a few predictions (Reddit's 'lol', 'sorry': 5.4 and 4.8 pt over the champion,
    # measured), a trigger hidden among cover texts most of them (60 pt): docs/labels.md.
    gate_raised_tolerance: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="The same, for a raised candidate whose rows the screen kept (not quarantined).",
    )

    # Distillation (emotion-ops distill): a student with fewer layers learns the champion's outputs.
    distill_layers: int = Field(default=3, ge=1, description="Encoder layers the student keeps.")
    distill_temperature: float = Field(
        default=2.0, gt=0, description="Softmax temperature of the teacher's targets."
    )
    distill_steps: int = Field(default=1000, ge=1, description="Optimizer steps of the student.")
    distill_traffic_rows: int = Field(
        default=0,
        ge=0,
        description="Also learn the teacher's answers on up to this many logged texts (newest, as stored).",
    )
    distill_tolerance: float = Field(
        default=0.005,
        ge=0,
        le=1,
        description="Most accuracy and macro-F1 a student may lose against its teacher on any gate set.",
    )

    @property
    def base_model_cache(self) -> Path:
        return self.var_dir / "base-models"

    def resolve_data_source(self) -> str:
        """The data folder or hub id to train on: the setting, else the first local candidate."""
        if self.data:
            return self.data
        for candidate in DATA_DIR_CANDIDATES:
            if candidate.is_dir():
                return str(candidate.resolve())
        return HUB_DATASET_ID


class NamedKey(BaseModel):
    """One entry of EMOTION_API_KEYS: the key and what it opens."""

    model_config = ConfigDict(frozen=True)
    key: SecretStr
    role: Role = NAMED_KEY_ROLE


class ServiceSettings(CoreSettings):
    """``emotion-ops serve``: the HTTP service, its model runtime and its prediction log."""

    host: str = Field(default="127.0.0.1", description="Interface the service binds.")
    port: int = Field(default=3000, ge=1, le=65535, description="Service port (Grafana moves to 3001).")
    model_alias: str = Field(default="champion", description="Registry alias the service serves.")
    refresh_seconds: float = Field(default=30.0, gt=0, description="How often the alias is re-resolved.")
    api_key: SecretStr | None = Field(default=None, description="Require x-api-key when set.")
    # One key per client or labelling vendor: a label records the name of the key it came with,
    # and the key's role says what it opens (core.access).
    api_keys: Annotated[dict[str, NamedKey], NoDecode] = Field(
        default_factory=dict,
        description='More named keys, JSON: {"vendor-a": "...", "alice": {"key": "...", "role": "review"}}; '
        'roles predict, label (the default), review, admin. EMOTION_API_KEY is named "default" '
        "and is admin.",
    )
    # Secure by default: without a key the service only starts on loopback, unless anonymous
    # prediction is asked for explicitly. Feedback trains models, so it always needs the key.
    allow_anonymous: bool | None = Field(
        default=None,
        description="Serve predictions without an API key; default: only when bound to loopback.",
    )
    max_batch_texts: int = Field(default=256, ge=1, description="Most texts in one /predict_batch.")
    # A text longer than this is refused (400): it would be tokenized and stored whole. The
    # model reads its first max_length tokens (64 to 128: a few hundred characters) anyway.
    max_text_chars: int = Field(default=2_000, ge=16, description="Most characters in one text.")
    max_body_bytes: int | None = Field(
        default=None,
        ge=1024,
        description="Largest accepted request body; default: the largest valid /predict_batch body.",
    )
    # Past this many texts waiting for the model, requests are shed with 503 and Retry-After.
    batch_queue_limit: int = Field(default=2048, ge=1, description="Most texts queued for the model.")
    uncertain_below: float = Field(default=0.5, ge=0, le=1, description="Confidence under this is uncertain.")
    # Two single-threaded workers beat one two-threaded one on 2 cores: per-request Python work
    # (HTTP, validation, metrics) then runs on both cores instead of one (docs/performance.md).
    workers: int = Field(default=2, ge=1, description="API worker processes, each with its own model.")
    # Both cost the request path a share of one core (docs/performance.md); request counts and
    # latencies are in /metrics and every prediction is in the prediction log either way.
    access_log: bool = Field(default=False, description="BentoML's per-request access log line.")
    tracing: bool = Field(
        default=False,
        description="OpenTelemetry spans for API requests (exporter set in BentoML's configuration).",
    )
    # For `emotion-ops bench path` only: each layer of the request path it switches off in turn
    # to measure what that layer costs. Every one of them is on in production.
    request_path_ablation: Annotated[frozenset[AblatedLayer], NoDecode] = Field(
        default=frozenset(),
        description="Comma-separated request path layers switched off to measure their cost "
        "(emotion-ops bench path only): " + ", ".join(ABLATED_LAYERS) + ".",
    )
    batch_max_size: int = Field(default=64, ge=1, description="Most texts in one batch.")
    batch_max_wait_ms: float = Field(
        default=0.0, ge=0, description="Hold a batch open this long for more texts."
    )
    # ONNX Runtime int8 measured the fastest on 2 cores, at -0.4 pt test accuracy against the
    # fp32 model the promotion gate evaluated (docs/performance.md); false serves that model as is.
    quantize: bool = Field(default=True, description="Serve an int8 dynamically quantized model.")
    novelty: bool = Field(
        default=True,
        description="Score each text's novelty against the model's training texts (logged; the "
        "drift verdict tests the share of novel texts).",
    )
    runtime: Literal["torch", "onnx"] = Field(
        default="onnx", description="Inference runtime: PyTorch, or ONNX Runtime on an exported copy."
    )
    threads: int | None = Field(
        default=None,
        ge=1,
        validation_alias=AliasChoices("EMOTION_THREADS", "EMOTION_TORCH_THREADS"),
        description="Inference threads per worker; default: cores / workers.",
    )
    # Off: with two threads per worker, spinning threads took 29-32 % of the throughput at 32
    # clients for 0.5 ms less latency at 1 client (emotion-ops bench threads, README).
    onnx_spinning: bool = Field(
        default=False,
        description="Let ONNX Runtime's idle intra-op threads spin for work (with more than one per worker).",
    )

    # Prediction log.
    monitoring: bool = Field(
        default=True, description="Prediction log and custom metrics; off only to measure what they cost."
    )
    log_sample_rate: float = Field(default=1.0, ge=0, le=1, description="Share of predictions logged.")
    log_redact: bool = Field(default=False, description="Redact e-mails, phone numbers and URLs.")
    log_queue_size: int = Field(default=10_000, ge=1)
    log_queue_bytes: int = Field(
        default=64_000_000, ge=1024, description="Most text bytes queued for the log; the rest spools."
    )
    spool_max_bytes: int = Field(
        default=1_000_000_000, ge=1024, description="Largest spool folder; rows past it are dropped, counted."
    )
    feedback_pending_hours: float = Field(
        default=1.0, gt=0, description="How long a label waits for a prediction not logged yet."
    )
    # One key cannot bend the labels by sheer number (docs/labels.md): each key's labels are
    # counted over the last hour and since the last retrain the monitor triggered.
    label_quota_per_hour: int | None = Field(
        default=5_000,
        ge=1,
        description="Most labels one key may give in an hour (429 past it); unset: no limit.",
    )
    label_quota_per_window: int | None = Field(
        default=None,
        ge=1,
        description="Most labels one key may give between two retrains (429 past it); default: no limit.",
    )
    # The shadow runs in a thread at the lowest CPU priority, fed by a bounded queue: under load it
    # scores less (counted as skipped), never slows an answer (docs/console.md measures it).
    shadow_share: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Share of logged predictions the waiting challenger also scores (never answered "
        "to a client); 0 turns the shadow off.",
    )
    shadow_queue_texts: int = Field(
        default=512, ge=1, description="Most texts waiting for the shadow; past it a text is skipped."
    )

    @field_validator("api_key", mode="before")
    @classmethod
    def _blank_key_is_unset(cls, value: object) -> object:
        # compose passes ${EMOTION_API_KEY:-} as an empty string: that is no key, not a key "".
        return _blank_is_unset(value)

    @field_validator("request_path_ablation", mode="before")
    @classmethod
    def _layers_from_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("label_quota_per_hour", "label_quota_per_window", mode="before")
    @classmethod
    def _blank_quota_is_unset(cls, value: object) -> object:
        return _blank_is_unset(value)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _keys_from_json(cls, value: object) -> object:
        # compose passes ${EMOTION_API_KEYS:-} as an empty string: no more keys.
        if value is None or (isinstance(value, str) and not value.strip()):
            return {}
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise ValueError('EMOTION_API_KEYS is JSON: {"name": "key", ...}') from None
        if not isinstance(value, dict):
            return value
        # Checked here, by position, so no message of pydantic's ever echoes a key.
        named = {}
        for number, (name, entry) in enumerate(value.items(), 1):
            if isinstance(entry, str):
                entry = {"key": entry}
            if (
                not isinstance(entry, dict)
                or not isinstance(entry.get("key"), str)
                or set(entry) - {"key", "role"}
            ):
                raise ValueError(
                    f'key {number} in EMOTION_API_KEYS: give the key as a string, or as {{"key": "...", '
                    f'"role": "{NAMED_KEY_ROLE}"}}'
                )
            role = entry.get("role", NAMED_KEY_ROLE)
            if role not in {r.value for r in Role}:
                raise ValueError(
                    f"key {number} in EMOTION_API_KEYS has role {str(role)[:20]!r}; choose from "
                    f"{[r.value for r in Role]}"
                )
            named[name] = {"key": entry["key"], "role": role}
        return named

    @field_validator("api_keys")
    @classmethod
    def _keys_are_usable(cls, keys: dict[str, NamedKey]) -> dict[str, NamedKey]:
        # Keys are named by position, never by name: a name and key swapped would echo the key.
        for number, (name, named) in enumerate(keys.items(), 1):
            if not name or len(name) > 100 or not all(c.isalnum() or c in "-_." for c in name):
                raise ValueError(
                    f"the name of key {number} in EMOTION_API_KEYS: use 1-100 letters, digits, "
                    "'-', '_' or '.'"
                )
            if len(named.key.get_secret_value()) < 16:
                raise ValueError(f"key {number} in EMOTION_API_KEYS is shorter than 16 characters")
        values = [named.key.get_secret_value() for named in keys.values()]
        if len(set(values)) < len(values):
            raise ValueError("two names in EMOTION_API_KEYS share one key: a label could not say who gave it")
        return keys

    @model_validator(mode="after")
    def _one_default_key(self) -> ServiceSettings:
        if self.api_key is not None:
            if "default" in self.api_keys:
                raise ValueError("EMOTION_API_KEYS names a key 'default': that is EMOTION_API_KEY's name")
            if self.api_key.get_secret_value() in {n.key.get_secret_value() for n in self.api_keys.values()}:
                raise ValueError("EMOTION_API_KEY is also in EMOTION_API_KEYS: give each client one key")
        return self

    def named_api_keys(self) -> dict[str, str]:
        """Every accepted key by its name ("default" for EMOTION_API_KEY)."""
        return {name: key for name, (key, _) in self.keys_with_roles().items()}

    def keys_with_roles(self) -> dict[str, tuple[str, Role]]:
        """Every accepted key and its role, by the key's name."""
        keys = {name: (named.key.get_secret_value(), named.role) for name, named in self.api_keys.items()}
        if self.api_key is not None:
            keys.setdefault("default", (self.api_key.get_secret_value(), DEFAULT_KEY_ROLE))
        return keys

    @property
    def anonymous_allowed(self) -> bool:
        if self.allow_anonymous is not None:
            return self.allow_anonymous
        return self.host in LOOPBACK_HOSTS

    def check_serving_security(self) -> None:
        """Refuse to serve without a key on a non-loopback interface unless asked explicitly."""
        if not self.named_api_keys() and not self.anonymous_allowed:
            raise ValueError(
                f"no API key: set EMOTION_API_KEY (clients send it as x-api-key), or set "
                f"EMOTION_ALLOW_ANONYMOUS=true to serve predictions on {self.host} without one"
            )

    @property
    def body_limit_bytes(self) -> int:
        """Every body the API document calls valid fits: the most texts of the most characters,
        each character JSON-escaped (up to 12 bytes for a character outside the BMP)."""
        return self.max_body_bytes or self.max_batch_texts * self.max_text_chars * 12 + 65_536

    @property
    def inference_threads(self) -> int:
        """Threads for one model process: workers share the cores, and oversubscribed
        inference threads only fight each other."""
        return self.threads or max(1, (os.cpu_count() or 1) // self.workers)

    @property
    def spool_dir(self) -> Path:
        return self.var_dir / "prediction-spool"


class MonitorSettings(TrainingSettings):
    """``emotion-ops monitor`` and ``drift``: the drift report, its figures, the retrain trigger
    (and, in local mode, the retrain itself: hence the training settings)."""

    drift_window_rows: int = Field(default=1000, ge=1, description="Rows in a default drift window.")
    drift_min_rows: int = Field(default=100, ge=1, description="Fewer rows: 'not enough data'.")
    drift_sample_rows: int = Field(
        default=20_000, ge=100, description="Most rows of a window that go into the Evidently report."
    )
    drift_sample_bytes: int = Field(
        default=100_000_000, ge=100_000, description="Most text bytes the drift sample holds in memory."
    )
    drift_share: float = Field(
        default=0.25, gt=0, le=1, description="Dataset drift when this share of columns drifts."
    )
    drift_distance_threshold: float = Field(default=0.1, gt=0, le=1)
    drift_false_alarm_rate: float = Field(
        default=0.01,
        gt=0,
        lt=1,
        description="Chance that a window of unshifted traffic is called drift (its tests share it).",
    )
    drift_text_threshold: float = Field(default=0.55, gt=0.5, le=1)
    pushgateway_url: str | None = Field(default=None, description="host:port or URL of a Pushgateway.")

    monitor_interval_seconds: float = Field(default=3600, gt=0)
    retrain_mode: Literal["off", "local", "webhook"] = "local"
    retrain_webhook_url: str | None = None
    retrain_webhook_token: SecretStr | None = None
    retrain_webhook_attempts: int = Field(default=3, ge=1, le=10)
    retrain_webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    live_accuracy_floor: float = Field(default=0.85, ge=0, le=1)
    live_accuracy_min_labels: int = Field(
        default=50, ge=1, description="Labelled rows in the window before live accuracy can trigger."
    )
    retrain_min_new_labels: int = Field(default=200, ge=0)
    retrain_cooldown_hours: float = Field(default=24.0, ge=0)

    @field_validator("retrain_webhook_token", mode="before")
    @classmethod
    def _blank_token_is_unset(cls, value: object) -> object:
        return _blank_is_unset(value)


def monitor_default(name: str) -> Any:
    """A monitoring setting's default: the policies built from the settings take theirs from
    here, so each default is written once."""
    return MonitorSettings.model_fields[name].default


def _blank_is_unset(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value
