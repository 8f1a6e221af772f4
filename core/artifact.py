"""The registered model artifact: everything serving and monitoring need, in one MLflow model.

Layout inside the MLflow model's ``artifacts/``:

- ``model/``: transformers weights, tokenizer and ``config.id2label``;
- ``model_card.json``: labels, max tokens, base model, data source, training config and the
  test-set evaluation;
- ``reference.parquet``: validation texts with this model's predicted label and confidence,
  the reference for drift reports;
- ``novelty_reference.parquet``: the texts novelty is measured against (``role`` ``index``:
  training texts; ``calibration``: validation texts that set the threshold), embedded by
  whichever runtime serves the model (``core.inference.novelty``).

As a pyfunc it takes a DataFrame with a ``text`` column (or a list of strings) and returns the
emotion, its confidence, ``emotions`` (the decided labels, most probable first, joined by
commas: one for a single-label model) and one probability column per label. Loading it as a pyfunc needs
``emotion-ops`` installed, since the wrapper class lives here (``core.artifact``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

# The predictor brings torch: imported where a model runs, so reading a card or a reference
# (the drift job, the CLI) never loads it.
if TYPE_CHECKING:
    from core.inference.novelty import NoveltyIndex
    from core.inference.predictor import EmotionPredictor


MODEL_DIR = "model"
MODEL_CARD = "model_card.json"
REFERENCE = "reference.parquet"
NOVELTY_REFERENCE = "novelty_reference.parquet"


class EmotionClassifierPyfunc(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]
    """pyfunc wrapper so ``mlflow.pyfunc.load_model('models:/emotion-classifier@champion')``
    predicts label names."""

    def load_context(self, context: Any) -> None:
        card = json.loads(Path(context.artifacts[MODEL_CARD]).read_text())
        from core.inference.predictor import EmotionPredictor

        self.predictor = EmotionPredictor.from_dir(
            context.artifacts[MODEL_DIR], max_length=card["max_length"]
        )

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        if isinstance(model_input, pd.DataFrame):
            texts = model_input["text"].astype(str).tolist()
        else:
            texts = [str(text) for text in model_input]
        return predictions_frame(self.predictor, texts)


def predictions_frame(predictor: EmotionPredictor, texts: list[str]) -> pd.DataFrame:
    probabilities = predictor.predict_proba(texts)
    best = probabilities.argmax(axis=1)
    decided = predictor.decisions(probabilities)
    frame = pd.DataFrame(
        {
            "emotion": [predictor.labels[i] for i in best],
            "confidence": probabilities.max(axis=1).astype(float),
            "emotions": [
                ",".join(predictor.labels[i] for i in sorted(np.flatnonzero(row), key=lambda i: -p[i]))
                for row, p in zip(decided, probabilities, strict=True)
            ],
        }
    )
    for index, label in enumerate(predictor.labels):
        frame[f"p_{label}"] = probabilities[:, index].astype(float)
    return frame


@dataclass
class ModelBundle:
    """A registered model version downloaded to local disk."""

    name: str
    version: str
    local_dir: Path
    aliases: tuple[str, ...] = ()

    @cached_property
    def card(self) -> dict[str, Any]:
        card: dict[str, Any] = json.loads((self.local_dir / "artifacts" / MODEL_CARD).read_text())
        return card

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.card["labels"])

    @property
    def task(self) -> str:
        return str(self.card.get("task", "single"))

    @property
    def thresholds(self) -> dict[str, float] | None:
        """Multi-label: each label's decision threshold."""
        return self.card.get("thresholds")

    @property
    def label_set(self) -> str | None:
        """The label set the training data went through (``six``, ``ekman``), if any."""
        return (self.card.get("label_set") or {}).get("name")

    @property
    def model_dir(self) -> Path:
        return self.local_dir / "artifacts" / MODEL_DIR

    def reference(self) -> pd.DataFrame:
        return pd.read_parquet(self.local_dir / "artifacts" / REFERENCE)

    @property
    def novelty(self) -> dict[str, Any] | None:
        """The card's novelty block (how the index was made, its threshold at registration)."""
        return self.card.get("novelty")

    def _novelty_options(self) -> dict[str, Any]:
        """How the served index is built: as the card says it was at registration, so its
        expected share is the card's; a version registered with another representation (the last
        layer and its k nearest rows, before the layer mean) gets today's method and share on
        the same texts: its card's share was chosen for a score the served features no longer
        give."""
        from core.inference.novelty import (
            DEFAULT_METHOD,
            DEFAULT_NEIGHBOURS,
            DEFAULT_NOVEL_SHARE,
            REPRESENTATION,
        )

        card = self.novelty or {}
        same = card.get("representation") == REPRESENTATION
        return {
            "method": card.get("method", DEFAULT_METHOD) if same else DEFAULT_METHOD,
            "neighbours": card.get("neighbours", DEFAULT_NEIGHBOURS) if same else DEFAULT_NEIGHBOURS,
            "novel_share": card.get("novel_share", DEFAULT_NOVEL_SHARE) if same else DEFAULT_NOVEL_SHARE,
        }

    @property
    def expected_novel_share(self) -> float | None:
        """The chance the served index calls an unshifted text novel (what the drift verdict
        tests a window against); None for a version registered without novelty."""
        from core.inference.novelty import expected_share

        card = self.novelty
        if not card or "calibration_rows" not in card:
            return None
        return expected_share(int(card["calibration_rows"]), self._novelty_options()["novel_share"])

    def novelty_index(self, predictor: EmotionPredictor, variant: str) -> NoveltyIndex | None:
        """This version's novelty index as ``predictor`` (on runtime-precision ``variant``)
        embeds it, cached beside the version; None for a version registered without one."""
        from core.inference.novelty import POOLING_TAG, cached_index

        path = self.local_dir / "artifacts" / NOVELTY_REFERENCE
        if not path.is_file():
            return None
        texts = pd.read_parquet(path)
        options = self._novelty_options()
        name = f"{variant}-{options['method']}-k{options['neighbours']}-{options['novel_share']}.npz"
        return cached_index(
            predictor.features_and_classes,
            texts.loc[texts["role"] == "index", "text"].tolist(),
            texts.loc[texts["role"] == "calibration", "text"].tolist(),
            self.local_dir / "novelty" / POOLING_TAG / name,
            **options,
        )

    def predictor(self, **kwargs: Any) -> EmotionPredictor:
        from core.inference.predictor import EmotionPredictor

        kwargs.setdefault("max_length", self.card["max_length"])
        return EmotionPredictor.from_dir(self.model_dir, **kwargs)
