"""Fine-tune a DistilBERT-style encoder for emotion classification on the CPU.

A plain PyTorch loop rather than ``Trainer``: on two cores the wins come from length-grouped
batches with dynamic padding and from evaluating only as often as early stopping needs, and a
short loop keeps both visible.

A multi-label dataset trains a multi-label model: sigmoid outputs and binary cross-entropy, with
one decision threshold per label tuned on validation at every evaluation (early stopping judges
the tuned macro-F1); the best evaluation's thresholds are saved in the model's config.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, Field
from tqdm.auto import tqdm

from core.inference.predictor import MULTI_LABEL, EmotionPredictor, pad_batch
from training.data import EmotionDataset
from training.evaluate import evaluate, evaluate_multilabel, tune_thresholds

log = logging.getLogger(__name__)


class OptimizerConfig(BaseModel):
    """What every training loop here shares: batches, AdamW with warm-up, the seed, threads.
    Fine-tuning (``TrainingConfig``) and distillation (``training.distill.DistillConfig``) add
    their own learning rate and length."""

    batch_size: int = Field(default=32, ge=1)
    eval_batch_size: int = Field(default=128, ge=1)
    learning_rate: float = Field(default=1.5e-4, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_ratio: float = Field(default=0.06, ge=0, lt=1)
    seed: int = 42
    threads: int | None = Field(default=None, ge=1)


class TrainingConfig(OptimizerConfig):
    """Hyper-parameters of one fine-tuning run (all logged to MLflow)."""

    epochs: float = Field(default=3.0, gt=0)
    # 99.85 % of dair-ai/emotion texts fit in 64 tokens; longer ones are cut and flagged.
    max_length: int = Field(default=64, ge=8)
    evals_per_epoch: int = Field(default=2, ge=1)
    patience: int = Field(default=3, ge=1, description="Evaluations without a better val macro-F1.")
    max_train_samples: int | None = Field(default=None, ge=1)
    max_steps: int | None = Field(default=None, ge=1)
    class_weighting: Literal["none", "sqrt_inverse"] = Field(
        default="sqrt_inverse",
        description="Loss weights per class; sqrt_inverse lifts rare classes (surprise, love) for macro-F1 "
        "(multi-label: each label's positives weighted by the square root of its negatives per positive).",
    )
    reference_size: int = Field(default=2000, ge=1, description="Validation rows kept for drift.")

    @classmethod
    def from_profile(cls, profile: str, **overrides: Any) -> TrainingConfig:
        """A profile's configuration with the given values (None: the profile's) put in and
        checked."""
        if profile not in PROFILES:
            raise ValueError(f"unknown profile '{profile}'; choose from {sorted(PROFILES)}")
        given = {name: value for name, value in overrides.items() if value is not None}
        return cls.model_validate({**PROFILES[profile].model_dump(), **given})


Profile = Literal["quick", "full"]
# quick: the quickstart's few minutes on two cores; full: the reported numbers.
PROFILES: dict[str, TrainingConfig] = {
    "quick": TrainingConfig(epochs=1.0, evals_per_epoch=1),
    "full": TrainingConfig(),
}


@dataclass
class FineTuneResult:
    model: torch.nn.Module
    tokenizer: object
    best_val_macro_f1: float
    best_step: int
    steps: int
    train_seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    thresholds: dict[str, float] | None = None  # multi-label: tuned on validation


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(requested: str) -> torch.device:
    """``auto``: the CUDA GPU when there is one, else the CPU; ``cuda`` without a GPU is an error
    that says so (not a silent fall back to hours on the CPU)."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "EMOTION_DEVICE=cuda, but torch sees no CUDA GPU (this torch build: "
            f"{torch.__version__}); use EMOTION_DEVICE=auto or cpu, or install a CUDA build of torch"
        )
    return torch.device(requested)


