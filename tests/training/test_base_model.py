from __future__ import annotations

import pytest

from training.base_model import (
    OFFLINE_BASE_MODEL,
    BaseModelError,
    convert_minilm_to_distilbert,
    max_hidden_state_difference,
    resolve_base_model,
)

SENTENCES = [
    "i feel so happy and grateful today",
    "this delay makes me absolutely furious",
    "i am scared of what tomorrow brings",
    "wow",
]


@pytest.fixture(scope="module")
def converted_base(tmp_path_factory):
    return convert_minilm_to_distilbert(tmp_path_factory.mktemp("offline-base") / "distilbert")


def test_converted_encoder_matches_the_original_bert(converted_base):
    assert max_hidden_state_difference(converted_base, SENTENCES) <= 1e-3


def test_converted_folder_is_a_distilbert_with_tokenizer(converted_base):
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(converted_base)
    assert (config.model_type, config.dim, config.n_layers, config.n_heads, config.hidden_dim) == (
        "distilbert",
        384,
        6,
        12,
        1536,
    )
    tokenizer = AutoTokenizer.from_pretrained(converted_base)
    assert tokenizer("Hello")["input_ids"] == [101, 7592, 102]  # uncased WordPiece, as DistilBERT


def test_auto_falls_back_to_offline_base_without_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    base = resolve_base_model("auto", tmp_path / "cache")
    assert base.origin == OFFLINE_BASE_MODEL
    assert (tmp_path / "cache" / "distilbert-from-all-minilm-l6-v2" / "model.safetensors").is_file()


def test_local_folder_is_used_as_is(tiny_base_model, tmp_path):
    base = resolve_base_model(str(tiny_base_model), tmp_path)
    assert (base.origin, base.path) == ("local", str(tiny_base_model.resolve()))


def test_folder_without_config_is_refused(tmp_path):
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(BaseModelError, match=r"no config\.json"):
        resolve_base_model(str(tmp_path / "not-a-model"), tmp_path)


def test_unreachable_hub_id_names_the_offline_option(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    with pytest.raises(BaseModelError, match="minilm-offline"):
        resolve_base_model("someone/unknown-model", tmp_path)
