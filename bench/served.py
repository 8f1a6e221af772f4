"""``emotion-ops bench``: one run, on loopback, of everything the performance targets compare.

1. The compute ceiling: the champion in-process, batched, on PyTorch and ONNX Runtime, fp32 and
   int8 (texts/s), with each one's test accuracy.
2. The baseline: the same model behind FastAPI + uvicorn, one forward per request
   (``emotion_ops/baseline_server.py``).
3. Our BentoML service on both runtimes and precisions with monitoring on, and the served
   runtime and precision with the prediction log and custom metrics off (monitoring overhead).
4. The drift job on 10k and 100k logged rows (seconds and peak memory of its process).
5. When the registry holds a multi-label champion (``EMOTION_MULTILABEL_MODEL_NAME``), it too,
   served on the default runtime and precision, beside the single-label one.
6. Models side by side: when the champion has a distilled student (or is one), the other model
   of the pair served on the default runtime and precision; and a randomly initialised model of
   the seeds' size (DistilBERT-base, 6 x 768) in the seed-style pipeline, for what the seeds
   would have served on the same machine. Accuracy, in-process texts/s, served req/s and
   latency, and each server's memory.

``emotion-ops bench threads`` serves the champion in several process and thread layouts
(workers, intra-op threads per worker, ONNX Runtime's spinning) under the same load.

Load is a closed loop: ``concurrency`` clients, each sending its next request when the last one
is answered, one test-set text per request, a bounded number of requests per case. All servers
run side by side and the cases take turns in rounds, so drift in the machine's speed hits them
alike. Results go to ``var/bench/<time>/results.json`` and ``results.md`` (and
``var/bench/latest.md``).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from mlflow.exceptions import MlflowException

from core.registry import connect, load_bundle
from core.settings import MonitorSettings, ServiceSettings
from core.store import Store, TrafficWindow
from core.store.rows import prediction_row
from emotion_ops.processes import answers, bentoml_ready, free_port, processor_name, running_process
from service.launch import serve_command
from training.data import load_emotion_dataset

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    """One server under load: which layout, runtime and precision, monitoring on or off."""

    name: str  # baseline | bentoml | bentoml-no-monitoring | bentoml-no-novelty | bentoml-multilabel
    runtime: str
    precision: str
    monitoring: bool = True
    task: str = "single"  # which registered model the service serves
    novelty: bool = True
    model: str = "champion"  # champion | compared (its teacher or student) | seed-size
    workers: int | None = None  # None: the service's defaults
    threads: int | None = None
    spinning: bool | None = None

    @property
    def variant(self) -> str:
        return f"{self.runtime}-{self.precision}"


def service_cases(runtime: str, precision: str) -> tuple[Case, ...]:
    """Our service on both runtimes and precisions, and with monitoring off on the served
    default (``runtime``, ``precision``)."""
    return (
        Case("bentoml", "torch", "fp32"),
        Case("bentoml", "torch", "int8"),
        Case("bentoml", "onnx", "fp32"),
        Case("bentoml", "onnx", "int8"),
        Case("bentoml-no-monitoring", runtime, precision, monitoring=False),
        Case("bentoml-no-novelty", runtime, precision, novelty=False),
    )


BASELINE = Case("baseline", "torch", "fp32", monitoring=False)


@dataclass
class LoadResult:
    case: Case
    concurrency: int
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list, repr=False)

    def add(self, latencies: list[float], errors: int, seconds: float) -> None:
        self.requests += len(latencies) + errors
        self.errors += errors
        self.seconds += seconds
        self.latencies_ms.extend(latencies)

    @property
    def throughput(self) -> float:
        return (self.requests - self.errors) / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    def row(self) -> dict:
        return {
            "case": self.case.name,
            "model": self.case.model,
            "runtime": self.case.runtime,
            "precision": self.case.precision,
            "concurrency": self.concurrency,
            "requests": self.requests,
            "errors": self.errors,
            "req_per_s": round(self.throughput, 1),
            "texts_per_s": round(self.throughput, 1),  # one text per request
            "p50_ms": round(self.percentile(50), 1),
            "p95_ms": round(self.percentile(95), 1),
            "p99_ms": round(self.percentile(99), 1),
        }


async def _closed_loop(url: str, texts: list[str], concurrency: int, requests: int, offset: int = 0) -> tuple:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    counter = iter(range(offset, offset + requests))
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def client() -> None:
            nonlocal errors
            for index in counter:
                started = time.perf_counter()
                try:
                    async with session.post(url, json={"text": texts[index % len(texts)]}) as response:
                        await response.read()
                        ok = response.status == 200
                except aiohttp.ClientError:
                    ok = False
                if ok:
                    latencies.append((time.perf_counter() - started) * 1000)
                else:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return latencies, errors, time.perf_counter() - started


def interleaved_load(
    urls: dict[Case, str], texts: list[str], concurrency: int, requests: int, rounds: int, progress=print
) -> list[LoadResult]:
    """``requests`` per case at ``concurrency`` clients, in ``rounds`` rounds that take the cases in
    turn: a machine that slows down or speeds up mid-run (2 shared cores) then affects every case
    alike instead of whichever ran at that moment. Every case gets a short warm-up first (lazy
    imports, allocator growth, both workers' first forwards)."""
    for url in urls.values():
        asyncio.run(_closed_loop(f"{url}/predict", texts, concurrency, min(requests, 2 * concurrency)))
    results = {case: LoadResult(case, concurrency) for case in urls}
    per_round = [requests // rounds + (index < requests % rounds) for index in range(rounds)]
    sent = 0
    for count in per_round:
        for case, url in urls.items():
            results[case].add(*asyncio.run(_closed_loop(f"{url}/predict", texts, concurrency, count, sent)))
        sent += count
    for result in results.values():
        progress(f"  c={concurrency} {result.case.name} {result.case.variant}: {result.row()}")
    return list(results.values())


def serve_and_load(cases, start, texts, concurrency, requests: int, rounds: int, progress):
    """Start every case's server (``start(case)`` gives its context manager and URL), put them
    under the interleaved load at each client count, and measure each server's memory after
    it; returns the load results and RSS MB by case. Every server is stopped on the way out."""
    loads: list[LoadResult] = []
    with ExitStack() as servers:
        urls, processes = {}, {}
        for case in cases:
            progress(f"starting {case.name} {case.variant}")
            server, url = start(case)
            processes[case] = servers.enter_context(server)
            urls[case] = url
        for level in concurrency:
            progress(f"load at {level} clients, {requests} requests per case in {rounds} interleaved rounds")
            loads += interleaved_load(urls, texts, level, requests, rounds, progress)
        return loads, {case: tree_rss_mb(process) for case, process in processes.items()}


def _bento(settings: ServiceSettings, work: Path, case: Case):
    """The service as ``emotion-ops serve`` runs it, on a free port: (context manager, base URL).

    Each server has its own BentoML home (``serve_command``), so none blanks another's metrics."""
    port = free_port()
    command, serve_env = serve_command(settings.model_copy(update={"port": port, "host": "127.0.0.1"}))
    env = {
        **serve_env,
        "EMOTION_HOST": "127.0.0.1",
        "EMOTION_PORT": str(port),
        "EMOTION_ALLOW_ANONYMOUS": "true",  # the load client sends no key
        "EMOTION_RUNTIME": case.runtime,
        "EMOTION_QUANTIZE": str(case.precision == "int8").lower(),
        "EMOTION_MONITORING": str(case.monitoring).lower(),
        "EMOTION_TASK": case.task,
        "EMOTION_NOVELTY": str(case.novelty).lower(),
        "EMOTION_MODEL_NAME": settings.multilabel_model_name
        if case.task == "multilabel"
        else settings.model_name,
        "EMOTION_PREDICTION_LOG_URL": f"sqlite:///{work / f'predictions-{uuid.uuid4().hex[:6]}.db'}",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
    }
    if case.model == "compared":
        env["EMOTION_MODEL_ALIAS"] = COMPARED_ALIAS
    for name, value in (
        ("WORKERS", case.workers),
        ("THREADS", case.threads),
        ("ONNX_SPINNING", case.spinning),
    ):
        if value is not None:
            env[f"EMOTION_{name}"] = str(value).lower()
    env.pop("EMOTION_API_KEY", None)
    url = f"http://127.0.0.1:{port}"
    log = work / f"{case.name}-{case.variant}-{uuid.uuid4().hex[:4]}.log"
    return running_process(command, env, bentoml_ready(url), log, 300, PROJECT_ROOT), url


def _baseline(bundle, work: Path, name: str = "baseline"):
    port = free_port()
    command = [sys.executable, "-m", "emotion_ops.baseline_server", "--model-dir", str(bundle.model_dir)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    url = f"http://127.0.0.1:{port}"
    ready = lambda: answers(f"{url}/health")  # noqa: E731
    return running_process(
        [*command, "--port", str(port)], env, ready, work / f"{name}.log", 300, PROJECT_ROOT
    ), url


# A temporary alias on the model the champion is compared with, so a service can serve it.
COMPARED_ALIAS = "bench-compared"


@dataclass(frozen=True)
class LocalModel:
    """A model folder with the card entries the bench reads (a model that is not registered)."""

    model_dir: Path
    card: dict


# DistilBERT-base, the seeds' model: 6 layers x 768 (12 heads of 64, 3072 hidden).
SEED_SHAPE = (6, 768)


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
        num_labels=len(labels),
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


def tree_rss_mb(process) -> float:
    """Resident memory of a server and every process it started (BentoML's workers)."""
    import psutil

    try:
        root = psutil.Process(process.pid)
        members = [root, *root.children(recursive=True)]
        total = 0
        for member in members:
            try:
                total += member.memory_info().rss
            except psutil.NoSuchProcess:
                continue
    except psutil.NoSuchProcess:
        return float("nan")
    return round(total / 2**20, 1)


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
        options = _predictor_options(bundle, runtime, precision)
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


def _predictor_options(bundle, runtime: str, precision: str) -> dict:
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


def drift_timing(
    settings: ServiceSettings, bundle, texts: list[str], sizes: tuple[int, ...], work: Path
) -> list[dict]:
    """Time the drift job on ``sizes`` logged rows, each run in a fresh process for its peak RSS."""
    predictor = bundle.predictor(batch_size=64)
    predictions = predictor.predict(texts)
    results = []
    for size in sizes:
        url = f"sqlite:///{work / f'drift-{size}.db'}"
        store = Store.open(url).predictions
        start = datetime.now(UTC) - timedelta(hours=1)
        rows = []
        for index in range(size):
            prediction = predictions[index % len(predictions)]
            rows.append(
                prediction_row(
                    request_id=str(uuid.uuid4()),
                    created_at=start + timedelta(milliseconds=index),
                    model_name=bundle.name,
                    model_version=bundle.version,
                    text=texts[index % len(texts)],
                    emotion=prediction.emotion,
                    confidence=prediction.confidence,
                    probabilities=prediction.probabilities,
                    latency_ms=10.0,
                    truncated=prediction.truncated,
                    tokens=prediction.tokens,
                    uncertain=False,
                )
            )
            if len(rows) == 10_000:
                store.insert_many(rows)
                rows = []
        store.insert_many(rows)
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "emotion_ops.bench",
                "--drift-child",
                url,
                str(size),
                str(work / "reports"),
            ],
            cwd=PROJECT_ROOT,
            env={**os.environ, "EMOTION_VAR_DIR": str(settings.var_dir)},
            capture_output=True,
            text=True,
            check=True,
        )
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return results


def _drift_child(url: str, size: int, output: str) -> None:
    """Child process: one drift run over the last ``size`` rows; prints seconds and peak RSS."""
    # The drift job's own imports (Evidently) count toward the child's peak memory.
    from monitoring.drift import analyse, sample_text_chars
    from monitoring.policy import drift_policy

    settings = MonitorSettings()
    bundle = load_bundle(connect(settings), settings)
    reference = bundle.reference()
    policy = drift_policy(settings)
    window = TrafficWindow(bundle.version, rows=size)
    started = time.perf_counter()
    result = analyse(
        Store.connect(url).predictions.stream_window(window, max_chars=sample_text_chars(policy)),
        window,
        reference,
        bundle.labels,
        bundle.name,
        policy,
        Path(output),
    )
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "rows": size,
                "analysed_rows": result.analysed_rows,
                "verdict": result.verdict,
                "seconds": round(seconds, 1),
                "peak_rss_mb": round(peak_mb),
                "torch_loaded": "torch" in sys.modules,  # the drift job needs none: it must not count
            }
        )
    )


