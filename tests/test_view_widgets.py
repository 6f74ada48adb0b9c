"""Viewer widgets on their own: contrast modes and the status line."""

from __future__ import annotations

import dataclasses
import os

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from view_data import small_states  # noqa: E402

from display.contrast import ContrastControl, ContrastMode  # noqa: E402
from display.status import format_status  # noqa: E402


def test_contrast_modes(qtbot) -> None:
    control = ContrastControl("volume")
    qtbot.addWidget(control)
    image = np.random.default_rng(0).integers(100, 5000, (256, 256)).astype(np.uint16)
    image[0, 0] = 60000  # one hot pixel: auto ignores it, min-max does not
    lo, hi = control.levels_for(image)
    assert control.mode is ContrastMode.AUTO and 100 <= lo < 200 and 4800 < hi < 5000
    assert (control.min_box.value(), control.max_box.value()) == (round(lo, 1), round(hi, 1))
    assert control.levels_for(image + 20) == (lo, hi)  # a small shift keeps the levels (no flicker)
    assert control.levels_for(image * 2)[1] > hi * 1.5  # a real change moves them
    control.mode_box.setCurrentText("min-max")
    assert control.levels_for(image, key="other") == (float(image.min()), 60000.0)
    with qtbot.waitSignal(control.changed):
        control.max_box.setValue(1234.0)  # editing a level switches to manual
    assert control.mode is ContrastMode.MANUAL and control.levels_for(image)[1] == 1234.0


def test_status_line_lists_pipeline_figures() -> None:
    state = small_states()[0]
    text = format_status(state, "live tcp://x", view_fps=31.2)
    for part in (
        "live tcp://x",
        "input 100.0 Hz",
        "volumes 10.0 Hz",
        "p50 40",
        "lost 0",
        "skipped 3",
        "not recording",
        "display 31 fps",
    ):
        assert part in text
    assert "lost -" in format_status(type(state)(t=0), "recording")


def test_unchanged_volume_is_not_redrawn_until_a_control_changes(qtbot) -> None:
    from display.window import ViewerWindow

    window = ViewerWindow("test")
    qtbot.addWidget(window)
    first, second = small_states()[:2]
    window.show_state(dataclasses.replace(first, meta={**first.meta, "volume_t": 5}))
    shown = window.volume.xz.image.image.copy()
    # a newer frame with the same volume_t: the pipeline re-sends the volume it already sent
    window.show_state(dataclasses.replace(second, t=1, meta={**second.meta, "volume_t": 5}))
    np.testing.assert_array_equal(window.volume.xz.image.image, shown)
    np.testing.assert_array_equal(window.raw.image.image, second.frame)  # the raw frame always updates
    window.mip_box.setChecked(True)  # a control change redraws from the current state
    np.testing.assert_array_equal(window.volume.xz.image.image, second.volume.max(axis=1))
    window.show_state(dataclasses.replace(first, t=2, meta={**first.meta, "volume_t": 9}))
    np.testing.assert_array_equal(window.volume.xy.image.image, first.volume.max(axis=0))


def test_automatic_selection_follows_tracked_neurons(qtbot) -> None:
    from display.window import ViewerWindow

    window = ViewerWindow("test")
    qtbot.addWidget(window)
    state = small_states()[0]
    window.show_state(state)
    chosen = window.selected_ids
    assert len(chosen) == 3
    lost = state.traces_dff.copy()
    lost[list(state.trace_ids).index(chosen[0]), -5:] = np.nan  # the tracker lost this neuron
    window.show_state(dataclasses.replace(state, t=1, traces_dff=lost))
    assert len(window.selected_ids) == 3 and chosen[0] not in window.selected_ids
    window.toggle_selection(int(state.trace_ids[0]))  # once the user picks, the choice is theirs
    window.show_state(dataclasses.replace(state, t=2, traces_dff=np.full_like(lost, np.nan)))
    assert window.selected_ids == [int(state.trace_ids[0])]
