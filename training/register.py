"""Bring an existing model behind the same gate, service and monitoring: a transformers
sequence-classification model (a local folder or a hub id) is scored on the test split, given a
reference sample and a model card, and registered as ``challenger``, as a trained one would be.

Its labels come from its config (``id2label``), matched to the data's by name (case aside); a
model whose labels differ from the data's is refused with both lists. It is scored on the CPU,
where the service runs it.
"""

from __future__ import annotations

from pathlib import Path

import mlflow

from core.inference.predictor import EmotionPredictor
from core.registry import connect, ensure_experiment
from core.settings import TrainingSettings
from training.base_model import BaseModel
from training.data import DataError, load_emotion_dataset
from training.pipeline import TrainingOutcome, evaluate_and_register
from training.train import TrainingConfig

ORIGIN = "registered"


def register_model(
    settings: TrainingSettings, source: str, data_source: str | None = None, max_length: int = 128
) -> TrainingOutcome:
    """Register the model at ``source`` as a new ``challenger`` version of ``settings.model_name``."""
    dataset = load_emotion_dataset(
        data_source or settings.resolve_data_source(), label_set=settings.label_set
    )
    predictor = _load(source, max_length)
    spelled = {label.casefold(): label for label in dataset.labels}
    theirs = [label.casefold() for label in predictor.labels]
    if len(set(theirs)) != len(theirs) or set(theirs) != set(spelled):
        raise DataError(
            f"the model at {source} predicts {sorted(predictor.labels)}, "
            f"the data has {list(dataset.labels)}; "
            "pick data with the model's labels (or a --label-set that maps onto them)"
        )
    _rename_labels(predictor, [spelled[label] for label in theirs])
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
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise DataError(f"cannot load a transformers model from {source}: {error}") from None
    if getattr(config, "problem_type", None) == "multi_label_classification":
        raise DataError(f"{source} is a multi-label model; this stack registers single-label ones for now")
    try:
        return EmotionPredictor.from_dir(source, max_length=max_length)
    except (OSError, ValueError) as error:
        raise DataError(
            f"{source} is not a sequence-classification model with a tokenizer: {error}"
        ) from None


def _rename_labels(predictor: EmotionPredictor, names: list[str]) -> None:
    """The model's labels spelled as the data spells them ('Joy' becomes 'joy'), in its own id order."""
    config = predictor.model.config
    config.id2label = dict(enumerate(names))
    config.label2id = {name: index for index, name in config.id2label.items()}
    predictor.labels = tuple(names)
