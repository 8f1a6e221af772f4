"""Distillation: a student with fewer encoder layers that learns the champion's outputs.

Serving cost is per layer: half the layers is nearly half the compute of every text. The
student starts as the champion itself with evenly spaced layers kept (0, 2 and 4 of six), so it
begins close to its teacher instead of from a generic base, and then learns the teacher's
temperature-softened outputs (which carry how alike the emotions are, not only which one won)
together with the curated hard labels (Hinton et al., 2015; DistilBERT's layer choice).

The teacher can also answer for texts it has served: the prediction log, as stored (redacted
when the service redacts), so the student learns production text without a human label. Only
the teacher's answers train on those; texts of the validation and test splits never do.

The student is registered as ``challenger`` with a card that names its teacher, the layers it
kept and the texts it learned from, and the gate judges it on every evaluation set the champion
is judged on, accuracy and macro-F1 each within ``distill_tolerance``.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import mlflow
import numpy as np
import torch
from pydantic import Field
from tqdm.auto import tqdm

from core.inference.predictor import EmotionPredictor, pad_batch
from core.registry import CHAMPION, RegistryError, connect, ensure_experiment, load_bundle, version_by_alias
from core.settings import TrainingSettings
from training.base_model import BaseModel as BaseModelSpec
from training.data import DataError, EmotionDataset, load_emotion_dataset
from training.evaluate import Evaluation
from training.pipeline import evaluate_and_register
from training.promote import (
    DISTILL_GATE_DATA_TAG,
    DISTILL_TOLERANCE_TAG,
    PromotionResult,
    distillation_gate_sets,
    promote,
)
from training.train import (
    OptimizerConfig,
    TrainingConfig,
    class_weights,
    length_grouped_batches,
    optimizer_and_schedule,
    positive_weights,
    resolve_device,
    set_seed,
    validation_scores,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)


class DistillConfig(OptimizerConfig):
    """Hyper-parameters of one distillation run (logged to MLflow and kept in the card). The
    defaults of what the settings set are the settings' (``from_settings``)."""

    layers: int = Field(default=3, ge=1, description="Encoder layers the student keeps.")
    temperature: float = Field(default=2.0, gt=0)
    hard_weight: float = Field(
        default=0.5, ge=0, le=1, description="Share of the loss from the curated hard labels."
    )
    steps: int = Field(default=1000, ge=1)
    learning_rate: float = Field(default=1e-4, gt=0)
    evaluations: int = Field(default=4, ge=1, description="Validation passes; the best one is kept.")
    traffic_rows: int = Field(default=0, ge=0, description="Logged texts the teacher also answers for.")

    @classmethod
    def from_settings(cls, settings: TrainingSettings, **overrides: Any) -> DistillConfig:
        """``EMOTION_DISTILL_*`` with the given values (None: the setting's) put in and checked."""
        configured = {
            "layers": settings.distill_layers,
            "steps": settings.distill_steps,
            "temperature": settings.distill_temperature,
            "traffic_rows": settings.distill_traffic_rows,
        }
        given = {name: value for name, value in overrides.items() if value is not None}
        return cls.model_validate({**configured, **given})


@dataclass(frozen=True)
class DistillOutcome:
    model_version: str
    teacher_version: str
    kept_layers: list[int]
    teacher_layers: int
    evaluation: Evaluation
    texts: dict[str, int]
    distill_seconds: float
    gate: PromotionResult
    promoted: bool


# Where each supported architecture keeps its encoder layers, and the config key that counts them.
_ENCODERS = {
    "distilbert": ("distilbert.transformer", "n_layers"),
    "bert": ("bert.encoder", "num_hidden_layers"),
}


def student_from(teacher: PreTrainedModel, layers: int) -> tuple[torch.nn.Module, list[int]]:
    """A copy of ``teacher`` that keeps ``layers`` evenly spaced encoder layers, the first
    included (0, 2, 4 of six); embeddings and the classifier head are the teacher's own."""
    model_type = teacher.config.model_type
    if model_type not in _ENCODERS:
        raise ValueError(
            f"distill knows DistilBERT and BERT encoders; this champion is a '{model_type}' model"
        )
    path, count_key = _ENCODERS[model_type]
    total = getattr(teacher.config, count_key)
    if not 1 <= layers < total:
        raise ValueError(f"a student keeps fewer layers than its teacher's {total}; got {layers}")
    # Rounded half up (Python's round() takes 4.5 to 4 and would never keep the last layer).
    kept = sorted({int(index * total / layers + 0.5) for index in range(layers)})
    student = copy.deepcopy(teacher)
    encoder = student.get_submodule(path)
    layer_list = cast(torch.nn.ModuleList, encoder.layer)
    encoder.layer = torch.nn.ModuleList([layer_list[index] for index in kept])
    setattr(student.config, count_key, len(kept))
    return student, kept


