"""Playback of a recording in the viewer: time slider, play/pause and speed, driving the shared views."""

from __future__ import annotations

import time

from PySide6 import QtCore, QtGui, QtWidgets

from display.recording import RecordingAdapter, TracksAdapter
from display.window import ViewerWindow

TICK_MS = 33  # ~30 redraws per second while playing; frames in between are skipped at high speed
SPEEDS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 10.0)


class PlaybackBar(QtWidgets.QWidget):
    """Controls under the views; read errors (a corrupt chunk ...) pause playback, shown in the status bar."""

    def __init__(self, window: ViewerWindow, recording: RecordingAdapter | TracksAdapter) -> None:
        super().__init__(window)
        self.viewer, self.recording = window, recording
        self.play_button = QtWidgets.QPushButton("Play")
        self.play_button.setCheckable(True)
        self.slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.slider.setRange(0, recording.n_frames - 1)
        self.speed_box = QtWidgets.QComboBox()
        self.speed_box.addItems([f"{s:g}x" for s in SPEEDS])
        self.speed_box.setCurrentText("1x")
        self.speed_box.setToolTip("playback speed relative to the recorded camera rate")
        self.time_label = QtWidgets.QLabel()
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for widget, stretch in (
            (self.play_button, 0),
            (QtWidgets.QLabel("<b>time</b>"), 0),
            (self.slider, 1),
            (self.time_label, 0),
            (QtWidgets.QLabel("speed"), 0),
            (self.speed_box, 0),
        ):
            layout.addWidget(widget, stretch)
        self._timer = QtCore.QTimer(self)
        self._timer.timeout.connect(self._advance)
        self._position = 0.0
        self._clock = time.perf_counter()
        self.play_button.toggled.connect(self.set_playing)
        self.slider.valueChanged.connect(self._show)
        for key, action in (
            (QtCore.Qt.Key.Key_Space, lambda: self.set_playing(not self._timer.isActive())),
            (QtCore.Qt.Key.Key_Left, lambda: self.seek(max(self.slider.value() - 1, 0))),
            (
                QtCore.Qt.Key.Key_Right,
                lambda: self.seek(min(self.slider.value() + 1, recording.n_frames - 1)),
            ),
        ):
            QtGui.QShortcut(QtGui.QKeySequence(key), window, activated=action)
        self.play_button.setToolTip("play / pause (Space); Left / Right step one frame")
        window.add_controls(self)

    @property
    def speed(self) -> float:
        """Playback speed relative to the recorded camera rate."""
        return SPEEDS[self.speed_box.currentIndex()]

    def seek(self, t: int) -> None:
        """Show frame ``t``."""
        self._position = float(t)
        if self.slider.value() == t:
            self._show(t)
        else:
            self.slider.setValue(t)

    def set_playing(self, playing: bool) -> None:
        """Start or pause playback (from the end, playing starts over)."""
        if playing and self.slider.value() >= self.recording.n_frames - 1:
            self.seek(0)
        self.play_button.blockSignals(True)
        self.play_button.setChecked(playing)
        self.play_button.blockSignals(False)
        self.play_button.setText("Pause" if playing else "Play")
        self._position = float(self.slider.value())
        self._clock = time.perf_counter()
        if playing:
            self._timer.start(TICK_MS)
        else:
            self._timer.stop()

    def _advance(self) -> None:
        now = time.perf_counter()
        seconds, self._clock = (
            (now - self._clock) * self.speed,
            now,
        )  # wall time: slow reads do not slow the clock
        t = self.slider.value()
        interval = self.recording.time_s(min(t + 1, self.recording.n_frames - 1)) - self.recording.time_s(t)
        self._position += seconds / interval if interval > 0 else 1.0
        nxt = min(int(self._position), self.recording.n_frames - 1)
        if nxt >= self.recording.n_frames - 1:
            self.set_playing(False)
        self.slider.setValue(nxt)

    def _show(self, t: int) -> None:
        try:
            state = self.recording.state(t)
        except OSError as exc:  # storage.RecordingError / CorruptChunkError: show it, keep the viewer usable
            self.set_playing(False)
            self.viewer.show_message(f"cannot read frame {t}: {exc}")
            return
        self.time_label.setText(f"{t + 1}/{self.recording.n_frames}  {self.recording.time_s(t):.2f} s")
        self.viewer.show_state(state)
