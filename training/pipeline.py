"""Training stage end to end: data → baseline run → fine-tune run → registered ``challenger``."""

from __future__ import annotations

import json
import logging
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from core.artifact import (
    MODEL_CARD,
    MODEL_DIR,
    NOVELTY_REFERENCE,
    REFERENCE,
    EmotionClassifierPyfunc,
    predictions_frame,
)
from core.inference.novelty import (
    DEFAULT_CALIBRATION_ROWS,
    DEFAULT_INDEX_ROWS,
    DEFAULT_METHOD,
    DEFAULT_NEIGHBOURS,
    DEFAULT_NOVEL_SHARE,
    REPRESENTATION,
    NoveltyIndex,
)
from core.inference.predictor import EmotionPredictor
from core.registry import CHALLENGER, connect, ensure_experiment
from core.settings import TrainingSettings
from training.base_model import BaseModel, resolve_base_model
from training.baseline import BASELINE_PARAMS, train_baseline
from training.data import EmotionDataset, load_emotion_dataset
from training.evaluate import Evaluation, evaluate, evaluate_multilabel, plot_confusion_matrix, score_on
from training.promote import PromotionResult, promote
from training.train import PROFILES, TrainingConfig, fine_tune, resolve_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingOutcome:
    run_id: str
    model_name: str
    model_version: str
    base_model: BaseModel
    evaluation: Evaluation
    baseline: Evaluation | None
    train_seconds: float
    test_by_source: dict[str, dict] = field(default_factory=dict)
    device: str = "cpu"


def train_and_register(
    settings: TrainingSettings,
    config: TrainingConfig,
    data_source: str | None = None,
    base_model_spec: str | None = None,
    with_baseline: bool = True,
    progress: bool = True,
    dataset: EmotionDataset | None = None,
) -> TrainingOutcome:
    """Train the baseline and the DistilBERT classifier, log both to MLflow, and register the
    classifier as a new version of ``settings.model_name`` with alias ``challenger``.

    ``dataset`` lets a caller (retraining) pass data it has assembled itself.
    """
    dataset = dataset or load_emotion_dataset(
        data_source or settings.resolve_data_source(),
        label_set=settings.label_set,
        multilabel=settings.task == "multilabel",
    )
    device = resolve_device(settings.device)  # before any work: a missing GPU stops here
    base = resolve_base_model(base_model_spec or settings.base_model, settings.base_model_cache)
    client = connect(settings)
    experiment_id = ensure_experiment(client, settings)

    # The TF-IDF baseline is a single-label classifier: no baseline run for a multi-label model.
    with_baseline = with_baseline and not dataset.multilabel
    baseline = _run_baseline(dataset, experiment_id, config.seed) if with_baseline else None

    with mlflow.start_run(experiment_id=experiment_id, run_name=f"distilbert-{base.origin}") as run:
        mlflow.set_tags(
            {
                "model_kind": "distilbert",
                "task": "multilabel" if dataset.multilabel else "single",
                "base_model": base.name,
                "base_model_origin": base.origin,
                "device": str(device),
            }
        )
        mlflow.log_dict(dataset.summary, "dataset_summary.json")
        if dataset.label_set:
            mlflow.log_dict(dataset.label_set, "label_set.json")
        mlflow.log_params(
            {
                **config.model_dump(),
                "base_model": base.name,
                "base_model_origin": base.origin,
                "base_model_path": base.path,
                "data_source": dataset.source,
                "label_set": (dataset.label_set or {}).get("name", "none"),
                "device": str(device),
                "labels": ",".join(dataset.labels),
                **{f"n_{split}": len(frame) for split, frame in dataset.splits.items()},
            }
        )
        result = fine_tune(
            base.path,
            dataset,
            config,
            progress=progress,
            on_eval=lambda step, metrics: mlflow.log_metrics(metrics, step=step),
            device=device,
        )
        predictor = EmotionPredictor(
            result.model,
            result.tokenizer,
            max_length=config.max_length,
            batch_size=config.eval_batch_size,
        )
        mlflow.log_metrics(
            {
                "train_seconds": result.train_seconds,
                "train_steps": result.steps,
                "best_val_macro_f1": result.best_val_macro_f1,
                "best_step": result.best_step,
            }
        )
        version, test, by_source = evaluate_and_register(
            settings, client, predictor, dataset, config, base, str(device), "DistilBERT fine-tuned"
        )
        if baseline is not None:
            mlflow.log_metric("test_macro_f1_minus_baseline", test.macro_f1 - baseline.macro_f1)

    return TrainingOutcome(
        run_id=run.info.run_id,
        model_name=settings.model_name,
        model_version=version,
        base_model=base,
        evaluation=test,
        baseline=baseline,
        train_seconds=result.train_seconds,
        test_by_source=by_source,
        device=str(device),
    )


