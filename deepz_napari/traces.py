"""Dock widget: a recording's dF/F traces (a raster of all neurons and the first ones' curves)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyqtgraph as pg
from qtpy import QtWidgets

from deepz_napari.reader import TRACES_KEY

if TYPE_CHECKING:
    import napari

MAX_CURVES = 8  # curves drawn: the first neurons in the list (the raster shows all)


class TracesPanel(QtWidgets.QWidget):
    """A raster (neurons x time) and up to MAX_CURVES dF/F curves, with a line at the current time (s)."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.plots = pg.GraphicsLayoutWidget()
        self.curves_plot = self.plots.addPlot(row=0, col=0, title="dF/F")
        self.curves_plot.setLabel("bottom", "time (s)")
        self.raster_plot = self.plots.addPlot(row=1, col=0, title="all neurons")
        self.raster_plot.setLabel("left", "neuron (row)")
        self.raster_plot.setXLink(self.curves_plot)
        self.raster = pg.ImageItem(axisOrder="row-major")
        self.raster_plot.addItem(self.raster)
        self.cursors = [pg.InfiniteLine(angle=90, pen="y") for _ in range(2)]
        self.curves_plot.addItem(self.cursors[0])
        self.raster_plot.addItem(self.cursors[1])
        self.label = QtWidgets.QLabel("no traces")
        box = QtWidgets.QVBoxLayout(self)
        box.addWidget(self.label)
        box.addWidget(self.plots)
        self.ids = np.zeros(0, np.int64)
        self.time_s = np.zeros(0)
        self.dff = np.zeros((0, 0), np.float32)

    def set_traces(self, ids: np.ndarray, time_s: np.ndarray, dff: np.ndarray) -> None:
        """Show ``dff`` (M, T) of neurons ``ids`` (M,) sampled at ``time_s`` (T,)."""
        self.ids, self.time_s = np.asarray(ids), np.asarray(time_s, np.float64)
        self.dff = np.asarray(dff, np.float32)
        self.curves_plot.clear()
        self.curves_plot.addItem(self.cursors[0])
        for row in range(min(MAX_CURVES, len(self.ids))):
            pen = pg.intColor(row, MAX_CURVES)
            self.curves_plot.plot(self.time_s, self.dff[row], pen=pen, connect="finite")
        if self.dff.size:
            finite = np.nan_to_num(self.dff, nan=0.0)
            self.raster.setImage(finite, autoLevels=True)
            span = (self.time_s[-1] - self.time_s[0]) or 1.0
            self.raster.setRect(float(self.time_s[0]), 0.0, float(span), float(len(self.ids)))
        drawn = f"first {MAX_CURVES} drawn"
        self.label.setText(f"{len(self.ids)} neurons, {len(self.time_s)} time points ({drawn})")

    def set_time(self, time_s: float) -> None:
        """Move the time cursor."""
        for cursor in self.cursors:
            cursor.setValue(time_s)


class TracesWidget(TracesPanel):
    """Traces of the recording whose tracks layer is selected (else the first loaded), at the t slider."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        napari_viewer.layers.selection.events.active.connect(self._refresh)
        napari_viewer.layers.events.inserted.connect(self._refresh)
        napari_viewer.dims.events.current_step.connect(self._follow_time)
        self._refresh()

    def _refresh(self, event: object = None) -> None:
        layers = [self.viewer.layers.selection.active, *self.viewer.layers]
        source = next((layer for layer in layers if layer is not None and TRACES_KEY in layer.metadata), None)
        if source is not None:
            traces = source.metadata[TRACES_KEY]
            self.set_traces(traces["ids"], traces["time_s"], traces["dff"])
        self._follow_time()

    def _follow_time(self, event: object = None) -> None:
        labels = self.viewer.dims.axis_labels
        if "t" in labels:
            self.set_time(float(self.viewer.dims.point[labels.index("t")]))
