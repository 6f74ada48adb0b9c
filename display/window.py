"""The viewer window: raw frame, orthogonal volume views, neuron markers, traces, contrast and status bar."""

from __future__ import annotations

import time

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from display.contrast import ContrastControl
from display.image_panel import ImagePanel
from display.state import ViewState
from display.status import format_status
from display.traces_panel import TracesPanel
from display.volume_views import VolumeViews

SELECTION_COLORS = ("#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#e377c2", "#bcbd22", "#8c564b", "#1f77b4")
AUTO_SELECT = 3  # until the user clicks, show the traces of the most active neurons still tracked


def readout_text(state: ViewState, selected: list[int]) -> str:
    """The readout's current dF/F and confidence (SNR) of the selected neurons by ID ('' with no readout)."""
    ids, dff, conf = state.track_ids, state.track_dff, state.track_confidence
    if ids is None or dff is None or len(dff) != len(ids):
        return ""
    row = {int(i): r for r, i in enumerate(ids.tolist())}
    parts = []
    for neuron_id in selected:
        if neuron_id in row:
            r = row[neuron_id]
            trust = "" if conf is None or len(conf) != len(ids) else f", SNR {conf[r]:.1f}"
            parts.append(f"#{neuron_id} dF/F {dff[r]:+.2f}{trust}")
    return f"readout of {len(ids)} reference neurons; selected: " + ("; ".join(parts) or "none")


