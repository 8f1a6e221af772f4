"""``emotion-ops bench``: one run, on loopback, of everything the performance targets compare.

1. The compute ceiling: the champion in-process, batched, on PyTorch and ONNX Runtime, fp32 and
   int8 (texts/s), with each one's test accuracy.
2. The baseline: the same model behind FastAPI + uvicorn, one forward per request
   (``bench/baseline_server.py``).
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

``emotion-ops bench threads`` (``bench.layouts``) serves the champion in several process and thread layouts
(workers, intra-op threads per worker, ONNX Runtime's spinning) under the same load.

Load is a closed loop: ``concurrency`` clients, each sending its next request when the last one
is answered, one test-set text per request, a bounded number of requests per case. All servers
run side by side and the cases take turns in rounds, so drift in the machine's speed hits them
alike. Results go to ``var/bench/<time>/results.json`` and ``results.md`` (and
``var/bench/latest.md``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from bench.ceiling import accuracy_of, ceiling, predictor_options
from bench.drift_job import drift_timing
from bench.load import LoadResult, ratio, serve_and_load
from bench.models import SEED_SHAPE, compared_model, model_shape, multilabel_champion, seed_size_model
from bench.processes import machine_facts
from bench.servers import BASELINE, COMPARED_ALIAS, Case, serve_baseline, serve_case, service_cases
from core.registry import connect, load_bundle
from core.settings import ServiceSettings
from training.data import load_emotion_dataset


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
    multilabel = multilabel_champion(settings)
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
            return serve_baseline(bundle, work)
        if case is seed_case:
            return serve_baseline(seeds, work, "baseline-seed-size")
        return serve_case(settings, work, case)

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
        predictor = load_predictor(bundle.model_dir, **predictor_options(bundle, runtime, precision))
        entry["goemotions_accuracy"] = round(
            accuracy_of(predictor, dev["text"].tolist(), dev["label"].tolist()), 4
        )
        entry["goemotions_rows"] = len(dev)
    return entry


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
        row["vs_baseline"] = ratio(row["req_per_s"], baseline["req_per_s"]) if baseline else None
        if row.get("model", "champion") == "champion":
            same_model = compute[f"{row['runtime']}-{row['precision']}"]["texts_per_s"]
        else:  # the teacher, student or seed-size model: against its own ceiling
            same_model = (models or {})[row["model"]]["texts_per_s"]
        row["vs_ceiling"] = ratio(row["texts_per_s"], same_model)
        if row["case"] == "bentoml":
            off = by_key.get(("bentoml-no-monitoring", row["runtime"], row["precision"], row["concurrency"]))
            overhead = 1 - ratio(row["req_per_s"], off["req_per_s"]) if off else None
            row["monitoring_overhead"] = None if overhead is None else round(overhead, 3)
            plain = by_key.get(("bentoml-no-novelty", row["runtime"], row["precision"], row["concurrency"]))
            cost = 1 - ratio(row["req_per_s"], plain["req_per_s"]) if plain else None
            row["novelty_cost"] = None if cost is None else round(cost, 3)
        if row["case"] == "bentoml-multilabel":
            # Against the single-label model on the same runtime and precision, in the same rounds.
            single = by_key.get(("bentoml", row["runtime"], row["precision"], row["concurrency"]))
            row["vs_single_label"] = ratio(row["req_per_s"], single["req_per_s"]) if single else None
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "model": {"name": bundle.name, "version": bundle.version, "max_length": bundle.card["max_length"]},
        "served": served,
        "requests_per_case": requests,
        "rounds": rounds,
        "concurrency": list(concurrency),
        "compute_ceiling": compute,
        "load": rows,
        "drift": drift,
    }


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
    lines += served_to_ceiling(results)
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


def served_to_ceiling(results: dict) -> list[str]:
    """The headline: the served default at the most clients against its in-process ceiling,
    and where each request's CPU went (the server's processes, its model, the load client's)."""
    runtime, precision = results["served"].split("-")
    high = max(results["concurrency"])
    row = next(
        (
            r
            for r in results["load"]
            if (r["case"], r["runtime"], r["precision"], r["concurrency"])
            == ("bentoml", runtime, precision, high)
        ),
        None,
    )
    if row is None:
        return []
    ceiling = results["compute_ceiling"][results["served"]]["texts_per_s"]
    line = (
        f"Served to ceiling: the default ({results['served']}) at {high} clients answered "
        f"{row['req_per_s']} req/s against {ceiling} texts/s in-process: **{row['vs_ceiling']:.0%}** "
        "(target ≥ 80 %)."
    )
    if row.get("model_cpu_ms") is not None:
        line += (
            f" CPU per request: the server's processes {row['server_cpu_ms']} ms, of which the model "
            f"{row['model_cpu_ms']} ms and the request path {row['outside_model_cpu_ms']} ms (target "
            f"≤ 0.8 ms); the load client, on the same cores, {row['client_cpu_ms']} ms."
        )
    return ["", line]


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

        def versus(metric: str, clients: int) -> float:
            return ratio(
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
            f"Student vs teacher, same run: req/s at {high} clients {versus('req_per_s', high)}x, "
            f"p95 at {high} clients {versus('p95_ms', high)}x, p50 at {low} client(s) "
            f"{versus('p50_ms', low)}x; test accuracy {gain('test_accuracy'):+.2f} pt{goemotions}.",
        ]
    return lines
