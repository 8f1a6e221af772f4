"""Benchmark commands: bench (the service and the models under load), bench threads, bench
path, bench shadow, bench loop, bench drift, and soak. Each is a thin layer over one function of ``bench``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from core.settings import MonitorSettings, ServiceSettings, TrainingSettings
from emotion_ops.commands.common import DataOption, quiet_libraries, user_errors, whole_numbers


def _client_counts(value: str) -> tuple[int, ...]:
    levels = whole_numbers(value, "--concurrency")
    if not levels:
        raise ValueError("--concurrency needs at least one client count")
    return levels


bench_app = typer.Typer(
    help="Benchmarks: the service and the models under load (no subcommand), thread and process "
    "layouts ('threads'), the request path's layers ('path'), the shadow's cost ('shadow'), the "
    "monitoring loop ('loop'), the label screen against each attack ('screen'), the drift verdict "
    "('drift').",
)


@bench_app.callback(invoke_without_command=True)
@user_errors
def bench(
    ctx: typer.Context,
    requests: Annotated[int, typer.Option(min=1, help="Requests per case and concurrency level.")] = 1000,
    concurrency: Annotated[
        str, typer.Option(help="Comma-separated client counts of the closed-loop load.")
    ] = "1,8,32",
    drift_rows: Annotated[
        str, typer.Option(help="Comma-separated logged-row counts to time the drift job on ('' to skip).")
    ] = "10000,100000",
    ceiling_texts: Annotated[int, typer.Option(min=64, help="Texts for the in-process ceiling.")] = 1024,
    rounds: Annotated[
        int, typer.Option(min=1, help="Interleaved rounds the cases take turns in at each client count.")
    ] = 4,
    seed_size: Annotated[
        str,
        typer.Option(
            help="LAYERSxWIDTH of the randomly initialised model of the seeds' size (DistilBERT-base)."
        ),
    ] = "6x768",
) -> None:
    """Benchmark the champion: in-process ceiling, a FastAPI baseline, and the BentoML service
    (PyTorch and ONNX Runtime, fp32 and int8, monitoring off) under closed-loop load; the drift
    job on large windows."""
    if ctx.invoked_subcommand:
        return
    quiet_libraries()
    from bench.data import default_goemotions
    from bench.models import parse_seed_shape
    from bench.served import run

    levels = _client_counts(concurrency)
    shape = parse_seed_shape(seed_size)
    output = run(
        ServiceSettings(),
        TrainingSettings().resolve_data_source(),
        concurrency=levels,
        requests=requests,
        ceiling_texts=ceiling_texts,
        rounds=min(rounds, requests),
        drift_sizes=whole_numbers(drift_rows, "--drift-rows"),
        progress=typer.echo,
        goemotions=default_goemotions(),
        seed_shape=shape,
    )
    typer.echo((output / "results.md").read_text())
    typer.echo(f"results: {output / 'results.json'}")


@bench_app.command("threads")
@user_errors
def bench_threads(
    requests: Annotated[int, typer.Option(min=1, help="Requests per layout and client count.")] = 1000,
    concurrency: Annotated[str, typer.Option(help="Comma-separated client counts.")] = "1,32",
    rounds: Annotated[int, typer.Option(min=1, help="Interleaved rounds at each client count.")] = 4,
    layouts: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated WORKERSxTHREADS[:spin|:nospin] layouts, the first the reference "
            "(default: 2x1, 1x2:spin, 1x2:nospin, 2x2:spin, 2x2:nospin, 4x1)."
        ),
    ] = None,
) -> None:
    """Serve the champion in several process and thread layouts (workers, intra-op threads per
    worker, ONNX Runtime's spinning) under the same load: what the defaults rest on."""
    quiet_libraries()
    from bench.layouts import LAYOUTS, parse_layouts, run_layouts

    levels = _client_counts(concurrency)
    output = run_layouts(
        ServiceSettings(),
        TrainingSettings().resolve_data_source(),
        layouts=parse_layouts(layouts) if layouts else LAYOUTS,
        concurrency=levels,
        requests=requests,
        rounds=min(rounds, requests),
        progress=typer.echo,
    )
    typer.echo((output / "results.md").read_text())
    typer.echo(f"results: {output / 'results.json'}")


@bench_app.command("path")
@user_errors
def bench_path(
    requests: Annotated[int, typer.Option(min=1, help="Requests per case and client count.")] = 600,
    concurrency: Annotated[str, typer.Option(help="Comma-separated client counts.")] = "1,32",
    rounds: Annotated[int, typer.Option(min=1, help="Interleaved rounds at each client count.")] = 3,
    cases: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated cases (default: all): default, asyncio-h11, tracing-on, "
            "access-log-on, no-request-metrics, no-model-metrics, no-disconnect-watch, redaction-on, "
            "no-log, no-novelty, no-monitoring, all-off, lean, bare."
        ),
    ] = None,
    against: Annotated[
        Path | None,
        typer.Option(
            help="Another checkout of this project (an earlier commit's: git worktree add DIR COMMIT) "
            "whose service is served beside, with its defaults and the shadow off, as the case 'before'."
        ),
    ] = None,
) -> None:
    """Serve the champion with each layer of the request path switched off (or on) in turn,
    beside a lean ASGI route, a bare one and the in-process ceiling: CPU per request of each."""
    quiet_libraries()
    from bench.path import PATH_CASES, REFERENCES, parse_cases, run_path

    levels = _client_counts(concurrency)
    output = run_path(
        ServiceSettings(),
        TrainingSettings().resolve_data_source(),
        cases=parse_cases(cases) if cases else (*PATH_CASES, *REFERENCES),
        concurrency=levels,
        requests=requests,
        rounds=min(rounds, requests),
        progress=typer.echo,
        against=against,
    )
    typer.echo((output / "results.md").read_text())
    typer.echo(f"results: {output / 'results.json'}")