class ViewerWindow(QtWidgets.QMainWindow):
    """Shows ViewState snapshots; the live feed and the recording player both drive it via ``show_state``."""

    def __init__(self, source: str = "", *, title: str = "deepz viewer") -> None:
        super().__init__()
        self.setWindowTitle(title)
        self.source = source
        self.state: ViewState | None = None
        self._selected: dict[int, QtGui.QColor] = {}
        self._user_selected = False
        self._last_show: float | None = None
        self.view_fps = 0.0  # smoothed rate of show_state calls (what the viewer actually displays)
        self.rejected_messages = 0  # malformed live messages not shown (set by the live feed)

        self.raw_contrast = ContrastControl("raw")
        self.volume_contrast = ContrastControl("volume")
        self.z_slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.z_slider.setMinimumWidth(100)
        self.z_label = QtWidgets.QLabel("z -")
        self.mip_box = QtWidgets.QCheckBox("XY max projection")
        self.labels_box = QtWidgets.QCheckBox("IDs")
        self.labels_box.setChecked(True)
        toolbar = QtWidgets.QHBoxLayout()
        for widget in (
            self.raw_contrast,
            self.volume_contrast,
            QtWidgets.QLabel("<b>z plane</b>"),
            self.z_slider,
            self.z_label,
            self.mip_box,
            self.labels_box,
        ):
            toolbar.addWidget(widget)
        toolbar.addStretch(1)

        self.raw = ImagePanel(
            "Raw camera frame", "CET-L1", x_label="x (um)", y_label="y (um)", invert_y=True, lock_aspect=True
        )
        self.volume = VolumeViews()
        self.raw.plot.setXLink(self.volume.xy.plot)
        self.raw.plot.setYLink(self.volume.xy.plot)
        self.images = pg.GraphicsLayoutWidget()
        self.images.addItem(self.raw.plot, row=0, col=0)
        self.images.addItem(self.volume.xy.plot, row=0, col=1)
        self.images.addItem(self.volume.yz.plot, row=0, col=2)
        self.images.addItem(self.volume.xz.plot, row=1, col=1)
        grid = self.images.ci.layout
        for col, stretch in enumerate((4, 4, 1)):
            grid.setColumnStretchFactor(col, stretch)
        grid.setRowStretchFactor(0, 4)
        grid.setRowStretchFactor(1, 1)

        self.traces = TracesPanel()
        self.trace_view = pg.GraphicsLayoutWidget()
        self.trace_view.addItem(self.traces.curves_plot, row=0, col=0)
        self.trace_view.addItem(self.traces.raster_plot, row=0, col=1)

        self.readout_label = QtWidgets.QLabel("")  # the readout's current values of the selected neurons
        trace_box = QtWidgets.QWidget()
        trace_layout = QtWidgets.QVBoxLayout(trace_box)
        trace_layout.setContentsMargins(0, 0, 0, 0)
        trace_layout.addWidget(self.readout_label)
        trace_layout.addWidget(self.trace_view, 1)

        splitter = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        splitter.addWidget(self.images)
        splitter.addWidget(trace_box)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 1)
        central = QtWidgets.QWidget()
        self._layout = QtWidgets.QVBoxLayout(central)
        self._layout.addLayout(toolbar)
        self._layout.addWidget(splitter, 1)
        self.setCentralWidget(central)
        self.status_label = QtWidgets.QLabel(f"{source}  |  waiting for data")
        self.status_label.setSizePolicy(
            QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred
        )
        self.statusBar().addWidget(self.status_label, 1)

        for control in (self.raw_contrast, self.volume_contrast):
            control.changed.connect(self._redraw)
        self.z_slider.valueChanged.connect(self._redraw)
        self.mip_box.toggled.connect(self._redraw)
        self.labels_box.toggled.connect(self._redraw)
        for markers in self.volume.markers.values():
            markers.clicked.connect(self.toggle_selection)
        self.traces.raster.row_clicked.connect(
            lambda row: self.toggle_selection(int(self.traces.row_ids[row]))
        )

    @property
    def selected_ids(self) -> list[int]:
        """IDs of the neurons whose traces are shown, in selection order."""
        return list(self._selected)

    def add_controls(self, widget: QtWidgets.QWidget) -> None:
        """Put an extra control row (e.g. playback) under the views."""
        self._layout.addWidget(widget)

    def show_message(self, text: str) -> None:
        """Show a problem or notice in the status bar."""
        self.status_label.setText(f"{self.source}  |  {text}")

    def show_state(self, state: ViewState) -> None:
        """Display a new snapshot."""
        now = time.perf_counter()
        if self._last_show is not None and now > self._last_show:
            rate = 1.0 / (now - self._last_show)
            self.view_fps = 0.9 * self.view_fps + 0.1 * rate if self.view_fps else rate
        self._last_show = now
        self.state = state
        if state.volume is not None and self.z_slider.maximum() != state.volume.shape[0] - 1:
            self.z_slider.blockSignals(True)
            self.z_slider.setRange(0, state.volume.shape[0] - 1)
            self.z_slider.setValue(state.volume.shape[0] // 2)
            self.z_slider.blockSignals(False)
        if not self._user_selected and self._auto_selection_stale(state):
            self._selected.clear()
            self._auto_select(state)
        self._draw(new_data=True)

    def toggle_selection(self, neuron_id: int) -> None:
        """Select a neuron (its trace appears, its markers fill), or deselect it when already selected; the
        first click replaces the automatic choice of the most active neurons."""
        if not self._user_selected:
            self._user_selected = True
            self._selected.clear()
        if neuron_id in self._selected:
            del self._selected[neuron_id]
        else:
            if len(self._selected) >= len(SELECTION_COLORS):
                del self._selected[next(iter(self._selected))]
            used = {c.name() for c in self._selected.values()}
            free = next(c for c in SELECTION_COLORS if c not in used)
            self._selected[neuron_id] = QtGui.QColor(free)
        self._redraw()

    def _auto_selection_stale(self, state: ViewState) -> bool:
        """True when nothing is selected yet or an automatically chosen neuron is no longer tracked."""
        if not self._selected:
            return True
        if state.trace_ids is None or state.traces_dff is None or state.traces_dff.shape[1] == 0:
            return False
        current = set(state.trace_ids[np.isfinite(state.traces_dff[:, -1])].tolist())
        return not current.issuperset(self._selected)

    def _auto_select(self, state: ViewState) -> None:
        """Pick the neurons with the widest robust dF/F range among those tracked now and for most of the
        window."""
        dff = state.traces_dff
        if state.trace_ids is None or dff is None or dff.size == 0:
            return
        finite = np.isfinite(dff)
        tracked = (finite.mean(axis=1) >= 0.5) & finite[:, -1]
        if not tracked.any():
            return
        with np.errstate(all="ignore"):
            lo, hi = np.nanpercentile(dff[tracked], [5, 95], axis=1)
        rows = np.flatnonzero(tracked)[np.argsort(np.nan_to_num(hi - lo, nan=-1.0))[::-1][:AUTO_SELECT]]
        for color, row in zip(SELECTION_COLORS, rows, strict=False):
            self._selected[int(state.trace_ids[row])] = QtGui.QColor(color)

    def _redraw(self) -> None:
        """Draw the current state again after a control or the selection changed."""
        self._draw(new_data=False)

    def _draw(self, *, new_data: bool) -> None:
        """Draw the current state; for new data, views whose content is unchanged are skipped."""
        state = self.state
        if state is None:
            return
        if state.frame is not None:
            px = state.pixel_size_um
            h, w = state.frame.shape
            self.raw.set_image(
                state.frame, self.raw_contrast.levels_for(state.frame), (-px / 2, -px / 2, w * px, h * px)
            )
        if state.volume is not None:
            z = self.z_slider.value()
            planes = state.planes_um
            self.z_label.setText(f"z {planes[min(z, len(planes) - 1)]:+.1f} um")
            self.volume.show(
                state,
                z_index=z,
                max_projection=self.mip_box.isChecked(),
                contrast=self.volume_contrast,
                selected=self._selected,
                show_labels=self.labels_box.isChecked(),
                new_data=new_data,
            )
        elif state.meta.get("tracks_only"):
            self.raw.set_title("Raw camera frame (none: a tracks store)")
            self.volume.show_neurons(state, selected=self._selected, show_labels=self.labels_box.isChecked())
        self.traces.show(state, self._selected, new_data=new_data)
        self.readout_label.setText(readout_text(state, list(self._selected)))
        self.status_label.setText(
            format_status(state, self.source, view_fps=self.view_fps, rejected=self.rejected_messages)
        )
