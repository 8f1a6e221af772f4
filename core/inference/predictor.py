"""Inference over a fine-tuned sequence classifier, independent of any serving framework.

The label names come from the model's own ``config.id2label``, so whatever trained the model
decides the labels and nothing downstream can disagree with it. So does the kind of model: a
config with ``problem_type = "multi_label_classification"`` gets independent sigmoid
probabilities and its per-label decision thresholds (``config.label_thresholds``, written when it
was trained); any other gets a softmax.

With a novelty index (``core.inference.novelty``) each prediction also says how unlike the
model's training texts the text is, from the same forward pass (the mean of its layers' token
means): no second model, and nothing to keep in step with the one that predicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from scipy.special import expit, softmax

from core.inference.novelty import NoveltyIndex, layer_mean, token_mean
from core.labels import decide, thresholds_for

# The fixed cost of one forward pass, in padded tokens it is worth: more batches beat padding
# down to about this (measured on random 16-text batches, docs/performance.md).
FORWARD_COST_TOKENS = 16
MULTI_LABEL = "multi_label_classification"


@dataclass(frozen=True)
class Prediction:
    emotion: str
    confidence: float
    probabilities: dict[str, float]
    truncated: bool
    tokens: int
    # The labels decided for the text, most probable first; a single-label model's is (emotion,).
    emotions: tuple[str, ...] = ()
    # With a novelty index: the text's novelty score, and whether it is over the threshold.
    novelty: float | None = None
    novel: bool | None = None


class SequenceClassifier(Protocol):
    """What the predictor needs of a model: a transformers sequence classifier, or the ONNX
    Runtime session that stands in for one (``core.inference.runtime``)."""

    config: Any

    def eval(self) -> Any: ...

    def __call__(
        self, *, input_ids: torch.Tensor, attention_mask: torch.Tensor, output_hidden_states: bool = False
    ) -> Any: ...


class EmotionPredictor:
    """Batched, length-sorted inference with a tokenizer and a sequence-classification model."""

    def __init__(
        self,
        model: SequenceClassifier,
        tokenizer: Any,
        max_length: int = 128,
        batch_size: int = 64,
        forward_cost_tokens: int = FORWARD_COST_TOKENS,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        self.forward_cost_tokens = forward_cost_tokens
        id2label = model.config.id2label
        self.labels: tuple[str, ...] = tuple(id2label[index] for index in range(len(id2label)))
        self.multilabel = getattr(model.config, "problem_type", None) == MULTI_LABEL
        self.thresholds = thresholds_for(self.labels, getattr(model.config, "label_thresholds", None) or {})
        self.novelty: NoveltyIndex | None = None  # set by whoever loads the model's index

    def set_thresholds(self, by_label: dict[str, float]) -> None:
        """New decision thresholds (multi-label), kept in the model's config so they are saved with it."""
        self.model.config.label_thresholds = {label: float(by_label[label]) for label in self.labels}
        self.thresholds = thresholds_for(self.labels, by_label)

    @property
    def task(self) -> str:
        return "multilabel" if self.multilabel else "single"

    def decisions(self, probabilities: np.ndarray) -> np.ndarray:
        """The labels decided per row (bool, rows by labels): over threshold, or the argmax."""
        if self.multilabel:
            return decide(probabilities, self.thresholds)
        chosen = np.zeros(probabilities.shape, dtype=bool)
        if len(probabilities):
            chosen[np.arange(len(probabilities)), probabilities.argmax(axis=1)] = True
        return chosen

    @classmethod
    def from_dir(cls, model_dir: str | Path, **kwargs: Any) -> EmotionPredictor:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForSequenceClassification.from_pretrained(model_dir)
        return cls(model, tokenizer, **kwargs)

    @property
    def device(self) -> torch.device | None:
        """The model's device when it is not the CPU (ONNX Runtime models have none)."""
        device = getattr(self.model, "device", None)
        return device if isinstance(device, torch.device) and device.type != "cpu" else None

    @torch.inference_mode()
    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Class probabilities, one row per text, columns in ``self.labels`` order (independent
        per label for a multi-label model: a row need not sum to 1)."""
        probabilities, _, _ = self._forward(texts)
        return probabilities

    @torch.inference_mode()
    def embed(self, texts: list[str]) -> np.ndarray:
        """Each text's novelty features (``core.inference.novelty.layer_mean``)."""
        return self.features_and_classes(texts)[0]

    @torch.inference_mode()
    def features_and_classes(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Each text's novelty features and the class the model gives it (its most probable
        label), from one forward: what a novelty index is built from."""
        probabilities, _, features = self._forward(texts, pooled=True)
        assert features is not None  # asked for
        return features, probabilities.argmax(axis=1)

    @torch.inference_mode()
    def proba_and_embed(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``predict_proba`` and each text's mean-pooled last hidden state, from one forward:
        what the label screen's noise check and ``label export``'s clusters read (their
        figures in docs/labels.md were measured on it). PyTorch only: the ONNX graph returns
        the novelty features, not the last layer."""
        probabilities, _, pooled = self._forward(texts, pooled=True, last_layer=True)
        assert pooled is not None  # asked for
        return probabilities, pooled

    def predict(self, texts: list[str]) -> list[Prediction]:
        with torch.inference_mode():
            probabilities, token_counts, pooled = self._forward(texts, pooled=self.novelty is not None)
        decided = self.decisions(probabilities)
        novelty: list[float | None] = [None] * len(texts)
        threshold = 0.0
        if self.novelty is not None and pooled is not None:
            novelty = [float(score) for score in self.novelty.score(pooled)]
            threshold = self.novelty.threshold
        predictions = []
        for row, chosen, tokens, score in zip(probabilities, decided, token_counts, novelty, strict=True):
            best = int(row.argmax())
            picked = np.flatnonzero(chosen)
            predictions.append(
                Prediction(
                    emotion=self.labels[best],
                    confidence=float(row[best]),
                    probabilities={label: float(p) for label, p in zip(self.labels, row, strict=True)},
                    truncated=tokens > self.max_length,
                    tokens=min(tokens, self.max_length),
                    emotions=tuple(self.labels[i] for i in picked[np.argsort(-row[picked], kind="stable")]),
                    novelty=score,
                    novel=None if score is None else bool(score > threshold),
                )
            )
        return predictions

    def _forward(
        self, texts: list[str], pooled: bool = False, last_layer: bool = False
    ) -> tuple[np.ndarray, list[int], np.ndarray | None]:
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32), [], np.zeros((0, 0), dtype=np.float32)
        # One untruncated tokenizer call: the full lengths say which texts lose tokens, and the
        # ids are cut and padded here rather than by a second tokenizer pass.
        encoded = self.tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
        token_counts = [len(ids) for ids in encoded]
        # Sorted by length, then cut where padding would cost more than another forward pass;
        # results go back in input order.
        order = np.argsort(token_counts, kind="stable")
        lengths = [min(token_counts[i], self.max_length) for i in order]
        output = np.empty((len(texts), len(self.labels)), dtype=np.float32)
        embeddings = None
        for start, end in length_buckets(lengths, self.batch_size, self.forward_cost_tokens):
            indices = order[start:end]
            input_ids, attention_mask = pad_batch(
                [encoded[i] for i in indices], self.tokenizer.pad_token_id, self.max_length
            )
            if self.device is not None:  # a model trained or evaluated on a GPU
                input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
            result = self.model(
                input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=pooled
            )
            logits = result.logits
            if pooled:
                batch = pooled_output(result, attention_mask, last_layer)
                if embeddings is None:
                    embeddings = np.empty((len(texts), batch.shape[1]), dtype=np.float32)
                embeddings[indices] = batch
            # SciPy's softmax, not torch's: torch.softmax always enters an OpenMP parallel region,
            # which starts torch's thread pool, whose idle threads then spin after every forward.
            # On ONNX Runtime, where torch does nothing else, that took a fifth of the server's CPU.
            scores = logits.float().cpu().numpy()
            output[indices] = expit(scores) if self.multilabel else softmax(scores, axis=-1)
        return output, token_counts, embeddings


