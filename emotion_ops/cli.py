"""The ``emotion-ops`` command line: one entry point for every stage of the stack.

The roof: nothing imports it. This module only puts the commands in order; each lives in the
module of its stage (``emotion_ops.commands``), a thin layer over one function of a lower
package, and imports that stage when it runs: MLflow, SQLAlchemy, torch or Evidently would
otherwise make every command (``--help`` included) pay seconds and hundreds of MB to start.
"""

from __future__ import annotations

import typer

from emotion_ops.commands import bench, labels, monitoring, serving, training

app = typer.Typer(
    name="emotion-ops",
    help="Train, promote and serve an emotion classifier, with MLflow registry and monitoring.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# The order --help lists them in.
app.command()(training.train)
app.command()(training.register)
app.command()(training.promote)
app.command()(training.rollback)
app.command()(training.models)
app.command("base-model")(training.base_model_command)
app.command()(serving.serve)
app.command()(serving.up)
app.command()(serving.shadow)
app.command()(monitoring.drift)
app.command()(monitoring.monitor)
app.command()(monitoring.retrain)
app.command()(training.distill)
app.command()(bench.soak)
app.add_typer(monitoring.reports_app, name="reports")
app.add_typer(labels.label_app, name="label")
app.add_typer(bench.bench_app, name="bench")


def main() -> None:
    app()