def run(
    settings: ServiceSettings,
    data_source: str,
    concurrency: tuple[int, ...] = (1, 8, 32),
    requests: int = 1000,
    rounds: int = 4,
    ceiling_texts: int = 1024,
    drift_sizes: tuple[int, ...] = (10_000, 100_000),
    output_root: Path | None = None,
    progress=print,
    goemotions: str | None = None,
    seed_shape: tuple[int, int] = SEED_SHAPE,
) -> Path:
    """Run every case; returns the folder with results.json and results.md. ``goemotions``
    (a GoEmotions folder) adds each model's accuracy on its dev rows with one of the six labels."""
    client = connect(settings)
    bundle = load_bundle(client, settings)
    test = load_emotion_dataset(data_source, splits=("test",)).splits["test"]
    texts = test["text"].tolist()
    output = (output_root or settings.var_dir / "bench") / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    output.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-", dir=output))

    progress("compute ceiling (in-process, batched)")
    pool = (texts * (ceiling_texts // len(texts) + 1))[:ceiling_texts]
    compute = ceiling(bundle, pool, texts, test["label"].tolist())
    progress(f"  {compute}")

    served_precision = "int8" if settings.quantize else "fp32"
    served = ((settings.runtime, served_precision),)
    cases = [BASELINE, *service_cases(settings.runtime, served_precision)]
    multilabel = _multilabel_champion(settings)
    if multilabel is not None:
        progress(f"and the multi-label champion {multilabel.name} v{multilabel.version}")
        cases.append(Case("bentoml-multilabel", settings.runtime, served_precision, task="multilabel"))

    # Models side by side: the champion's teacher or student, and the seeds' model size.
    compared = compared_model(settings, bundle)
    # GoEmotions dev's six-label rows, read once for every model that is scored on them.
    dev = (
        load_emotion_dataset(goemotions, splits=("test",), label_set="six").splits["test"]
        if goemotions
        else None
    )
    models = {"champion": _model_entry(bundle, "champion", compute, served, dev)}
    if compared is not None:
        role, other = compared
        progress(f"and the champion's {role}, version {other.version}")
        other_compute = ceiling(other, pool, texts, test["label"].tolist(), variants=served)
        models["compared"] = _model_entry(other, role, other_compute, served, dev)
        cases.append(Case(f"bentoml-{role}", settings.runtime, served_precision, model="compared"))
    seeds = seed_size_model(bundle, work / "seed-size", seed_shape)
    seed_compute = ceiling(seeds, pool, texts, None, variants=(("torch", "fp32"),))
    models["seed-size"] = {
        "role": "seeds' size, random weights",
        "version": None,
        "shape": model_shape(seeds.model_dir),
        "texts_per_s": seed_compute["torch-fp32"]["texts_per_s"],
        "variant": "torch-fp32",
        "test_accuracy": None,
        "goemotions_accuracy": None,
    }
    seed_case = Case("baseline-seed-size", "torch", "fp32", monitoring=False, model="seed-size")
    cases.append(seed_case)

    def start(case: Case):
        if case is BASELINE:
            return _baseline(bundle, work)
        if case is seed_case:
            return _baseline(seeds, work, "baseline-seed-size")
        return _bento(settings, work, case)

    if compared is not None:  # set just before the try that removes it again
        client.set_registered_model_alias(settings.model_name, COMPARED_ALIAS, compared[1].version)
    try:
        loads, memory = serve_and_load(cases, start, texts, concurrency, requests, rounds, progress)
        rss = {f"{case.name} {case.variant}": megabytes for case, megabytes in memory.items()}
    finally:
        if compared is not None:
            client.delete_registered_model_alias(settings.model_name, COMPARED_ALIAS)

    drift = []
    if drift_sizes:
        progress(f"drift job on {', '.join(map(str, drift_sizes))} logged rows")
        drift = drift_timing(settings, bundle, texts, drift_sizes, work)

    results = summarise(
        bundle,
        f"{settings.runtime}-{served_precision}",
        compute,
        loads,
        drift,
        concurrency,
        requests,
        rounds,
        models,
    )
    results["rss_mb"] = rss
    results["models"] = models
    if multilabel is not None:
        results["multilabel_model"] = {"name": multilabel.name, "version": multilabel.version}
    (output / "results.json").write_text(json.dumps(results, indent=2))
    markdown = to_markdown(results)
    (output / "results.md").write_text(markdown)
    (output.parent / "latest.md").write_text(markdown)
    shutil.rmtree(work, ignore_errors=True)
    return output


def _model_entry(bundle, role: str, compute: dict, served, goemotions_dev) -> dict:
    """One model's row of the side-by-side table (the served runtime and precision)."""
    runtime, precision = served[0]
    variant = f"{runtime}-{precision}"
    entry = {
        "role": role,
        "version": bundle.version,
        "shape": model_shape(bundle.model_dir),
        "variant": variant,
        "texts_per_s": compute[variant]["texts_per_s"],
        "test_accuracy": compute[variant]["test_accuracy"],
        # Each runtime and precision the ceiling measured (the seed-style row is PyTorch fp32).
        "test_accuracy_by_variant": {name: c["test_accuracy"] for name, c in compute.items()},
        "goemotions_accuracy": None,
    }
    if goemotions_dev is not None:
        from core.inference.runtime import load_predictor

        dev = goemotions_dev[goemotions_dev["label"].isin(bundle.labels)]
        predictor = load_predictor(bundle.model_dir, **_predictor_options(bundle, runtime, precision))
        entry["goemotions_accuracy"] = round(
            accuracy_of(predictor, dev["text"].tolist(), dev["label"].tolist()), 4
        )
        entry["goemotions_rows"] = len(dev)
    return entry


def _multilabel_champion(settings: ServiceSettings):
    """The multi-label champion's bundle, or None when there is none to compare."""
    from core.registry import RegistryError

    multilabel = settings.model_copy(
        update={"task": "multilabel", "model_name": settings.multilabel_model_name}
    )
    try:
        return load_bundle(connect(multilabel), multilabel)
    except RegistryError:
        return None


def summarise(
    bundle,
    served: str,
    compute: dict,
    loads: list[LoadResult],
    drift: list[dict],
    concurrency,
    requests,
    rounds,
    models: dict | None = None,
) -> dict:
    rows = [result.row() for result in loads]
    by_key = {(r["case"], r["runtime"], r["precision"], r["concurrency"]): r for r in rows}
    for row in rows:
        baseline = by_key.get(("baseline", "torch", "fp32", row["concurrency"]))
        row["vs_baseline"] = _ratio(row["req_per_s"], baseline["req_per_s"]) if baseline else None
        if row.get("model", "champion") == "champion":
            same_model = compute[f"{row['runtime']}-{row['precision']}"]["texts_per_s"]
        else:  # the teacher, student or seed-size model: against its own ceiling
            same_model = (models or {})[row["model"]]["texts_per_s"]
        row["vs_ceiling"] = _ratio(row["texts_per_s"], same_model)
        if row["case"] == "bentoml":
            off = by_key.get(("bentoml-no-monitoring", row["runtime"], row["precision"], row["concurrency"]))
            overhead = 1 - _ratio(row["req_per_s"], off["req_per_s"]) if off else None
            row["monitoring_overhead"] = None if overhead is None else round(overhead, 3)
            plain = by_key.get(("bentoml-no-novelty", row["runtime"], row["precision"], row["concurrency"]))
            cost = 1 - _ratio(row["req_per_s"], plain["req_per_s"]) if plain else None
            row["novelty_cost"] = None if cost is None else round(cost, 3)
        if row["case"] == "bentoml-multilabel":
            # Against the single-label model on the same runtime and precision, in the same rounds.
            single = by_key.get(("bentoml", row["runtime"], row["precision"], row["concurrency"]))
            row["vs_single_label"] = _ratio(row["req_per_s"], single["req_per_s"]) if single else None
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "processor": processor_name(),
        },
        "model": {"name": bundle.name, "version": bundle.version, "max_length": bundle.card["max_length"]},
        "served": served,
        "requests_per_case": requests,
        "rounds": rounds,
        "concurrency": list(concurrency),
        "compute_ceiling": compute,
        "load": rows,
        "drift": drift,
    }