@torch.inference_mode()
def teacher_logits(
    model: PreTrainedModel, encoded: list[list[int]], pad_id: int, batch_size: int, device: torch.device
) -> np.ndarray:
    """The teacher's logits for every encoded text, in length-sorted batches (little padding)."""
    model.eval()
    order = np.argsort([len(ids) for ids in encoded], kind="stable")
    logits = np.zeros((len(encoded), cast(int, model.config.num_labels)), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        input_ids, attention_mask = pad_batch([encoded[i] for i in rows], pad_id)
        output = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device))
        logits[rows] = output.logits.float().cpu().numpy()
    return logits


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    labelled: torch.Tensor,
    temperature: float,
    hard_weight: float,
    hard_loss,
    multilabel: bool,
) -> torch.Tensor:
    """(1 - hard_weight) x the soft loss against the teacher at ``temperature`` (scaled by T
    squared so its gradients keep their size as T changes) + hard_weight x the hard-label
    loss over the ``labelled`` rows (logged traffic has the teacher's answer only)."""
    t = temperature
    if multilabel:
        soft = torch.nn.functional.binary_cross_entropy_with_logits(
            student_logits / t, torch.sigmoid(teacher_logits / t)
        )
    else:
        soft = torch.nn.functional.kl_div(
            torch.log_softmax(student_logits / t, dim=-1),
            torch.softmax(teacher_logits / t, dim=-1),
            reduction="batchmean",
        )
    loss = (1 - hard_weight) * soft * t * t
    if hard_weight and bool(labelled.any()):
        loss = loss + hard_weight * hard_loss(student_logits[labelled], targets[labelled])
    return loss


