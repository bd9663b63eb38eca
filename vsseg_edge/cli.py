"""The `vsseg-edge` command line.

Each room of the package contributes its commands through a `commands.py` module with a
`register(app, data_app)` function. Those modules import only typer and the standard library at the
top; heavy imports (torch, onnx, cv2 …) happen inside the command bodies, so `--help` is instant and
commands that do not need torch run without it.
"""

from __future__ import annotations

import importlib
import sys

import typer
from typer.core import TyperGroup

from . import __version__

COMMAND_MODULES = (
    "vsseg_edge.data.commands",
    "vsseg_edge.metrics.commands",
    "vsseg_edge.train.commands",
    "vsseg_edge.export.commands",
    "vsseg_edge.calib.commands",
    "vsseg_edge.engine.commands",
    "vsseg_edge.importer.commands",
    "vsseg_edge.runtime.commands",
    "vsseg_edge.bench.commands",
    "vsseg_edge.serve.commands",
    "vsseg_edge.doctor",
    "vsseg_edge.demo",
    "vsseg_edge.zoo.commands",
)

# `vsseg-edge --help` lists the commands in the order of the pipeline (DESIGN.md), whatever order the rooms
# register them in; a command not named here comes after the named ones (before doctor and demo).
PIPELINE_ORDER = (
    "models",
    "data",
    "train",
    "import-weights",
    "export",
    "import",
    "calibrate",
    "build-engine",
    "run",
    "bench",
    "eval",
)
LAST = ("doctor", "demo")


class PipelineOrder(TyperGroup):
    def list_commands(self, ctx) -> list[str]:
        names = list(self.commands)
        rank = {n: i for i, n in enumerate(PIPELINE_ORDER)}
        tail = {n: len(PIPELINE_ORDER) + 1 + i for i, n in enumerate(LAST)}
        return sorted(names, key=lambda n: rank.get(n, tail.get(n, len(PIPELINE_ORDER))))


app = typer.Typer(
    name="vsseg-edge",
    help="Temporally consistent real-time semantic segmentation: train, export, calibrate, build, run, benchmark.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=PipelineOrder,
)
data_app = typer.Typer(help="Datasets: synthesise the street-scene set, compute optical flow.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _version(value: bool):
    if value:
        typer.echo(f"vsseg-edge {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
):
    pass


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app, data_app)


def main() -> None:
    """Console entry point: a user error becomes one line on stderr and exit code 2, no traceback.

    An optional package missing where a command imports it directly (torch for `train`, onnx for `export` …)
    is a user error too: one line naming the package and the extra that installs it.

    Ctrl-C and SIGTERM unwind the command (its temporary files go) and exit 130 / 143 with one line.
    """
    from .core.errors import Interrupted, VssegError, install_hint
    from .core.signals import raise_on_signals

    restore = raise_on_signals()
    try:
        app()
    except VssegError as exc:
        typer.echo(f"error: {_one_line(exc)}", err=True)
        sys.exit(2)
    except ModuleNotFoundError as exc:
        hint = install_hint(exc.name or "")
        if hint is None:
            raise
        command = next((a for a in sys.argv[1:] if not a.startswith("-")), "this command")
        typer.echo(
            f"error: {command} needs {exc.name.split('.')[0]}, which is not installed; install it with: {hint}",
            err=True,
        )
        sys.exit(2)
    except Interrupted as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    finally:
        restore()


def _one_line(exc: BaseException) -> str:
    """The message on one line (a message quoting a multi-line library error keeps its lines joined)."""
    return " ".join(str(exc).split("\n")).strip()


if __name__ == "__main__":
    main()