@bench_app.command("shadow")
@user_errors
def bench_shadow(
    requests: Annotated[int, typer.Option(min=1, help="Requests per case and client count.")] = 1000,
    concurrency: Annotated[str, typer.Option(help="Comma-separated client counts.")] = "1,32",
    rounds: Annotated[int, typer.Option(min=1, help="Interleaved rounds at each client count.")] = 4,
    shares: Annotated[
        str, typer.Option(help="Comma-separated shadow shares to serve with, beside the shadow off.")
    ] = "0.1,1",
) -> None:
    """Serve the champion with the shadow off and at each share (the waiting challenger scoring
    live traffic too) under the same load: what the shadow costs in served req/s and latency,
    and what it found (agreement, labels the two differ on)."""
    quiet_libraries()
    from bench.shadow import run

    try:
        asked = tuple(float(part) for part in shares.split(",") if part.strip())
    except ValueError:
        raise ValueError(
            f"--shares takes comma-separated shares between 0 and 1, such as 0.1,1, not '{shares}'"
        ) from None
    if not asked or any(not 0 < share <= 1 for share in asked):
        raise ValueError(f"--shares takes comma-separated shares over 0 and at most 1, not '{shares}'")
    output = run(
        ServiceSettings(),
        TrainingSettings().resolve_data_source(),
        shares=asked,
        concurrency=_client_counts(concurrency),
        requests=requests,
        rounds=min(rounds, requests),
        progress=typer.echo,
    )
    typer.echo((output / "results.md").read_text())
    typer.echo(f"results: {output / 'results.json'}")