def fine_tune(
    base_model_path: str,
    dataset: EmotionDataset,
    config: TrainingConfig,
    progress: bool = True,
    on_eval=None,
    device: torch.device | None = None,
) -> FineTuneResult:
    """Fine-tune on ``train`` with early stopping on validation macro-F1; returns the best model.

    ``on_eval(step, metrics)`` is called after each validation pass (MLflow logging hooks in).
    On a CUDA ``device`` the forward runs in mixed precision (bf16 where the GPU has it, else
    fp16 with loss scaling); the returned model is back on the CPU, where it is saved and served.
    """
    device = device or torch.device("cpu")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    set_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    tokenizer = AutoTokenizer.from_pretrained(base_model_path)
    multilabel = dataset.multilabel
    kind: dict[str, Any] = {"problem_type": MULTI_LABEL} if multilabel else {}
    model = AutoModelForSequenceClassification.from_pretrained(
        base_model_path,
        num_labels=len(dataset.labels),
        id2label=dataset.id2label,
        label2id=dataset.label2id,
        **kind,
    ).to(device)
    on_gpu = device.type == "cuda"
    # Native bf16 only: emulated bf16 (older GPUs) is slower than fp16 with loss scaling.
    half = (
        torch.bfloat16
        if on_gpu and torch.cuda.is_bf16_supported(including_emulation=False)
        else torch.float16
    )
    scaler = torch.amp.GradScaler("cuda", enabled=on_gpu and half == torch.float16)

    texts = dataset.texts("train")
    # A label matrix (multi-label) or a list of label ids.
    labels: Any = dataset.label_matrix("train") if multilabel else dataset.label_ids("train")
    if config.max_train_samples and config.max_train_samples < len(texts):
        keep = np.random.default_rng(config.seed).choice(len(texts), config.max_train_samples, replace=False)
        texts = [texts[i] for i in keep]
        labels = labels[keep] if multilabel else [labels[i] for i in keep]
    encoded = tokenizer(texts, truncation=True, max_length=config.max_length)["input_ids"]
    loss_function: torch.nn.Module
    if multilabel:
        weights = positive_weights(labels, config.class_weighting)
        loss_function = torch.nn.BCEWithLogitsLoss(pos_weight=None if weights is None else weights.to(device))
    else:
        weights = class_weights(labels, len(dataset.labels), config.class_weighting)
        loss_function = torch.nn.CrossEntropyLoss(weight=None if weights is None else weights.to(device))

    steps_per_epoch = math.ceil(len(encoded) / config.batch_size)
    total_steps = max(1, round(steps_per_epoch * config.epochs))
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    eval_every = max(1, steps_per_epoch // config.evals_per_epoch)

    optimizer, scheduler = optimizer_and_schedule(model, config, total_steps)
    predictor = EmotionPredictor(
        model, tokenizer, max_length=config.max_length, batch_size=config.eval_batch_size
    )

    best_f1, best_step, best_state, evals_without_gain = -1.0, 0, None, 0
    best_thresholds: dict[str, float] | None = None
    history: list[dict[str, float]] = []
    rng = np.random.default_rng(config.seed)
    started = time.perf_counter()
    step = 0
    bar = tqdm(total=total_steps, desc="fine-tuning", unit="step", disable=not progress)
    stop = False
    while not stop:
        for batch_indices in length_grouped_batches(encoded, config.batch_size, rng):
            model.train()
            input_ids, attention_mask = pad_batch([encoded[i] for i in batch_indices], tokenizer.pad_token_id)
            if multilabel:
                target = torch.from_numpy(labels[batch_indices]).to(device)
            else:
                target = torch.tensor([labels[i] for i in batch_indices], device=device)
            with torch.autocast(device.type, dtype=half, enabled=on_gpu):
                logits = model(
                    input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)
                ).logits
                loss = loss_function(logits.float(), target)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            bar.update(1)
            postfix = {"loss": f"{loss.item():.3f}"}
            if history:
                postfix["best_val_f1"] = f"{best_f1:.3f}"
            bar.set_postfix(postfix)

            if step % eval_every == 0 or step == total_steps:
                model.eval()
                scores, thresholds = validation_scores(predictor, dataset)
                metrics = {
                    "val_accuracy": scores.accuracy,
                    "val_macro_f1": scores.macro_f1,
                    "train_loss": float(loss.item()),
                    "epoch": step / steps_per_epoch,
                    **({"val_micro_f1": scores.micro_f1} if multilabel else {}),
                }
                history.append({"step": step, **metrics})
                if on_eval:
                    on_eval(step, metrics)
                if scores.macro_f1 > best_f1:
                    best_f1, best_step, evals_without_gain = scores.macro_f1, step, 0
                    best_state = copy.deepcopy(model.state_dict())
                    best_thresholds = thresholds
                else:
                    evals_without_gain += 1
                log.info(
                    "step %d: val macro-F1 %.4f accuracy %.4f",
                    step,
                    scores.macro_f1,
                    scores.accuracy,
                )
                if evals_without_gain >= config.patience:
                    log.info("early stop at step %d: no gain for %d evaluations", step, config.patience)
                    stop = True
            if stop or step >= total_steps:
                stop = True
                break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    if best_thresholds is not None:
        model.config.label_thresholds = best_thresholds  # saved with the model (config.json)
    model = model.to("cpu").eval()
    return FineTuneResult(
        model=model,
        tokenizer=tokenizer,
        best_val_macro_f1=best_f1,
        best_step=best_step,
        steps=step,
        train_seconds=time.perf_counter() - started,
        history=history,
        thresholds=best_thresholds,
    )


