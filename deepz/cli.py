"""The ``deepz`` command line: one typer app with the error boundary; each area's module in deepz/commands holds
its commands in module-level sub-apps (``app``, ``bench``, ``simulate``), merged here."""

from __future__ import annotations

import logging

import click
import typer
from typer.core import TyperGroup

from deepz.commands import (
    acquire,
    activity,
    calibrate,
    cluster,
    engines,
    export,
    info,
    isotropic,
    keys,
    model,
    pipeline,
    storage,
    superres,
    tracking,
    view,
)
from deepz.logs import configure_logging


class _UserErrorBoundary(TyperGroup):
    """Turns every failure a user can fix (deepz.errors.USER_ERRORS) into one red line and exit code 2."""

    def invoke(self, ctx):  # noqa: ANN001, ANN201 - click's signature
        try:
            return super().invoke(ctx)
        except (typer.Exit, click.exceptions.Exit, click.ClickException):
            raise  # a command's own exit or usage error, not a failure: importing torch here (after a Qt viewer
            # ran) would also cost seconds and has hung the interpreter's exit
        except Exception as exc:
            from deepz.errors import USER_ERRORS  # imports torch: only once something failed

            if not isinstance(exc, USER_ERRORS):
                raise
            typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
            raise typer.Exit(2) from None


app = typer.Typer(
    cls=_UserErrorBoundary,
    name="deepz",
    help="deepz-live: real-time Deep-Z virtual refocusing of live wide-field microscopy.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
bench = typer.Typer(help="Measured throughput, latency and resource use, written as JSON.", no_args_is_help=True)
simulate = typer.Typer(help="Render simulated data sets.", no_args_is_help=True)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"deepz-live {version('deepz-live')}")
        raise typer.Exit()


@app.callback()
def _main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True, help="Print the version."),
) -> None:
    configure_logging(logging.DEBUG if verbose else logging.INFO)


# each area's commands, in the order `deepz --help` lists them
for _area in (acquire, model, tracking, view, pipeline, info, superres, isotropic, activity, calibrate, keys, export,
              cluster):
    app.add_typer(_area.app)
for _area in (acquire, model, engines, storage, tracking, view, pipeline, activity, cluster):
    bench.add_typer(_area.bench)
for _area in (acquire, model, superres):
    simulate.add_typer(_area.simulate)
app.add_typer(bench, name="bench")
app.add_typer(simulate, name="simulate")
