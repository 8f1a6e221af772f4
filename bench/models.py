"""The models a benchmark serves beside the champion: its teacher or student from the registry,
the multi-label champion, and a randomly initialised model of the seeds' size."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mlflow.exceptions import MlflowException

from core.registry import connect, load_bundle
from core.settings import ServiceSettings


@dataclass(frozen=True)
class LocalModel:
    """A model folder with the card entries the bench reads (a model that is not registered)."""

    model_dir: Path
    card: dict


# DistilBERT-base, the seeds' model: 6 layers x 768 (12 heads of 64, 3072 hidden).
SEED_SHAPE = (6, 768)


def parse_seed_shape(spec: str) -> tuple[int, int]:
    """``--seed-size``: LAYERSxWIDTH, the width a multiple of heads of about 64."""
    parts = spec.lower().split("x")
    if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
        raise ValueError(f"--seed-size takes LAYERSxWIDTH such as 6x768, not '{spec}'")
    layers, width = (int(part) for part in parts)
    if layers < 1 or width < 1:
        raise ValueError("--seed-size values must be at least 1")
    if width % max(1, width // 64):  # heads of about 64 must divide the width
        raise ValueError(
            f"--seed-size width {width} does not split into {width // 64} equal heads; pick a multiple of 64"
        )
    return layers, width


def seed_size_model(bundle, folder: Path, shape: tuple[int, int] = SEED_SHAPE) -> LocalModel:
    """A DistilBERT of ``shape`` (layers, width; heads of 64, a hidden layer 4 x as wide),
    randomly initialised, with the champion's labels, tokenizer and max length: the seeds'
    compute per text, for speed only (its answers are noise)."""
    import torch
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertForSequenceClassification

    model_dir = folder / "model"
    tokenizer = AutoTokenizer.from_pretrained(bundle.model_dir)
    labels = list(bundle.labels)
    torch.manual_seed(0)
    layers, width = shape
    config = DistilBertConfig(
        vocab_size=len(tokenizer),  # added tokens included
        n_layers=layers,
        dim=width,
        n_heads=max(1, width // 64),
        hidden_dim=4 * width,
        id2label=dict(enumerate(labels)),
        label2id={label: index for index, label in enumerate(labels)},
    )
    DistilBertForSequenceClassification(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    card = {"max_length": bundle.card["max_length"], "random_weights": True}
    (folder / "model_card.json").write_text(json.dumps(card))
    return LocalModel(model_dir, card)


def compared_model(settings: ServiceSettings, champion):
    """The model the champion is compared with, as (role, bundle): its teacher when the
    champion is a distilled student, else its newest student; None when it has neither."""
    from core.registry import download_version

    client = connect(settings)
    teacher = (champion.card.get("distillation") or {}).get("teacher")
    if teacher:
        try:
            version = client.get_model_version(settings.model_name, teacher["version"])
        except MlflowException:  # the teacher's version was deleted: nothing to compare with
            return None
        return "teacher", download_version(client, settings, version)
    students = [
        version
        for version in client.search_model_versions(f"name='{settings.model_name}'")
        if (version.tags or {}).get("distilled_from") == champion.version
    ]
    if not students:
        return None
    newest = max(students, key=lambda version: int(version.version))
    return "student", download_version(client, settings, newest)


def model_shape(model_dir: Path) -> str:
    """Encoder layers x width, from the model's config."""
    config = json.loads((model_dir / "config.json").read_text())
    layers = config.get("n_layers", config.get("num_hidden_layers"))
    width = config.get("dim", config.get("hidden_size"))
    return f"{layers} x {width}"


def multilabel_champion(settings: ServiceSettings):
    """The multi-label champion's bundle, or None when there is none to compare."""
    from core.registry import RegistryError

    multilabel = settings.model_copy(
        update={"task": "multilabel", "model_name": settings.multilabel_model_name}
    )
    try:
        return load_bundle(connect(multilabel), multilabel)
    except RegistryError:
        return None
