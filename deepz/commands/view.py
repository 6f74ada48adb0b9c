"""`deepz view` (live over zmq, or a recording; offscreen screenshots) and `deepz bench view` (refresh)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from deepz.results import write_json

if TYPE_CHECKING:
    from storage import RecordingReader


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"size {text!r} is not WIDTHxHEIGHT, e.g. 1600x1000") from None
    return width, height


def _open_reader(path: Path) -> RecordingReader:
    """Open a recording, or exit with the reader's explanation (missing, foreign, newer format ...)."""
    from storage import RecordingError, RecordingReader

    try:
        return RecordingReader(path)
    except RecordingError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from None


def register(app: typer.Typer, bench: typer.Typer) -> None:
    @app.command("view")
    def view(
        recording: Path = typer.Argument(None, help="A recording (REC.zarr) to browse."),
        connect: str = typer.Option(
            None, "--connect", help="Live: the pipeline's zmq address, e.g. tcp://127.0.0.1:5557."
        ),
        screenshot: Path = typer.Option(
            None, "--screenshot", help="Render the recording offscreen to this PNG and exit."
        ),
        t: int = typer.Option(
            None, "--t", help="Frame index to show (default: the recording's last volume)."
        ),
        size: str = typer.Option("1600x1000", "--size", help="Window size WIDTHxHEIGHT."),
        server_key: Path = typer.Option(
            None, "--server-key", help="Live over CurveZMQ: the publisher's public key file (server.key)."
        ),
        client_key: Path = typer.Option(
            None, "--client-key", help="Live over CurveZMQ: this viewer's key pair (client.key_secret)."
        ),
    ) -> None:
        """Show live volumes, neurons and traces from a running pipeline, or browse a recording."""
        if (recording is None) == (connect is None):
            typer.secho(
                "error: give either a recording path (deepz view REC.zarr) or --connect ADDRESS "
                "(deepz view --connect tcp://127.0.0.1:5557), not both or neither.",
                err=True,
                fg=typer.colors.RED,
            )
            raise typer.Exit(2)
        if (server_key is None) != (client_key is None) or (server_key is not None and connect is None):
            typer.secho(
                "error: CurveZMQ needs both --server-key and --client-key, with --connect (see deepz keys).",
                err=True,
                fg=typer.colors.RED,
            )
            raise typer.Exit(2)
        if connect is not None:
            if screenshot is not None:
                typer.secho(
                    "error: --screenshot renders a recording; pass REC.zarr instead of --connect.",
                    err=True,
                    fg=typer.colors.RED,
                )
                raise typer.Exit(2)
            from display.app import run_live

            try:
                code = run_live(connect, server_key, client_key)
            except OSError as exc:
                typer.secho(
                    f"error: {exc}. Give the pipeline's address, "
                    "e.g. tcp://127.0.0.1:5557 (deepz live logs it).",
                    err=True,
                    fg=typer.colors.RED,
                )
                raise typer.Exit(2) from None
            raise typer.Exit(code)
        reader = _open_reader(recording)
        if reader.n_frames == 0:
            typer.secho(
                f"error: recording {recording} holds no frames yet: nothing to show.",
                err=True,
                fg=typer.colors.RED,
            )
            raise typer.Exit(1)
        if t is not None and not 0 <= t < reader.n_frames:
            typer.secho(
                f"error: --t {t} is outside the recording (frames 0..{reader.n_frames - 1}).",
                err=True,
                fg=typer.colors.RED,
            )
            raise typer.Exit(2)
        if screenshot is not None:
            from display.screenshot import render_screenshot

            try:
                typer.echo(f"wrote {render_screenshot(reader, screenshot, t=t, size=_size(size))}")
            except (
                ValueError,
                OSError,
            ) as exc:  # too small (usage: 2); unreadable frame or unwritable PNG (1)
                typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
                raise typer.Exit(2 if isinstance(exc, ValueError) else 1) from None
            return
        from display.app import run_recording

        raise typer.Exit(run_recording(reader, t))

    @bench.command("view")
    def bench_view(
        json_out: Path = typer.Option(None, "--json", help="Write the results here."),
        updates: int = typer.Option(300, "--updates", help="Timed full-window updates."),
        size: int = typer.Option(512, "--size", help="Frame and volume side in pixels."),
        planes: int = typer.Option(32, "--planes", help="Volume planes K."),
        neurons: int = typer.Option(180, "--neurons", help="Tracked neurons (markers, labels, raster rows)."),
    ) -> None:
        """Measure viewer refresh: full-window updates per second (raw, XY/XZ/YZ, markers, traces, status)."""
        from deepz.lab.view_bench import ViewBenchConfig
        from deepz.lab.view_bench import bench_view as run

        report = run(
            ViewBenchConfig(updates=updates, height=size, width=size, planes=planes, neurons=neurons)
        )
        typer.echo(
            f"view refresh: {report['fps']:.1f} fps (p50 {report['update_ms']['p50']:.1f} ms, "
            f"p99 {report['update_ms']['p99']:.1f} ms per update; target {report['target_fps']:.0f} fps); "
            f"{report['cpu_ms_per_update']:.1f} ms CPU per update = {report['cpu_limited_fps']:.0f} fps on a "
            f"free core (load average {report['load_average_1min']:.1f})"
        )
        if json_out is not None:
            write_json(json_out, report)
            typer.echo(f"wrote {json_out}")