def train_first_champion(
    settings: TrainingSettings, profile: str, data_source: str | None = None
) -> tuple[TrainingOutcome, PromotionResult]:
    """A registry with no champion gets one: the ``profile`` run registered, then judged by the
    gate (the floor alone, there being no champion to compare with)."""
    outcome = train_and_register(settings, PROFILES[profile], data_source)
    return outcome, promote(settings, data_source)


def _run_baseline(dataset: EmotionDataset, experiment_id: str, seed: int) -> Evaluation:
    with mlflow.start_run(experiment_id=experiment_id, run_name="baseline-tfidf-logreg"):
        mlflow.set_tag("model_kind", "baseline")
        mlflow.log_params({**{k: str(v) for k, v in BASELINE_PARAMS.items()}, "data_source": dataset.source})
        started = time.perf_counter()
        pipeline = train_baseline(dataset, seed=seed)
        train_seconds = time.perf_counter() - started
        test = evaluate(dataset.label_ids("test"), pipeline.predict(dataset.texts("test")), dataset.labels)
        mlflow.log_metrics({**test.metrics("test_"), "train_seconds": train_seconds})
        with tempfile.TemporaryDirectory() as scratch:
            _log_evaluation(test, Path(scratch), "TF-IDF + logistic regression")
        log.info("baseline: test accuracy %.4f macro-F1 %.4f", test.accuracy, test.macro_f1)
        return test


def evaluate_and_register(
    settings: TrainingSettings,
    client,
    predictor: EmotionPredictor,
    dataset: EmotionDataset,
    config: TrainingConfig,
    base: BaseModel,
    device: str,
    title: str,
    card_extra: dict | None = None,
) -> tuple[str, Evaluation, dict[str, dict]]:
    """Inside the active run: score ``predictor`` on the test split (overall and per source),
    log it, register it as a new version with its card and reference sample, and point
    ``challenger`` at it. Labels are matched by name, so a model brought from elsewhere may
    order them its own way. ``card_extra`` adds to (or replaces) the card's top-level entries."""
    test, predicted_ids = score_on(predictor, dataset, "test")
    by_source = _scores_by_source(dataset, predicted_ids)
    mlflow.log_metrics(
        {
            **test.metrics("test_"),
            **{
                f"test_{metric}_{name}": value
                for name, scores in by_source.items()
                for metric, value in scores.items()
                if metric != "rows"
            },
        }
    )
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        _log_evaluation(test, scratch, title)
        version = _log_and_register(
            settings, predictor, dataset, config, base, test, scratch, by_source, device, card_extra
        )
    client.set_registered_model_alias(settings.model_name, CHALLENGER, version)
    for key, value in {
        "base_model": base.name,
        "base_model_origin": base.origin,
        "test_accuracy": f"{test.accuracy:.4f}",
        "test_macro_f1": f"{test.macro_f1:.4f}",
        "data_source": dataset.source,
    }.items():
        client.set_model_version_tag(settings.model_name, version, key, value)
    return version, test, by_source


def _log_evaluation(evaluation: Evaluation, scratch: Path, title: str) -> None:
    (scratch / "evaluation_test.json").write_text(json.dumps(evaluation.to_dict(), indent=2))
    mlflow.log_artifact(str(scratch / "evaluation_test.json"))
    mlflow.log_artifact(str(plot_confusion_matrix(evaluation, scratch / "confusion_matrix_test.png", title)))


