"""The served-model holder without BentoML: alias resolution, swap, int8."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
from mlflow import MlflowClient

from core.settings import ServiceSettings, TrainingSettings
from service.champion import ChampionHolder
from tests.utils.factories import TINY_TRAINING
from training.pipeline import train_and_register

TEXTS = ["i feel so happy", "i am furious and mad", "i am scared", "i love and adore you"]


def test_holder_serves_the_alias_and_swaps_on_refresh(registry, tiny_base_model, tiny_data):
    settings = ServiceSettings(var_dir=registry)
    swaps = []
    holder = ChampionHolder(
        settings, on_swap=lambda old, new: swaps.append((old and old.version, new.version))
    )
    first = holder.current
    assert first.describe()["labels"] == ["anger", "fear", "joy", "love", "sadness", "surprise"]
    assert holder.refresh() is False  # alias unchanged: nothing reloaded

    outcome = train_and_register(
        TrainingSettings(var_dir=registry),
        TINY_TRAINING,
        str(tiny_data),
        str(tiny_base_model),
        with_baseline=False,
        progress=False,
    )
    MlflowClient(settings.tracking_uri).set_registered_model_alias(
        settings.model_name, "champion", outcome.model_version
    )
    assert holder.refresh() is True
    assert holder.current.version == outcome.model_version
    assert swaps == [(None, first.version), (first.version, outcome.model_version)]
    # A request that took the old model before the swap still completes on it.
    assert [p.emotion for p in first.predictor.predict(TEXTS)] == ["joy", "anger", "fear", "love"]


def test_int8_model_keeps_the_predictions(registry):
    fp32 = ChampionHolder(ServiceSettings(var_dir=registry, runtime="torch", quantize=False)).current
    int8 = ChampionHolder(ServiceSettings(var_dir=registry, runtime="torch", quantize=True)).current
    assert int8.quantized and int8.describe()["quantized"] is True
    full = fp32.predictor.predict_proba(TEXTS)
    quantized = int8.predictor.predict_proba(TEXTS)
    assert np.allclose(quantized.sum(axis=1), 1.0, atol=1e-5)
    assert (quantized.argmax(axis=1) == full.argmax(axis=1)).all()


# Mixed lengths, so batches are padded and the mask's path through the exported graph counts.
MIXED = [*TEXTS, "i feel so very happy and glad and cheerful today and i really am", "sad"]


def test_onnx_runtime_gives_the_torch_probabilities(registry):
    torch_model = ChampionHolder(ServiceSettings(var_dir=registry, runtime="torch", quantize=False)).current
    onnx_model = ChampionHolder(ServiceSettings(var_dir=registry, runtime="onnx", quantize=False)).current
    assert onnx_model.describe()["runtime"] == "onnx" and torch_model.describe()["runtime"] == "torch"
    expected = torch_model.predictor.predict_proba(MIXED)
    assert np.allclose(onnx_model.predictor.predict_proba(MIXED), expected, atol=1e-5)
    # One text at a time (no padding at all) gives the same numbers as the padded batches.
    one_by_one = np.vstack([onnx_model.predictor.predict_proba([text]) for text in MIXED])
    assert np.allclose(one_by_one, expected, atol=1e-5)

    int8 = ChampionHolder(ServiceSettings(var_dir=registry, runtime="onnx", quantize=True)).current
    quantized = int8.predictor.predict_proba(MIXED)
    assert np.allclose(quantized.sum(axis=1), 1.0, atol=1e-5)
    assert (quantized.argmax(axis=1) == expected.argmax(axis=1)).all()


def test_onnx_export_happens_once_per_version(registry):
    settings = ServiceSettings(var_dir=registry, runtime="onnx", quantize=False)
    exported = ChampionHolder(settings).current.predictor.model.path
    assert exported.is_file() and exported.parent.name == "onnx"
    first_write = exported.stat().st_mtime_ns
    again = ChampionHolder(settings).current.predictor.model.path
    assert again == exported and exported.stat().st_mtime_ns == first_write


# Run in a fresh interpreter: torch's thread pool, once started by any test, stays for good.
THREADS_AROUND_PREDICT = """
import os, sys, torch
from core.settings import ServiceSettings
from service.champion import ChampionHolder
torch.set_num_threads(2)  # what torch picks on any multi-core machine
predictor = ChampionHolder(ServiceSettings(var_dir=sys.argv[1], runtime="onnx", threads=1)).current.predictor
before = len(os.listdir("/proc/self/task"))
for _ in range(3):
    predictor.predict(sys.argv[2:])
