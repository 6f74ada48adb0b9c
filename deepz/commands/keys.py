"""`deepz keys`: CurveZMQ certificates so a live stream published beyond this machine is encrypted and
watched only by viewers holding a key."""

from __future__ import annotations

from pathlib import Path

import typer


app = typer.Typer()
"""The CurveZMQ key commands; deepz.cli merges them into `deepz`."""


@app.command("keys")
def keys(
    out: Path = typer.Option(..., "--out", help="Folder for the server and client key files."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace keys already in the folder."),
) -> None:
    """Make a CurveZMQ server and client key pair for `deepz live --publish tcp://*:PORT`."""
    from wire.curve import create_keys

    paths = create_keys(out, overwrite=overwrite)
    typer.echo(f"wrote {', '.join(str(p) for p in paths.values())}")
    typer.echo(
        f"publisher: [publish] curve_secret_key = \"{paths['server.key_secret']}\" in the run config; it admits "
        f"the clients whose public .key files are in {out}\n"
        f"viewer:    deepz view --connect tcp://HOST:PORT --server-key {paths['server.key']} "
        f"--client-key {paths['client.key_secret']}   (copy those two files to the viewing machine; keep "
        "the .key_secret files private)"
    )
