"""`deepz view` (live over zmq, or a recording; offscreen screenshots) and `deepz bench view` (refresh)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from deepz.config import ConfigError
from deepz.results import check_writable, write_json

if TYPE_CHECKING:
    from storage import RecordingReader


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--size {text!r} is not WIDTHxHEIGHT, e.g. 1600x1000") from None
    return width, height


def _open(path: Path) -> tuple[RecordingReader | None, RecordingReader | None]:
    """(recording, tracks store) to show for ``path``: a recording alone, or a tracks store (`deepz track`)
    over the recording it was tracked from when that still exists, else alone."""
    from storage import RecordingError, RecordingReader

    try:
        reader = RecordingReader(path)
    except RecordingError as exc:
        raise RecordingError(
            f"deepz view opens a recording (REC.zarr) or a tracks store (REC.tracks.zarr): {exc}"
        ) from None
    if reader.n_frames:
        return reader, None
    if len(reader.tracks()["t"]) == 0:
        raise RecordingError(f"{path} holds no frames and no tracks yet: nothing to show.")
    return _tracked_source(reader), reader


def _tracked_source(tracks: RecordingReader) -> RecordingReader | None:
    """The recording a tracks store names in ``tracked_from`` (as written, or beside the store), if it still
    exists with frames of the same shape; None, said on stderr, when the neurons are shown without images."""
    from storage import RecordingError, RecordingReader

    named = tracks.attrs.get("tracked_from")
    if not named:
        return None
    source = Path(named)
    candidates = [source] if source.is_absolute() else [source, tracks.path.parent / source.name]
    for candidate in candidates:
        if not candidate.exists():
            continue
        try:
            reader = RecordingReader(candidate)
        except RecordingError as exc:
            typer.echo(f"deepz view: showing the tracks without images: {exc}", err=True)
            return None
        if reader.n_frames and reader.frame_shape == tracks.frame_shape:
            return reader
    typer.echo(
        f"deepz view: the tracked recording {named} is not at hand (or holds other frames); showing the "
        "tracks without images.",
        err=True,
    )
    return None


app = typer.Typer()
"""The viewer commands; deepz.cli merges them into `deepz`."""

bench = typer.Typer()
"""The viewer benches; deepz.cli merges them into `deepz bench`."""


@app.command("view")
def view(
    recording: Path = typer.Argument(
        None, help="A recording (REC.zarr) or a tracks store (REC.tracks.zarr from deepz track) to browse."
    ),
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
        raise ConfigError("give either a recording path (deepz view REC.zarr) or --connect ADDRESS "
                          "(deepz view --connect tcp://127.0.0.1:5557), not both or neither.")
    if (server_key is None) != (client_key is None) or (server_key is not None and connect is None):
        raise ConfigError(
            "CurveZMQ needs both --server-key and --client-key, with --connect (see deepz keys)."
        )
    if connect is not None:
        if screenshot is not None:
            raise ConfigError("--screenshot renders a recording; pass REC.zarr instead of --connect.")
        from display.app import run_live

        try:
            code = run_live(connect, server_key, client_key)
        except OSError as exc:
            raise ConfigError(
                f"{exc}. Give the pipeline's address, e.g. tcp://127.0.0.1:5557 (deepz live logs it)."
            ) from None
        raise typer.Exit(code)
    reader, tracks = _open(recording)
    n_frames = reader.n_frames if reader is not None else int(tracks.tracks()["t"].max()) + 1
    if t is not None and not 0 <= t < n_frames:
        raise ConfigError(f"--t {t} is outside the recording (frames 0..{n_frames - 1}).")
    if screenshot is not None:
        from display.screenshot import render_screenshot

        try:
            path = render_screenshot(reader, screenshot, t=t, size=_size(size), tracks=tracks)
        except ValueError as exc:  # smaller than the window's minimum; unreadable frames are OSErrors
            raise ConfigError(str(exc)) from None
        typer.echo(f"wrote {path}")
        return
    from display.app import run_recording

    raise typer.Exit(run_recording(reader, t, tracks=tracks))


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

    if json_out is not None:
        check_writable(json_out)
    report = run(
        ViewBenchConfig(updates=updates, height=size, width=size, planes=planes, neurons=neurons)
    )
    typer.echo(
        f"view refresh: {report['fps']:.1f} fps (p50 {report['update_ms']['p50']:.1f} ms, "
        f"p99 {report['update_ms']['p99']:.1f} ms per update; target {report['target_fps']:.0f} fps); "
        f"{report['cpu_ms_per_update']:.1f} ms CPU per update = {report['cpu_limited_fps']:.0f} fps on a "
        f"free core (load average {report['machine']['load_average_1m']:.1f})"
    )
    if json_out is not None:
        write_json(json_out, report)
        typer.echo(f"wrote {json_out}")
