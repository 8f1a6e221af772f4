"""The compute ceiling: a model in-process, batched, on each runtime and precision (texts/s),
with its test accuracy. What the served rate is compared with."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

ALL_VARIANTS = (("torch", "fp32"), ("torch", "int8"), ("onnx", "fp32"), ("onnx", "int8"))


def ceiling(
    bundle,
    texts: list[str],
    test_texts: list[str],
    test_labels: list[str] | None,
    variants: tuple[tuple[str, str], ...] = ALL_VARIANTS,
) -> dict:
    """In-process batched throughput on each runtime and precision of ``variants`` (default:
    all), with test accuracy (None without ``test_labels``: a model with random weights).

    Two ways to use the cores, and the ceiling is the better one: one process whose runtime
    spreads each forward over every core, and one single-threaded process per core, each with
    its share of the texts (the layout the service's workers use).
    """
    from core.inference.runtime import load_predictor  # torch: kept out of the drift child

    cores = os.cpu_count() or 1
    results = {}
    for runtime, precision in variants:
        options = predictor_options(bundle, runtime, precision)
        predictor = load_predictor(bundle.model_dir, threads=cores, **options)
        predictor.predict_proba(texts[:64])  # warm-up
        started = time.perf_counter()
        predictor.predict_proba(texts)
        one_process = len(texts) / (time.perf_counter() - started)
        per_core = _parallel_throughput(bundle.model_dir, options, texts, cores) if cores > 1 else one_process
        accuracy = None if test_labels is None else round(accuracy_of(predictor, test_texts, test_labels), 4)
        results[f"{runtime}-{precision}"] = {
            "runtime": runtime,
            "precision": precision,
            "texts_per_s": round(max(one_process, per_core), 1),
            "one_process_texts_per_s": round(one_process, 1),
            "process_per_core_texts_per_s": round(per_core, 1),
            "test_accuracy": accuracy,
        }
    return results


def accuracy_of(predictor, texts: list[str], labels: list[str]) -> float:
    """Share of ``texts`` whose most probable label is the given one (labels matched by name)."""
    predicted = predictor.predict_proba(texts).argmax(axis=1)
    return float(np.mean([predictor.labels[i] == label for i, label in zip(predicted, labels, strict=True)]))


def predictor_options(bundle, runtime: str, precision: str) -> dict:
    return {
        "runtime": runtime,
        "quantize": precision == "int8",
        "max_length": bundle.card["max_length"],
        "batch_size": 64,
    }


def _parallel_throughput(model_dir: Path, options: dict, texts: list[str], processes: int) -> float:
    """Texts/s of ``processes`` single-threaded processes, each on every n-th text, timed from a
    common start (a barrier after loading and warming up) to the last one's end."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(processes), context.Queue()
    shards = [texts[index::processes] for index in range(processes)]
    children = [
        context.Process(target=_ceiling_child, args=(model_dir, options, shard, barrier, results))
        for shard in shards
    ]
    for child in children:
        child.start()
    try:
        seconds = [results.get(timeout=600) for _ in children]
    finally:
        for child in children:
            child.join(timeout=60)
    return len(texts) / max(seconds)


def _ceiling_child(model_dir: Path, options: dict, texts: list[str], barrier, results) -> None:
    from core.inference.runtime import load_predictor

    predictor = load_predictor(model_dir, threads=1, **options)
    predictor.predict_proba(texts[:64])  # warm-up
    barrier.wait()
    started = time.perf_counter()
    predictor.predict_proba(texts)
    results.put(time.perf_counter() - started)