def _ratio(value: float, reference: float) -> float:
    """Three significant digits: a tiny test model's ceiling is thousands of times its served
    rate, and a fixed number of decimals would round that ratio to zero."""
    return float(f"{value / reference:.3g}") if reference else float("nan")


def to_markdown(results: dict) -> str:
    machine = results["machine"]
    lines = [
        f"Measured {results['measured_at']} on {machine['cpus']} CPUs ({machine['processor']}, "
        f"{machine['platform']}), model {results['model']['name']} v{results['model']['version']}, "
        f"{results['requests_per_case']} requests per case and client count in {results['rounds']} "
        f"interleaved rounds, one test-set text per request; the service's default is {results['served']}.",
        "",
        "| compute ceiling (in-process, batches of up to 64) | texts/s | test accuracy |",
        "| --- | ---: | ---: |",
    ]
    for variant, c in results["compute_ceiling"].items():
        lines.append(f"| {variant} | {c['texts_per_s']} | {100 * c['test_accuracy']:.2f} % |")
    lines += [
        "",
        "The ceiling is the better of one process using every core and one single-threaded process "
        "per core (the service's layout); both are in results.json.",
        "",
        "| case | runtime | precision | clients | req/s | p50 ms | p95 ms | p99 ms | errors | vs baseline "
        "| vs ceiling | monitoring overhead | novelty cost |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in sorted(results["load"], key=lambda r: r["concurrency"]):
        overhead, novelty = r.get("monitoring_overhead"), r.get("novelty_cost")
        lines.append(
            f"| {r['case']} | {r['runtime']} | {r['precision']} | {r['concurrency']} | {r['req_per_s']} | "
            f"{r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | {r['errors']} | {r['vs_baseline']}x | "
            f"{r['vs_ceiling']:.0%} | {'' if overhead is None else f'{overhead:.1%}'} | "
            f"{'' if novelty is None else f'{novelty:.1%}'} |"
        )
    if results["drift"]:
        lines += [
            "",
            "| drift job: logged rows | analysed (sample) | seconds | peak RSS MB |",
            "| ---: | ---: | ---: | ---: |",
        ]
        for d in results["drift"]:
            lines.append(f"| {d['rows']} | {d['analysed_rows']} | {d['seconds']} | {d['peak_rss_mb']} |")
    multilabel = [r for r in results["load"] if r["case"] == "bentoml-multilabel"]
    if multilabel:
        model = results["multilabel_model"]
        lines += [
            "",
            f"Multi-label model {model['name']} v{model['version']} served beside the single-label "
            "one (its vs-ceiling column is against the single-label model's ceiling):",
            "",
            "| clients | multi-label req/s | p95 ms | vs single-label |",
            "| ---: | ---: | ---: | ---: |",
        ]
        for r in sorted(multilabel, key=lambda r: r["concurrency"]):
            lines.append(
                f"| {r['concurrency']} | {r['req_per_s']} | {r['p95_ms']} | {r['vs_single_label']}x |"
            )
    if results.get("models"):
        lines += ["", *models_table(results)]
    return "\n".join(lines) + "\n"


def models_table(results: dict) -> list[str]:
    """The models side by side: each on its own server (the champion and its teacher or student
    on the service's default, the seed-size model and the champion in the seed-style pipeline)."""
    models, rows = results["models"], results["load"]
    low, high = min(results["concurrency"]), max(results["concurrency"])
    memory = results.get("rss_mb", {})

    def load(case: str, variant: str, clients: int) -> dict:
        return next(
            (
                r
                for r in rows
                if (r["case"], f"{r['runtime']}-{r['precision']}", r["concurrency"])
                == (case, variant, clients)
            ),
            {},
        )

    def percent(value) -> str:
        return "" if value is None else f"{100 * value:.2f} %"

    served = results["served"]
    compared = models.get("compared")
    entries = [("champion", "bentoml", served)]
    if compared:
        entries.append(("compared", f"bentoml-{compared['role']}", served))
    entries += [("champion", "baseline", "torch-fp32"), ("seed-size", "baseline-seed-size", "torch-fp32")]
    lines = [
        f"Models side by side (served: our service on {served}; seed-style: FastAPI, one PyTorch fp32 "
        "forward per request). Accuracy on the runtime and precision of the row (GoEmotions on the "
        "served one only); memory is each server's processes together, after the load.",
        "",
        f"| model | layers x width | served as | dair-ai test accuracy | GoEmotions dev (six labels) "
        f"accuracy | in-process texts/s | req/s, {low} client(s) | p50 ms, {low} | req/s, {high} clients "
        f"| p95 ms, {high} | RSS MB |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, case, variant in entries:
        model = models[key]
        one, many = load(case, variant, low), load(case, variant, high)
        name = model["role"] if model.get("version") is None else f"{model['role']} (v{model['version']})"
        in_process = model["texts_per_s"] if case.startswith("bentoml") else ""
        accuracy = model.get("test_accuracy_by_variant", {}).get(variant, model["test_accuracy"])
        goemotions = model["goemotions_accuracy"] if variant == model["variant"] else None
        lines.append(
            f"| {name} | {model['shape']} | {case} {variant} | {percent(accuracy)} | "
            f"{percent(goemotions)} | {in_process} | {one.get('req_per_s', '')} | "
            f"{one.get('p50_ms', '')} | {many.get('req_per_s', '')} | {many.get('p95_ms', '')} | "
            f"{memory.get(f'{case} {variant}', '')} |"
        )
    if compared:
        student, teacher = (
            ("champion", "compared") if compared["role"] == "teacher" else ("compared", "champion")
        )
        cases = {"champion": "bentoml", "compared": f"bentoml-{compared['role']}"}
        ratio = lambda metric, clients: _ratio(  # noqa: E731
            load(cases[student], served, clients).get(metric, float("nan")),
            load(cases[teacher], served, clients).get(metric, float("nan")),
        )
        gain = lambda key: 100 * (models[student][key] - models[teacher][key])  # noqa: E731
        goemotions = (
            f", GoEmotions dev {gain('goemotions_accuracy'):+.2f} pt"
            if models[student]["goemotions_accuracy"] is not None
            else ""
        )
        lines += [
            "",
            f"Student vs teacher, same run: req/s at {high} clients {ratio('req_per_s', high)}x, "
            f"p95 at {high} clients {ratio('p95_ms', high)}x, p50 at {low} client(s) "
            f"{ratio('p50_ms', low)}x; test accuracy {gain('test_accuracy'):+.2f} pt{goemotions}.",
        ]
    return lines


# (workers, intra-op threads per worker, ONNX Runtime spinning); the first is the default. A
# pool of one thread has nobody to spin, so spinning is only varied with two or more.
LAYOUTS: tuple[tuple[int, int, bool | None], ...] = (
    (2, 1, None),
    (1, 2, True),
    (1, 2, False),
    (2, 2, True),
    (2, 2, False),
    (4, 1, None),
)


def layout_case(settings: ServiceSettings, workers: int, threads: int, spinning: bool | None) -> Case:
    precision = "int8" if settings.quantize else "fp32"
    spin = "" if spinning is None else ("-spin" if spinning else "-nospin")
    return Case(
        f"w{workers}-t{threads}{spin}",
        settings.runtime,
        precision,
        workers=workers,
        threads=threads,
        spinning=spinning,
    )


def run_layouts(
    settings: ServiceSettings,
    data_source: str,
    layouts: tuple[tuple[int, int, bool | None], ...] = LAYOUTS,
    concurrency: tuple[int, ...] = (1, 32),
    requests: int = 1000,
    rounds: int = 4,
    output_root: Path | None = None,
    progress=print,
) -> Path:
    """The champion on the default runtime and precision in each process and thread layout,
    side by side under the same interleaved load; returns the folder with results.json and .md."""
    bundle = load_bundle(connect(settings), settings)
    texts = load_emotion_dataset(data_source, splits=("test",)).splits["test"]["text"].tolist()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    output = (output_root or settings.var_dir / "bench") / f"{stamp}-threads"
    output.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-", dir=output))
    cases = [layout_case(settings, *layout) for layout in layouts]
    loads, memory = serve_and_load(
        cases, lambda case: _bento(settings, work, case), texts, concurrency, requests, rounds, progress
    )
    rss = {case.name: megabytes for case, megabytes in memory.items()}
    cores = os.cpu_count() or 1
    rows = []
    for result in loads:
        case = result.case
        rows.append(
            {
                **result.row(),
                "layout": case.name,
                "workers": case.workers,
                "threads_per_worker": case.threads,
                "spinning": case.spinning,
                "workers_per_core": round(case.workers / cores, 2),
                "rss_mb": rss[case.name],
            }
        )
    default = cases[0].name
    for row in rows:
        reference = next(r for r in rows if r["layout"] == default and r["concurrency"] == row["concurrency"])
        row["vs_default"] = _ratio(row["req_per_s"], reference["req_per_s"])
    results = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": cores, "processor": processor_name(), "platform": platform.platform()},
        "model": {"name": bundle.name, "version": bundle.version, "shape": model_shape(bundle.model_dir)},
        "served": f"{settings.runtime}-{'int8' if settings.quantize else 'fp32'}",
        "requests_per_case": requests,
        "rounds": rounds,
        "default_layout": default,
        "load": rows,
    }
    (output / "results.json").write_text(json.dumps(results, indent=2))
    (output / "results.md").write_text(layouts_markdown(results))
    shutil.rmtree(work, ignore_errors=True)
    return output


def layouts_markdown(results: dict) -> str:
    machine = results["machine"]
    lines = [
        f"Measured {results['measured_at']} on {machine['cpus']} CPUs ({machine['processor']}), model "
        f"{results['model']['name']} v{results['model']['version']} ({results['model']['shape']}) on "
        f"{results['served']}, {results['requests_per_case']} requests per layout and client count in "
        f"{results['rounds']} interleaved rounds; vs default is against {results['default_layout']}.",
        "",
        "| layout | workers | threads per worker | spinning | workers per core | clients | req/s | p50 ms "
        "| p95 ms | p99 ms | errors | vs default | RSS MB |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in sorted(results["load"], key=lambda r: r["concurrency"]):
        spinning = "n/a" if r["spinning"] is None else ("on" if r["spinning"] else "off")
        lines.append(
            f"| {r['layout']} | {r['workers']} | {r['threads_per_worker']} | {spinning} | "
            f"{r['workers_per_core']} | {r['concurrency']} | {r['req_per_s']} | {r['p50_ms']} | "
            f"{r['p95_ms']} | {r['p99_ms']} | {r['errors']} | {r['vs_default']}x | {r['rss_mb']} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--drift-child":
        _drift_child(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        sys.exit("usage: emotion-ops bench (this module's own entry is for its drift child process)")
