"""The status-bar line: pipeline rates, latency, losses and recording state from a state's stats."""

from __future__ import annotations

import time

from display.state import ViewState


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _num(stats: dict, key: str, fmt: str) -> str:
    value = stats.get(key)
    return format(value, fmt) if _is_number(value) else "-"


def format_status(
    state: ViewState, source: str, *, view_fps: float = 0.0, now: float | None = None, rejected: int = 0
) -> str:
    """One line summarising ``state.stats`` (missing or non-numeric figures show as '-'), prefixed by the data
    source, with the viewer's own display rate and the count of ``rejected`` malformed messages."""
    s = state.stats
    recording = s.get("recording")
    parts = [
        source,
        f"t {state.t}",
        f"input {_num(s, 'input_hz', '.1f')} Hz",
        f"volumes {_num(s, 'volume_hz', '.1f')} Hz",
        f"latency p50 {_num(s, 'latency_ms_p50', '.0f')} / p99 {_num(s, 'latency_ms_p99', '.0f')} ms",
        f"lost {_num(s, 'lost', '.0f')}",
        f"skipped {_num(s, 'skipped', '.0f')}",
        f"queue {_num(s, 'queue_depth', '.0f')}",
        f"REC {recording}" if recording else "not recording",
    ]
    calibrated = s.get("last_calibration_host_s")
    if _is_number(calibrated):
        parts.append(
            f"calibrated {(s.get('host_time_s') or now or time.time()) - calibrated:.0f} s ago "
            f"({_num(s, 'calibrations', '.0f')} scans, {_num(s, 'reference_neurons', '.0f')} neurons, "
            f"paused {_num(s, 'calibration_pause_s', '.1f')} s = "
            f"{_num(s, 'calibration_frames_cost', '.0f')} frames)"
        )
    if view_fps:
        parts.append(f"display {view_fps:.0f} fps")
    if rejected:
        parts.append(f"rejected {rejected} bad message(s)")
    if state.sent is not None:
        parts.append(f"age {((now or time.time()) - state.sent) * 1000:.0f} ms")
    return "  |  ".join(parts)
