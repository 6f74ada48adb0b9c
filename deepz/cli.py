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
COMMAND_MODULES = (
    "acquire", "model", "engines", "storage", "tracking", "view", "pipeline", "info", "superres", "isotropic",
)


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages.")) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    for handler in logging.getLogger().handlers:
        handler.setLevel(level)  # pymmcore-plus sets the root logger to DEBUG when it is imported
    if not verbose:
        for noisy in NOISY_LOGGERS:
            logging.getLogger(noisy).setLevel(logging.WARNING)


for _name in COMMAND_MODULES:
    importlib.import_module(f"deepz.commands.{_name}").register(app, bench)
