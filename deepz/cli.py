"""The ``deepz`` command line: one typer app, command groups registered per area."""

from __future__ import annotations

import importlib
import logging

import typer

app = typer.Typer(
    name="deepz",
    help="deepz-live: real-time Deep-Z virtual refocusing of live wide-field microscopy.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
bench = typer.Typer(help="Measured throughput, latency and resource use, written as JSON.", no_args_is_help=True)
app.add_typer(bench, name="bench")

NOISY_LOGGERS = ("pymmcore-plus", "zarr", "numcodecs", "asyncio", "fsspec", "PIL", "matplotlib")
COMMAND_MODULES = ("acquire", "model", "engines", "storage", "tracking", "view", "pipeline", "info")


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    if not verbose:
        for noisy in NOISY_LOGGERS:
            logging.getLogger(noisy).setLevel(logging.WARNING)


for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(f"deepz.commands.{_name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"deepz.commands.{_name}":
            raise
        continue
    _module.register(app, bench)
