"""The served model: resolves the registry alias, loads the version, and swaps in new champions.

Framework-free so it can be tested without BentoML. A swap builds the new predictor completely
before replacing one reference; requests that already hold the old ``ServedModel`` finish on it,
so a promotion never fails or drops an in-flight request.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from functools import cached_property

from core.inference.predictor import EmotionPredictor, Prediction
from core.inference.runtime import load_predictor
from core.labels import FeedbackRule
from core.registry import RegistryError, connect, download_version, version_by_alias
from core.settings import ServiceSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedModel:
    name: str
    version: str
    alias: str
    base_model: str
    labels: tuple[str, ...]
    max_length: int
    quantized: bool
    runtime: str = "torch"
    test_metrics: dict = field(default_factory=dict)
    multilabel: bool = False
    thresholds: dict[str, float] | None = None  # multi-label: each label's decision threshold
    novelty: dict | None = None  # the index as this runtime embeds it, when novelty is scored
    predictor: EmotionPredictor | None = field(default=None, compare=False, repr=False)

    def predict(self, texts: list[str]) -> list[tuple[ServedModel, Prediction]]:
        """One forward over ``texts``; each result carries the model that made it, so a swap
        while a batch runs never mislabels one."""
        if self.predictor is None:
            raise RuntimeError(f"{self.name} v{self.version} was described without its predictor")
        return [(self, prediction) for prediction in self.predictor.predict(texts)]

    @cached_property
    def feedback_rule(self) -> FeedbackRule:
        """What one feedback on this model may give."""
        return FeedbackRule(self.labels, self.multilabel)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "alias": self.alias,
            "base_model": self.base_model,
            "labels": list(self.labels),
            "max_tokens": self.max_length,
            "quantized": self.quantized,
            "runtime": self.runtime,
            "task": "multilabel" if self.multilabel else "single",
            "thresholds": self.thresholds,
            "novelty": self.novelty,
            "test_metrics": self.test_metrics,
        }


def load_served(
    client, settings: ServiceSettings, version, alias: str, novelty: bool = True, threads: int | None = None
) -> ServedModel:
    """Download ``version`` and build it for serving under ``alias`` (``novelty``: with its
    novelty index, when the settings score novelty; ``threads``: intra-op threads, default the
    settings')."""
    bundle = download_version(client, settings, version)
    card = bundle.card
    predictor = load_predictor(
        bundle.model_dir,
        runtime=settings.runtime,
        quantize=settings.quantize,
        threads=threads or settings.inference_threads,
        spinning=settings.onnx_spinning,
        max_length=card["max_length"],
        batch_size=settings.batch_max_size,
    )
    if novelty and settings.novelty:
        variant = f"{settings.runtime}-{'int8' if settings.quantize else 'fp32'}"
        try:
            predictor.novelty = bundle.novelty_index(predictor, variant)
        except OSError as error:  # an unwritable cache: serve, unscored, rather than not at all
            log.warning("novelty scoring off for version %s: %s", bundle.version, error)
    test = card.get("test", {})
    return ServedModel(
        name=bundle.name,
        version=bundle.version,
        alias=alias,
        base_model=card.get("base_model", {}).get("name", "unknown"),
        labels=predictor.labels,
        max_length=predictor.max_length,
        quantized=settings.quantize,
        runtime=settings.runtime,
        test_metrics={
            "accuracy": test.get("accuracy"),
            "macro_f1": test.get("macro_f1"),
            **({"micro_f1": test["micro_f1"]} if test.get("micro_f1") is not None else {}),
        },
        multilabel=predictor.multilabel,
        thresholds=dict(zip(predictor.labels, map(float, predictor.thresholds), strict=True))
        if predictor.multilabel
        else None,
        novelty=predictor.novelty.describe() if predictor.novelty is not None else None,
        predictor=predictor,
    )


class ChampionHolder:
    """Holds the model behind ``settings.model_alias`` and keeps it current."""

    def __init__(self, settings: ServiceSettings, on_swap=None):
        self.settings = settings
        self.client = connect(settings)
        self.on_swap = on_swap or (lambda old, new: None)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.current: ServedModel = self._load_alias()
        self.on_swap(None, self.current)

    def _load_alias(self) -> ServedModel:
        version = version_by_alias(self.client, self.settings.model_name, self.settings.model_alias)
        if version is None:
            raise RegistryError(
                f"no version of '{self.settings.model_name}' has alias '{self.settings.model_alias}'; "
                "train and promote one first ('emotion-ops up')"
            )
        return self._load_version(version)

    def _load_version(self, version) -> ServedModel:
        return load_served(self.client, self.settings, version, self.settings.model_alias)

    def refresh(self) -> bool:
        """Re-resolve the alias; load and swap if it points elsewhere. True when swapped."""
        with self._lock:
            version = version_by_alias(self.client, self.settings.model_name, self.settings.model_alias)
            if version is None or str(version.version) == self.current.version:
                return False
            new = self._load_version(version)
            old, self.current = self.current, new
        log.info("now serving %s version %s (was %s)", new.name, new.version, old.version)
        self.on_swap(old, new)
        return True

    def start(self) -> None:
        """Re-resolve every ``settings.refresh_seconds`` in a daemon thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="champion-refresh", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.refresh_seconds):
            try:
                self.refresh()
            except Exception as error:  # a registry hiccup must not stop serving the current model
                log.warning(
                    "champion refresh failed, still serving version %s: %s", self.current.version, error
                )
