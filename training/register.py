"""Bring an existing model behind the same gate, service and monitoring: a transformers
sequence-classification model (a local folder or a hub id) is scored on the test split, given a
reference sample and a model card, and registered as ``challenger``, as a trained one would be.

Its labels come from its config (``id2label``), matched to the data's by name (case aside); a
model whose labels differ from the data's is refused with both lists. It is scored on the CPU,
where the service runs it. A multi-label model (``problem_type`` multi-label in its config) is
registered under the multi-label model name and scored on multi-label data; without decision
thresholds of its own, they are tuned on the validation split as training would.
"""

from __future__ import annotations

from pathlib import Path

import mlflow

from core.inference.predictor import EmotionPredictor
from core.registry import connect, ensure_experiment
from core.settings import TrainingSettings
from training.base_model import BaseModel
from training.data import DataError, load_emotion_dataset
from training.evaluate import tune_thresholds
from training.pipeline import TrainingOutcome, evaluate_and_register
from training.train import TrainingConfig

ORIGIN = "registered"


def register_model(
    settings: TrainingSettings, source: str, data_source: str | None = None, max_length: int = 128
) -> TrainingOutcome:
    """Register the model at ``source`` as a new ``challenger`` version of ``settings.model_name``."""
    predictor = _load(source, max_length)
    if predictor.multilabel and settings.task != "multilabel":
        # Its own registered name (so its own champion), unless EMOTION_MODEL_NAME says otherwise.
        explicit = "model_name" in settings.model_fields_set
        settings = settings.model_copy(
            update={
                "task": "multilabel",
                "model_name": settings.model_name if explicit else settings.multilabel_model_name,
            }
        )
    elif not predictor.multilabel and settings.task == "multilabel":
        raise DataError(f"{source} is a single-label model; register it without --task multilabel")
    dataset = load_emotion_dataset(
        data_source or settings.resolve_data_source(),
        label_set=settings.label_set,
        multilabel=predictor.multilabel,
    )
    spelled = {label.casefold(): label for label in dataset.labels}
    theirs = [label.casefold() for label in predictor.labels]
    if len(set(theirs)) != len(theirs) or set(theirs) != set(spelled):
        raise DataError(
            f"the model at {source} predicts {sorted(predictor.labels)}, "
            f"the data has {list(dataset.labels)}; "
            "pick data with the model's labels (or a --label-set that maps onto them)"
        )
    _rename_labels(predictor, [spelled[label] for label in theirs])
    if predictor.multilabel and not getattr(predictor.model.config, "label_thresholds", None):
        validation = dataset.label_matrix("validation")[
            :, [dataset.labels.index(label) for label in predictor.labels]
        ]
        predictor.set_thresholds(
            tune_thresholds(
                validation, predictor.predict_proba(dataset.texts("validation")), predictor.labels
            )
        )
    # Only max_length and the reference sample's size and seed apply: nothing is trained here.
    config = TrainingConfig(max_length=max_length)
    base = BaseModel(path=str(source), origin=ORIGIN, name=str(source))
    client = connect(settings)
    with mlflow.start_run(
        experiment_id=ensure_experiment(client, settings), run_name=f"registered-{Path(source).name}"
    ) as run:
        mlflow.set_tags({"model_kind": ORIGIN, "base_model": base.name, "base_model_origin": ORIGIN})
        mlflow.log_params(
            {"source": str(source), "data_source": dataset.source, "max_length": max_length,
             "labels": ",".join(predictor.labels)}
        )  # fmt: skip
        mlflow.log_dict(dataset.summary, "dataset_summary.json")
        version, test, by_source = evaluate_and_register(
            settings, client, predictor, dataset, config, base, "cpu", f"registered: {source}"
        )
    return TrainingOutcome(
        run_id=run.info.run_id,
        model_name=settings.model_name,
        model_version=version,
        base_model=base,
        evaluation=test,
        baseline=None,
        train_seconds=0.0,
        test_by_source=by_source,
    )


def _load(source: str, max_length: int) -> EmotionPredictor:
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(source)  # a clear error for what is not a model at all
    except (OSError, ValueError) as error:
        raise DataError(f"cannot load a transformers model from {source}: {error}") from None
    try:
        return EmotionPredictor.from_dir(source, max_length=max_length)
    except (OSError, ValueError) as error:
        raise DataError(
            f"{source} is not a sequence-classification model with a tokenizer: {error}"
        ) from None


def _rename_labels(predictor: EmotionPredictor, names: list[str]) -> None:
    """The model's labels spelled as the data spells them ('Joy' becomes 'joy'), in its own id order."""
    config = predictor.model.config
    if getattr(config, "label_thresholds", None):
        config.label_thresholds = {
            name: float(threshold) for name, threshold in zip(names, predictor.thresholds, strict=True)
        }
    config.id2label = dict(enumerate(names))
    config.label2id = {name: index for index, name in config.id2label.items()}
    predictor.labels = tuple(names)