def pooled_output(result: Any, attention_mask: torch.Tensor, last_layer: bool = False) -> np.ndarray:
    """Each text's novelty features (``core.inference.novelty.layer_mean``; an ONNX Runtime
    model returns them computed in its graph), or with ``last_layer`` the mean of its last
    hidden state over its tokens. NumPy, not torch: see the note on softmax above."""
    ready = getattr(result, "pooled", None)
    if last_layer:
        if getattr(result, "hidden_states", None) is None:
            raise ValueError("the last layer is not in the ONNX graph's outputs: load the model on PyTorch")
        return token_mean(result.hidden_states[-1].float().cpu().numpy(), attention_mask.cpu().numpy())
    if ready is not None:
        return np.asarray(ready, dtype=np.float32)
    return layer_mean(
        [layer.float().cpu().numpy() for layer in result.hidden_states], attention_mask.cpu().numpy()
    )


def length_buckets(lengths: list[int], max_batch: int, forward_cost_tokens: int) -> list[tuple[int, int]]:
    """Cut ascending ``lengths`` into ``[start, end)`` forward batches of at most ``max_batch``
    that minimise padded tokens plus ``forward_cost_tokens`` per batch.

    Padding every text of a batch to its longest wastes compute on mixed lengths (a batch of 16
    random test-set texts is mostly padding); one batch per text loses the matrix kernels'
    efficiency and pays the fixed cost of a forward each time. Dynamic programming over the
    sorted lengths finds the cheapest cut; O(len(lengths) * max_batch).
    """
    count = len(lengths)
    best = [0.0] + [float("inf")] * count  # best[i]: cheapest cost of the first i texts
    cut = [0] * (count + 1)
    for end in range(1, count + 1):
        longest = lengths[end - 1]  # ascending: the last text of a batch is its longest
        for start in range(max(0, end - max_batch), end):
            cost = best[start] + forward_cost_tokens + (end - start) * longest
            if cost < best[end]:
                best[end], cut[end] = cost, start
    buckets = []
    end = count
    while end > 0:
        buckets.append((cut[end], end))
        end = cut[end]
    return buckets[::-1]


def pad_batch(
    sequences: list[list[int]], pad_id: int, max_length: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists to the longest one (cut to ``max_length``) with a mask."""
    width = max(len(ids) for ids in sequences)
    if max_length:
        width = min(width, max_length)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        if len(ids) > width:
            # Keep the closing [SEP]: the model was trained on sequences that end with it.
            ids = [*ids[: width - 1], ids[-1]]
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
    return input_ids, attention_mask