def distill_and_register(
    settings: TrainingSettings,
    config: DistillConfig,
    store=None,
    gate_data: tuple[str, ...] = (),
    move_champion: bool = True,
    progress: bool = False,
) -> DistillOutcome:
    """Distil the champion into a student, register it as ``challenger`` and run the gate:
    on every set (the test split, each of its sources, each of ``gate_data``'s test splits) the
    student may lose at most ``settings.distill_tolerance`` accuracy and macro-F1. It becomes
    champion on a pass when ``move_champion``. ``store`` (the prediction log) is read only when
    ``config.traffic_rows`` asks for logged texts."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    client = connect(settings)
    teacher_bundle = load_bundle(client, settings)
    multilabel = teacher_bundle.task == "multilabel"
    label_set = settings.label_set or teacher_bundle.label_set
    dataset = load_emotion_dataset(settings.resolve_data_source(), label_set=label_set, multilabel=multilabel)
    if set(dataset.labels) != set(teacher_bundle.labels):
        raise DataError(
            f"the data has labels {list(dataset.labels)}, the champion {list(teacher_bundle.labels)}; "
            "set EMOTION_DATA_DIR (or EMOTION_LABEL_SET) to the data the champion was trained on"
        )
    # Sets the gate judges, loaded before any training so a wrong path fails in a second.
    gate_sets = distillation_gate_sets(dataset, gate_data, label_set, multilabel)
    device = resolve_device(settings.device)
    set_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)

    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_bundle.model_dir).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(teacher_bundle.model_dir)
    student, kept = student_from(teacher, config.layers)
    teacher_layers = getattr(teacher.config, _ENCODERS[teacher.config.model_type][1])
    max_length = teacher_bundle.card["max_length"]
    model_labels = [teacher.config.id2label[index] for index in range(teacher.config.num_labels)]

    texts, targets, labelled, traffic = _training_texts(
        dataset, gate_sets, model_labels, config, store, settings
    )
    encoded = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    started = time.perf_counter()
    teacher_answers = teacher_logits(teacher, encoded, tokenizer.pad_token_id, config.eval_batch_size, device)
    teacher_seconds = time.perf_counter() - started
    del teacher
    log.info("teacher answered %d texts in %.0f s", len(texts), teacher_seconds)

    hard_loss = _hard_loss(dataset, targets[labelled], len(model_labels), teacher_bundle, device)
    student = student.to(device)
    optimizer, scheduler = optimizer_and_schedule(student, config, config.steps)
    predictor = EmotionPredictor(student, tokenizer, max_length=max_length, batch_size=config.eval_batch_size)
    eval_every = max(1, config.steps // config.evaluations)
    rng = np.random.default_rng(config.seed)
    best_f1, best_state, best_thresholds, history, step = -1.0, None, None, [], 0
    soft_targets = torch.from_numpy(teacher_answers)
    bar = tqdm(total=config.steps, desc="distilling", unit="step", disable=not progress)
    while step < config.steps:
        for batch in length_grouped_batches(encoded, config.batch_size, rng):
            student.train()
            rows = torch.as_tensor(np.asarray(batch))
            input_ids, attention_mask = pad_batch([encoded[i] for i in batch], tokenizer.pad_token_id)
            logits = student(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
            loss = distillation_loss(
                logits.float(),
                soft_targets[rows].to(device),
                targets[rows].to(device),
                labelled[rows].to(device),
                config.temperature,
                config.hard_weight,
                hard_loss,
                multilabel,
            )
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            bar.update(1)
            if step % eval_every == 0 or step == config.steps:
                student.eval()
                scores, thresholds = validation_scores(predictor, dataset)
                history.append(
                    {"step": step, "val_accuracy": scores.accuracy, "val_macro_f1": scores.macro_f1}
                )
                log.info("step %d: val macro-F1 %.4f accuracy %.4f", step, scores.macro_f1, scores.accuracy)
                if scores.macro_f1 > best_f1:
                    best_f1, best_thresholds = scores.macro_f1, thresholds
                    best_state = copy.deepcopy(student.state_dict())
            if step >= config.steps:
                break
    bar.close()
    if best_state is not None:  # the first validation pass sets it
        student.load_state_dict(best_state)
    if best_thresholds is not None:
        predictor.set_thresholds(best_thresholds)  # saved with the model (config.json)
    student = student.to("cpu").eval()
    predictor.model = student
    seconds = time.perf_counter() - started

    learned_from = {"train split (teacher's answers and the curated labels)": int(labelled.sum())}
    if config.traffic_rows:
        learned_from["logged traffic (teacher's answers only; as stored, redacted if the log redacts)"] = len(
            traffic
        )
    card_extra = {
        "training_config": config.model_dump(),
        "distillation": {
            "teacher": {
                "name": teacher_bundle.name,
                "version": teacher_bundle.version,
                "layers": teacher_layers,
                "test": {
                    key: teacher_bundle.card["test"].get(key) for key in ("accuracy", "macro_f1", "micro_f1")
                },
            },
            "kept_layers": kept,
            # The hard-label loss's weighting, the teacher's own (a student of this student reads it).
            "class_weighting": teacher_class_weighting(teacher_bundle.card),
            "temperature": config.temperature,
            "hard_weight": config.hard_weight,
            "texts": learned_from,
            "traffic_model": settings.model_name if config.traffic_rows else None,
            "seconds": round(seconds, 1),
            "teacher_seconds": round(teacher_seconds, 1),
            "history": history,
        },
    }
    base = BaseModelSpec(
        path=str(teacher_bundle.model_dir),
        origin="distilled",
        name=f"{teacher_bundle.name} v{teacher_bundle.version}",
    )
    experiment_id = ensure_experiment(client, settings)
    registration_config = TrainingConfig(
        max_length=max_length, seed=config.seed, eval_batch_size=config.eval_batch_size
    )
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"student-{len(kept)}-layers"):
        mlflow.set_tags(
            {
                "model_kind": "distilbert-student",
                "task": "multilabel" if multilabel else "single",
                "teacher": f"{teacher_bundle.name} v{teacher_bundle.version}",
                "device": str(device),
            }
        )
        mlflow.log_params(
            {
                **config.model_dump(),
                "teacher_version": teacher_bundle.version,
                "kept_layers": ",".join(map(str, kept)),
                "data_source": dataset.source,
                "train_texts": int(labelled.sum()),
                "traffic_texts": len(traffic),
            }
        )
        for entry in history:
            mlflow.log_metrics({k: v for k, v in entry.items() if k != "step"}, step=entry["step"])
        mlflow.log_metrics({"distill_seconds": seconds, "teacher_seconds": teacher_seconds})
        version, test, _ = evaluate_and_register(
            settings,
            client,
            predictor,
            dataset,
            registration_config,
            base,
            str(device),
            f"Student ({len(kept)} of {teacher_layers} layers)",
            card_extra=card_extra,
        )
    for key, value in {
        "distilled_from": teacher_bundle.version,
        # A later 'emotion-ops promote' of this version runs the same gate (training/promote.py).
        DISTILL_GATE_DATA_TAG: json.dumps([_absolute_sources(source) for source in gate_data]),
        DISTILL_TOLERANCE_TAG: str(settings.distill_tolerance),
    }.items():
        client.set_model_version_tag(settings.model_name, version, key, value)
    champion_now = version_by_alias(client, settings.model_name, CHAMPION)
    if champion_now is None or str(champion_now.version) != teacher_bundle.version:
        raise RegistryError(
            f"the champion moved from version {teacher_bundle.version} to "
            f"{champion_now.version if champion_now else 'none'} while distilling; the student, version "
            f"{version}, waits as challenger: distil the new champion, or judge it with 'emotion-ops promote'"
        )
    gate = promote(
        settings,
        gate_sets=gate_sets,
        tolerance=settings.distill_tolerance,
        accuracy_tolerance=settings.distill_tolerance,
        move_champion=move_champion,
    )
    return DistillOutcome(
        model_version=version,
        teacher_version=teacher_bundle.version,
        kept_layers=kept,
        teacher_layers=teacher_layers,
        evaluation=test,
        texts=learned_from,
        distill_seconds=seconds,
        gate=gate,
        promoted=gate.promoted,
    )


def _training_texts(dataset: EmotionDataset, gate_sets, model_labels: list[str], config, store, settings):
    """The train split's texts with their labels in the model's order, then logged texts (no
    label) that neither a split nor a gate set holds (compared without surrounding white space,
    as the data loader strips). Returns texts, targets, a labelled mask and the traffic texts."""
    texts = dataset.texts("train")
    if dataset.multilabel:
        order = [dataset.labels.index(label) for label in model_labels]
        targets = torch.from_numpy(dataset.label_matrix("train")[:, order].astype(np.float32))
    else:
        position = {label: index for index, label in enumerate(model_labels)}
        targets = torch.tensor([position[dataset.labels[i]] for i in dataset.label_ids("train")])
    traffic: list[str] = []
    if config.traffic_rows:
        if store is None:
            raise ValueError(
                "distilling on logged traffic needs the prediction log (EMOTION_PREDICTION_LOG_URL)"
            )
        frames = [*dataset.splits.values(), *(gate.splits["test"] for gate in gate_sets.values())]
        known = set().union(*(set(frame["text"].str.strip()) for frame in frames))
        logged = store.recent_texts(settings.model_name, config.traffic_rows)
        traffic = [text for text in logged if text.strip() not in known]
        log.info("the teacher also answers for %d logged texts", len(traffic))
    if traffic:
        filler = torch.zeros((len(traffic), *targets.shape[1:]), dtype=targets.dtype)
        targets = torch.cat([targets, filler])
    labelled = torch.zeros(len(texts) + len(traffic), dtype=torch.bool)
    labelled[: len(texts)] = True
    return texts + traffic, targets, labelled, traffic


def _hard_loss(dataset: EmotionDataset, targets: torch.Tensor, num_labels: int, teacher_bundle, device):
    """The teacher's own hard-label loss (its class weighting, from its card)."""
    scheme = teacher_class_weighting(teacher_bundle.card)
    if dataset.multilabel:
        weights = positive_weights(targets.numpy(), scheme)
        return torch.nn.BCEWithLogitsLoss(pos_weight=None if weights is None else weights.to(device))
    weights = class_weights(targets.tolist(), num_labels, scheme)
    return torch.nn.CrossEntropyLoss(weight=None if weights is None else weights.to(device))


def teacher_class_weighting(card: dict) -> str:
    """The class weighting the teacher's hard-label loss used: its training config's, or (a
    distilled teacher) what its own teacher used."""
    trained = (card.get("training_config") or {}).get("class_weighting")
    return trained or (card.get("distillation") or {}).get("class_weighting") or "sqrt_inverse"


def _absolute_sources(sources: str) -> str:
    """Each local folder of a (comma-joined) data source made absolute, so a later 'promote'
    from another folder finds it; hub ids stay as they are."""
    parts = [part.strip() for part in sources.split(",")]
    return ",".join(
        str(Path(part).expanduser().resolve()) if Path(part).expanduser().exists() else part for part in parts
    )