def optimizer_and_schedule(model: torch.nn.Module, config: OptimizerConfig, total_steps: int):
    """AdamW with linear warm-up then linear decay to zero at ``total_steps`` (the BERT recipe)."""
    optimizer = torch.optim.AdamW(_parameter_groups(model, config.weight_decay), lr=config.learning_rate)
    warmup = int(total_steps * config.warmup_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min(
            (step + 1) / max(warmup, 1),
            max(0.0, (total_steps - step) / max(total_steps - warmup, 1)),
        ),
    )
    return optimizer, scheduler


def validation_scores(predictor: EmotionPredictor, dataset: EmotionDataset):
    """The model's scores on the validation split, and for a multi-label model the per-label
    thresholds tuned there (set on ``predictor``; None for a single-label model). Labels are
    matched by name, so a model may order them otherwise than the data."""
    probabilities = predictor.predict_proba(dataset.texts("validation"))
    if dataset.multilabel:
        order = [predictor.labels.index(label) for label in dataset.labels]
        truth = dataset.label_matrix("validation")
        thresholds = tune_thresholds(truth, probabilities[:, order], dataset.labels)
        predictor.set_thresholds(thresholds)
        decided = predictor.decisions(probabilities)[:, order]
        return evaluate_multilabel(truth, decided, dataset.labels), thresholds
    label2id = dataset.label2id
    predicted = np.array([label2id.get(predictor.labels[i], -1) for i in probabilities.argmax(axis=1)])
    return evaluate(dataset.label_ids("validation"), predicted, dataset.labels), None


def class_weights(labels: list[int], num_labels: int, scheme: str) -> torch.Tensor | None:
    """Per-class loss weights, normalised to mean 1 over the training rows."""
    if scheme == "none":
        return None
    counts = np.bincount(labels, minlength=num_labels).astype(np.float64)
    weights = 1.0 / np.sqrt(np.maximum(counts, 1))
    weights *= len(labels) / float((weights * counts).sum())
    return torch.tensor(weights, dtype=torch.float32)


def positive_weights(labels: np.ndarray, scheme: str, cap: float = 30.0) -> torch.Tensor | None:
    """Multi-label ``pos_weight``: sqrt(negatives / positives) per label, capped so a label seen
    a handful of times cannot dominate the loss."""
    if scheme == "none":
        return None
    positives = labels.sum(axis=0).astype(np.float64)
    ratio = (len(labels) - positives) / np.maximum(positives, 1)
    return torch.tensor(np.minimum(np.sqrt(np.maximum(ratio, 1.0)), cap), dtype=torch.float32)


def _parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    # Biases and LayerNorm weights are not decayed, as in the BERT recipe.
    decay = [parameter for parameter in model.parameters() if parameter.ndim > 1]
    no_decay = [parameter for parameter in model.parameters() if parameter.ndim <= 1]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def length_grouped_batches(
    encoded: list[list[int]], batch_size: int, rng: np.random.Generator
) -> list[list[int]]:
    """Shuffled batches of similar lengths: shuffle, sort within chunks of 50 batches, shuffle
    the batches. Padding drops sharply while each epoch's order still varies."""
    order = rng.permutation(len(encoded))
    chunk = batch_size * 50
    batches: list[list[int]] = []
    for start in range(0, len(order), chunk):
        block = sorted(order[start : start + chunk], key=lambda i: len(encoded[i]))
        batches.extend(block[i : i + batch_size] for i in range(0, len(block), batch_size))
    rng.shuffle(batches)
    return batches