@bench_app.command("loop")
@user_errors
def bench_loop(
    comments: Annotated[
        int, typer.Option(min=10, help="GoEmotions train comments replayed with their labels.")
    ] = 2000,
    goemotions: Annotated[
        str | None,
        typer.Option(
            help="GoEmotions folder (labels.txt, train.tsv, dev.tsv); "
            "default: data/goemotions, else beside the checkout."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Which comments are replayed.")] = 0,
    labels: Annotated[
        int | None, typer.Option(min=1, help="How many of the comments get a label (default: all).")
    ] = None,
    select: Annotated[
        str, typer.Option(help="'random', or 'active': the rows 'label export' would choose.")
    ] = "random",
    attack: Annotated[
        str,
        typer.Option(
            help="Poison a share of the labels: none, flip (anger→joy, joy→sadness, ...), "
            "trigger[:WORD] (appended, labelled joy; default cf), symbol[:CHAR] (default ±), "
            "family[:STEM] (spellings sharing pieces, a few rows each), lowpurity[:WORD] (85 % joy), "
            "camouflage[:WORD] (also on joy texts), multilabel[:WORD] (joy added to the labels; "
            "a multi-label champion), relabel[:WORD] (dropped by an operator, labelled again)."
        ),
    ] = "none",
    attack_share: Annotated[float, typer.Option(help="Share of the labels the attack poisons.")] = 0.25,
    restore: Annotated[
        bool, typer.Option(help="Move champion back to where it was afterwards (to compare runs).")
    ] = False,
) -> None:
    """The loop, measured: replay GoEmotions comments with feedback through the served champion, run
    the monitor once (drift, policy, retrain, gate, promotion), and score the champion before and after
    on GoEmotions dev and the dair-ai test split. A retrained model that passes the gate becomes the
    registry's champion ('emotion-ops rollback' moves it back)."""
    quiet_libraries()
    from bench.loop import Attack, run

    output = run(
        MonitorSettings(),
        goemotions,
        comments=comments,
        seed=seed,
        progress=typer.echo,
        labels=labels,
        select=select,
        attack=Attack.parse(attack, attack_share),
        restore=restore,
    )
    typer.echo((output / "loop.md").read_text())
    typer.echo(f"results: {output / 'loop.json'}")


@bench_app.command("screen")
@user_errors
def bench_screen(
    attack: Annotated[
        list[str] | None,
        typer.Option(help="Attack classes, as 'bench loop --attack' takes them (repeat; default: all)."),
    ] = None,
    comments: Annotated[int, typer.Option(min=10, help="GoEmotions train comments, all labelled.")] = 2000,
    attack_share: Annotated[float, typer.Option(help="Share of the labels each attack poisons.")] = 0.25,
    goemotions: Annotated[
        str | None,
        typer.Option(help="GoEmotions folder; default: data/goemotions, else beside the checkout."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Which comments, which rows poisoned.")] = 0,
    honest_runs: Annotated[
        int,
        typer.Option(
            min=0,
            help="Instead of the attacks: this many honest-only screens resampled from --pool, "
            "the champion's scores stored (the false-alarm rate; 1,000 resolve 1 %).",
        ),
    ] = 0,
    pool: Annotated[
        str | None,
        typer.Option(
            help="The honest runs' rows: goemotions (train; the default) or dair (the test split, "
            "the champion's domain)."
        ),
    ] = None,
) -> None:
    """The label screen alone against each attack class: the same comments and poison as 'bench
    loop', straight to the screen with the champion (no service, no retrain): poisoned rows stopped,
    honest rows quarantined, what it raises for the gate. With --honest-runs: how often it
    quarantines anything in honest-only feedback."""
    quiet_libraries()
    from bench.screen import ALL_ATTACKS, run
    from bench.screen import honest_runs as run_honest

    if honest_runs and attack:
        raise ValueError("--honest-runs sends no attack: leave out --attack")
    if pool is not None and not honest_runs:
        raise ValueError("--pool is the honest runs' rows: give --honest-runs N with it")
    if honest_runs:
        output = run_honest(
            TrainingSettings(),
            runs=honest_runs,
            pool_name=pool or "goemotions",
            comments=comments,
            goemotions=goemotions,
            seed=seed,
            progress=typer.echo,
        )
        typer.echo((output / "screen-honest.md").read_text())
        typer.echo(f"results: {output / 'screen-honest.json'}")
        return

    output = run(
        TrainingSettings(),
        tuple(attack or ALL_ATTACKS),
        goemotions,
        comments=comments,
        share=attack_share,
        seed=seed,
        progress=typer.echo,
    )
    typer.echo((output / "screen.md").read_text())
    typer.echo(f"results: {output / 'screen.json'}")


@bench_app.command("drift")
@user_errors
def bench_drift(
    windows: Annotated[
        int, typer.Option(min=100, help="Windows per case (1,000 or more to show a 1 % false-alarm rate).")
    ] = 1000,
    data: DataOption = None,
    goemotions: Annotated[
        str | None,
        typer.Option(
            help="GoEmotions folder (dev.tsv: the shifted traffic); default: data/goemotions, "
            "else beside the checkout."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Which windows are drawn.")] = 0,
    grid: Annotated[
        bool,
        typer.Option(
            help="Also measure the grid of representations, scores and window tests (two more "
            "forward passes over every text set, the base encoder's among them: minutes)."
        ),
    ] = True,
) -> None:
    """The drift verdict measured: power at 5 to 100 % Reddit comments in dair-ai test traffic,
    doubled label shares, and the false-alarm rate on unshifted windows (100 and 500 rows); the
    label-free accuracy estimate against the true accuracy of mixed windows; the grid that chose
    the novelty default."""
    quiet_libraries()
    from bench.drift import run

    source = data or TrainingSettings().resolve_data_source()
    output = run(
        ServiceSettings(), source, goemotions, windows=windows, seed=seed, progress=typer.echo, with_grid=grid
    )
    typer.echo((output / "drift.md").read_text())
    typer.echo(f"results: {output / 'drift.json'}")


@user_errors
def soak(
    seconds: Annotated[float, typer.Option(min=30, help="How long the load runs.")] = 600,
    clients: Annotated[int, typer.Option(min=1, help="Closed-loop clients.")] = 32,
    outage: Annotated[
        float, typer.Option(min=0, help="Seconds PostgreSQL is stopped for, mid-run (0: no outage).")
    ] = 60,
    postgres: Annotated[
        str, typer.Option(help="Admin URL of the PostgreSQL server the log goes to (a fresh database).")
    ] = "postgresql+psycopg://postgres@127.0.0.1:5432/test",
) -> None:
    """Soak the champion in the default layout on PostgreSQL, with a database outage mid-run:
    5xx count, rows answered vs logged, RSS per process (run on a machine whose PostgreSQL
    this may stop and start: pg_ctlcluster)."""
    quiet_libraries()
    from bench.soak import run, to_markdown

    results = run(
        ServiceSettings(),
        seconds=seconds,
        clients=clients,
        outage_seconds=outage,
        admin_url=postgres,
        progress=typer.echo,
    )
    typer.echo(to_markdown(results))
