"""Training stage end to end: data → baseline run → fine-tune run → registered ``challenger``."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd

from core.artifact import (
    MODEL_CARD,
    MODEL_DIR,
    REFERENCE,
    EmotionClassifierPyfunc,
    predictions_frame,
)
from core.inference.predictor import EmotionPredictor
from core.registry import CHALLENGER, connect, ensure_experiment
from core.settings import TrainingSettings
from training.base_model import BaseModel, resolve_base_model
from training.baseline import BASELINE_PARAMS, train_baseline
from training.data import EmotionDataset, load_emotion_dataset
from training.evaluate import Evaluation, evaluate, plot_confusion_matrix
from training.train import TrainingConfig, fine_tune

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
    dataset = dataset or load_emotion_dataset(data_source or settings.resolve_data_source())
    base = resolve_base_model(base_model_spec or settings.base_model, settings.base_model_cache)
    client = connect(settings)
    experiment_id = ensure_experiment(client, settings)

    baseline = _run_baseline(dataset, experiment_id, config.seed) if with_baseline else None

    with mlflow.start_run(experiment_id=experiment_id, run_name=f"distilbert-{base.origin}") as run:
        mlflow.set_tags(
            {"model_kind": "distilbert", "base_model": base.name, "base_model_origin": base.origin}
        )
        mlflow.log_params(
            {
                **config.model_dump(),
                "base_model": base.name,
                "base_model_origin": base.origin,
                "base_model_path": base.path,
                "data_source": dataset.source,
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
        )
        predictor = EmotionPredictor(
            result.model,
            result.tokenizer,
            max_length=config.max_length,
            batch_size=config.eval_batch_size,
        )
        test = evaluate(
            dataset.label_ids("test"),
            predictor.predict_proba(dataset.texts("test")).argmax(axis=1),
            dataset.labels,
        )
        mlflow.log_metrics(
            {
                **test.metrics("test_"),
                "train_seconds": result.train_seconds,
                "train_steps": result.steps,
                "best_val_macro_f1": result.best_val_macro_f1,
                "best_step": result.best_step,
            }
        )
        if baseline is not None:
            mlflow.log_metric("test_macro_f1_minus_baseline", test.macro_f1 - baseline.macro_f1)

        with tempfile.TemporaryDirectory() as scratch:
            scratch = Path(scratch)
            _log_evaluation(test, scratch, "DistilBERT fine-tuned")
            version = _log_and_register(settings, predictor, dataset, config, base, test, scratch)

    client.set_registered_model_alias(settings.model_name, CHALLENGER, version)
    for key, value in {
        "base_model": base.name,
        "base_model_origin": base.origin,
        "test_accuracy": f"{test.accuracy:.4f}",
        "test_macro_f1": f"{test.macro_f1:.4f}",
        "data_source": dataset.source,
    }.items():
        client.set_model_version_tag(settings.model_name, version, key, value)
    return TrainingOutcome(
        run_id=run.info.run_id,
        model_name=settings.model_name,
        model_version=version,
        base_model=base,
        evaluation=test,
        baseline=baseline,
        train_seconds=result.train_seconds,
    )


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
    card = {
        "labels": list(predictor.labels),
        "max_length": config.max_length,
        "base_model": {"name": base.name, "origin": base.origin},
        "data_source": dataset.source,
        "training_config": config.model_dump(),
        "test": test.to_dict(),
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