def _log_and_register(
    settings: TrainingSettings,
    predictor: EmotionPredictor,
    dataset: EmotionDataset,
    config: TrainingConfig,
    base: BaseModel,
    test: Evaluation,
    scratch: Path,
    test_by_source: dict[str, dict],
    device: str,
    card_extra: dict | None = None,
) -> str:
    import tokenizers
    import torch
    import transformers
    from mlflow.models import infer_signature

    model_dir = scratch / MODEL_DIR
    predictor.model.save_pretrained(model_dir)
    predictor.tokenizer.save_pretrained(model_dir)

    reference = _reference_sample(predictor, dataset, config)
    reference.to_parquet(scratch / REFERENCE, index=False)
    novelty_texts = _novelty_texts(dataset, config.seed)
    novelty_texts.to_parquet(scratch / NOVELTY_REFERENCE, index=False)
    index, index_classes = predictor.features_and_classes(
        novelty_texts.loc[novelty_texts["role"] == "index", "text"].tolist()
    )
    calibration, _ = predictor.features_and_classes(
        novelty_texts.loc[novelty_texts["role"] == "calibration", "text"].tolist()
    )
    novelty = NoveltyIndex.calibrated(
        index,
        calibration,
        index_classes,
        method=DEFAULT_METHOD,
        neighbours=DEFAULT_NEIGHBOURS,
        novel_share=DEFAULT_NOVEL_SHARE,
    )
    card = {
        "task": predictor.task,
        "labels": list(predictor.labels),
        # Multi-label: the decision threshold of each label (also in the model's config.json).
        "thresholds": dict(zip(predictor.labels, map(float, predictor.thresholds), strict=True))
        if predictor.multilabel
        else None,
        "max_length": config.max_length,
        "base_model": {"name": base.name, "origin": base.origin},
        "data_source": dataset.source,
        "data": dataset.summary,
        # How the sources' labels became these labels (None: they are the sources' own).
        "label_set": dataset.label_set,
        # A model brought from elsewhere (emotion-ops register) was not trained with this config.
        "training_config": None if base.origin == "registered" else config.model_dump(),
        "training_device": device,
        "test": test.to_dict(),
        "test_by_source": test_by_source,
        # How unlike the training texts a served text is: its index and calibration, and the
        # threshold as PyTorch fp32 puts it (each runtime recalibrates on the same texts).
        "novelty": {
            **novelty.describe(),
            "novel_share": DEFAULT_NOVEL_SHARE,
            "index_texts": "a random sample of the train split",
            "calibration_texts": "a random sample of the validation split",
            "representation": REPRESENTATION,
        },
        **(card_extra or {}),
    }
    (scratch / MODEL_CARD).write_text(json.dumps(card, indent=2))

    example = pd.DataFrame({"text": ["i feel wonderful today"]})
    signature = infer_signature(example, predictions_frame(predictor, example["text"].tolist()))
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=EmotionClassifierPyfunc(),
        artifacts={
            MODEL_DIR: str(model_dir),
            MODEL_CARD: str(scratch / MODEL_CARD),
            REFERENCE: str(scratch / REFERENCE),
            NOVELTY_REFERENCE: str(scratch / NOVELTY_REFERENCE),
        },
        signature=signature,
        # Explicit and CPU-only: inferred requirements drag in CUDA torch and torchvision.
        pip_requirements=[
            f"torch=={torch.__version__.split('+')[0]}",
            f"transformers=={transformers.__version__}",
            f"tokenizers=={tokenizers.__version__}",
            f"mlflow=={mlflow.__version__}",
            "pandas<3.1",
            "pyarrow",
        ],
        registered_model_name=settings.model_name,
    )
    return str(info.registered_model_version)


def _scores_by_source(dataset: EmotionDataset, predicted) -> dict[str, dict]:
    """Test accuracy and macro-F1 of each source on its own (a joined dataset's test split mixes
    them; each source's own figure says whether one was learned at the other's cost)."""
    test = dataset.splits["test"]
    if "source" not in test or test["source"].nunique() < 2:
        return {}
    truth = dataset.label_matrix("test") if dataset.multilabel else np.array(dataset.label_ids("test"))
    scores: dict[str, dict[str, Any]] = {}
    for source, rows in test.groupby("source").indices.items():
        if dataset.multilabel:
            result = evaluate_multilabel(truth[rows], predicted[rows], dataset.labels)
        else:
            result = evaluate(truth[rows], predicted[rows], dataset.labels)
        name = _metric_name(source, scores)
        scores[name] = {
            "rows": len(rows),
            "accuracy": result.accuracy,
            "macro_f1": result.macro_f1,
            **({"micro_f1": result.micro_f1} if result.micro_f1 is not None else {}),
        }
    return scores


def _metric_name(source: str, taken) -> str:
    """A name MLflow takes in a metric key, unique among ``taken`` (two folders may share one)."""
    base = re.sub(r"[^\w.-]", "_", Path(source).name) or "source"
    name, number = base, 1
    while name in taken:
        number += 1
        name = f"{base}_{number}"
    return name


def _novelty_texts(dataset: EmotionDataset, seed: int) -> pd.DataFrame:
    """Train texts to index and validation texts to calibrate on (each sampled, de-duplicated)."""
    parts = []
    for split, role, rows in (
        ("train", "index", DEFAULT_INDEX_ROWS),
        ("validation", "calibration", DEFAULT_CALIBRATION_ROWS),
    ):
        texts = dataset.splits[split]["text"].drop_duplicates()
        if len(texts) > rows:
            texts = texts.sample(n=rows, random_state=seed)
        parts.append(pd.DataFrame({"text": texts.tolist(), "role": role}))
    return pd.concat(parts, ignore_index=True)


def _reference_sample(
    predictor: EmotionPredictor, dataset: EmotionDataset, config: TrainingConfig
) -> pd.DataFrame:
    frame = dataset.splits["validation"]
    if len(frame) > config.reference_size:
        frame = frame.sample(n=config.reference_size, random_state=config.seed)
    predictions = predictions_frame(predictor, frame["text"].tolist())
    return pd.concat(
        [frame[["text", "label"]].reset_index(drop=True), predictions.reset_index(drop=True)],
        axis=1,
    )