print(before, len(os.listdir("/proc/self/task")))
"""


def test_onnx_inference_starts_no_torch_threads(registry):
    """On ONNX Runtime torch only pads and converts: an op that starts its OpenMP pool leaves
    threads spinning after every forward, which cost the server a fifth of its CPU."""
    ChampionHolder(
        ServiceSettings(var_dir=registry, runtime="onnx", threads=1)
    )  # export here, not in the child
    result = subprocess.run(
        [sys.executable, "-c", THREADS_AROUND_PREDICT, str(registry), *MIXED],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    before, after = map(int, result.stdout.split()[-2:])
    assert after == before, "predicting on ONNX Runtime started threads (torch's OpenMP pool?)"


def test_onnx_runtime_threads_spin_only_when_told(registry, monkeypatch):
    """Spinning is off by default (it cost a third of the throughput under load with two
    threads per worker: emotion-ops bench threads); EMOTION_ONNX_SPINNING=true turns it on."""
    for options, expected in (({}, "0"), ({"onnx_spinning": True}, "1")):
        monkeypatch.setenv("EMOTION_THREADS", "2")  # read by its alias only, as the service reads it
        settings = ServiceSettings(var_dir=registry, runtime="onnx", **options)
        served = ChampionHolder(settings).current
        session_options = served.predictor.model.session.get_session_options()
        assert session_options.intra_op_num_threads == 2
        assert session_options.get_session_config_entry("session.intra_op.allow_spinning") == expected
        assert served.predictor.predict(TEXTS)[0].emotion == "joy"


def test_workers_on_a_cold_cache_download_once_and_a_cut_copy_is_fetched_again(registry, tmp_path):
    """Two workers start together on a cold cache (the default layout), in two processes."""
    cold = tmp_path / "var"
    shutil.copytree(registry, cold, ignore=shutil.ignore_patterns("model-cache", "bentoml"))
    code = (
        "import sys\n"
        "from core.settings import ServiceSettings\n"
        "from core.registry import connect, load_bundle\n"
        "settings = ServiceSettings(var_dir=sys.argv[1])\n"
        "bundle = load_bundle(connect(settings), settings)\n"
        "print(sorted(p.name for p in bundle.local_dir.rglob('*') if p.is_file()))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    workers = [
        subprocess.Popen([sys.executable, "-c", code, str(cold)], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    listings = [worker.communicate(timeout=120)[0] for worker in workers]
    assert all(worker.returncode == 0 for worker in workers)
    assert listings[0] == listings[1] and "model.safetensors" in listings[0]
    cache = cold / "model-cache" / "emotion-classifier"
    (version,) = {p.name for p in cache.iterdir() if p.is_dir()}  # one copy, no partial folder left
    assert sorted(p.name for p in cache.iterdir()) == [version, f"{version}.lock"]

    # What the old race left behind: a copy with only MLmodel, once trusted forever.
    for path in sorted((cache / version).rglob("*"), reverse=True):
        if path.name != "MLmodel":
            path.unlink() if path.is_file() else path.rmdir()
    settings = ServiceSettings(var_dir=cold)
    holder = ChampionHolder(settings)
    assert [p.emotion for p in holder.current.predictor.predict(TEXTS)] == ["joy", "anger", "fear", "love"]
