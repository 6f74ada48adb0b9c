"""Activity panels: dF/F curves of the selected neurons and a heat-map raster of all tracked neurons."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui

from display.contrast import ContrastMode, compute_levels
from display.markers import selection_style
from display.plot_cache import cache_decorations
from display.state import ViewState

RASTER_COLORMAP = "viridis"
_EDGE_PADDING = 0.01  # content that touches an axis drags it into every repaint; a thin margin avoids that


class RasterImage(pg.ImageItem):
    """The raster heat map; a click reports the row under the mouse."""

    row_clicked = QtCore.Signal(int)

    def mouseClickEvent(self, ev) -> None:  # noqa: N802 - Qt/pyqtgraph event handler name
        if ev.button() != QtCore.Qt.MouseButton.LeftButton or self.image is None:
            return
        row = int(np.floor(ev.pos().y()))
        if 0 <= row < self.image.shape[0]:
            ev.accept()
            self.row_clicked.emit(row)


class TracesPanel:
    """A curves plot (selected neurons, in their selection colours) beside a raster image (all neurons)."""

    def __init__(self) -> None:
        self.curves_plot = pg.PlotItem(title="dF/F of selected neurons (click a neuron)")
        self.curves_plot.setLabel("bottom", "time relative to now (s)")
        self.curves_plot.setLabel("left", "dF/F")
        self.legend = self.curves_plot.addLegend(offset=(5, 5), labelTextSize="8pt")
        self.raster_plot = pg.PlotItem(title="dF/F raster, all neurons (click a row)")
        self.raster_plot.setLabel("bottom", "time relative to now (s)")
        self.raster_plot.setLabel("left", "neuron (row, sorted by ID)")
        self.raster_plot.invertY(True)
        self.raster_plot.getViewBox().setDefaultPadding(0.0)
        self.raster_plot.setXLink(self.curves_plot)
        for plot in (self.curves_plot, self.raster_plot):
            plot.disableAutoRange()
            cache_decorations(plot)
        self.raster = RasterImage(axisOrder="row-major")
        self.raster.setColorMap(pg.colormap.get(RASTER_COLORMAP))
        self.raster_plot.addItem(self.raster)
        self.row_marks = pg.ScatterPlotItem(pxMode=True, symbol="t2", size=11)
        self.raster_plot.addItem(self.row_marks, ignoreBounds=True)
        self.row_ids = np.zeros(0, np.int64)  # neuron ID of each raster row (sorted)
        self._curves: dict[int, pg.PlotDataItem] = {}
        self._raster_rect: tuple[float, float, float, float] | None = None
        self._y_range: tuple[float, float] | None = None
        self._window_key: tuple | None = None

    def show(self, state: ViewState, selected: Mapping[int, QtGui.QColor], *, new_data: bool = False) -> None:
        """Draw the trace window of ``state``: curves for ``selected`` IDs, raster rows for all. With
        ``new_data``, a window identical in extent to the one shown (traces advance only with volumes) is
        not drawn again."""
        ids, dff, t = state.trace_ids, state.traces_dff, state.trace_t
        key = None if t is None or dff is None or len(t) == 0 else (len(t), float(t[-1]), dff.shape)
        if new_data and key is not None and key == self._window_key:
            return
        self._window_key = key
        if ids is None or dff is None or t is None or dff.size == 0:
            self.raster.clear()
            self.row_marks.clear()
            self.row_ids = np.zeros(0, np.int64)
            self._sync_curves({})
            return
        order = np.argsort(ids, kind="stable")
        self.row_ids = np.asarray(ids)[order]
        # times relative to the newest sample keep the x range still as live data scroll: no axis re-layout
        rel_t = np.asarray(t, dtype=np.float64) - float(t[-1])
        dt = round(-float(rel_t[0]) / max(len(t) - 1, 1), 6) or 1.0
        self.raster.setImage(
            dff[order],  # NaN (neuron not tracked then) draws transparent: the black background
            autoLevels=False,
            levels=compute_levels(dff, ContrastMode.AUTO, 1.0, 99.5),
        )
        rect = (-(len(t) - 0.5) * dt, -0.5, len(t) * dt, float(len(ids)))
        if rect != self._raster_rect:
            self._raster_rect = rect
            self.raster.setRect(*rect)
            self.raster_plot.setRange(
                xRange=(rect[0], rect[0] + rect[2]),
                yRange=(rect[1], rect[1] + rect[3]),
                padding=_EDGE_PADDING,
            )
        rows = {int(i): r for r, i in enumerate(ids.tolist())}
        self._sync_curves({i: c for i, c in selected.items() if i in rows})
        for neuron_id, curve in self._curves.items():
            curve.setData(rel_t, dff[rows[neuron_id]])
        self._fit_y([rows[i] for i in self._curves], dff)
        marked = [
            (r, selection_style(selected[i])) for r, i in enumerate(self.row_ids.tolist()) if i in selected
        ]
        self.row_marks.setData(
            x=np.full(len(marked), rect[0]),
            y=[r for r, _ in marked],
            pen=[style[0] for _, style in marked],
            brush=[style[1] for _, style in marked],
        )

    def _fit_y(self, rows: list[int], dff: np.ndarray) -> None:
        """Y range in 0.5 steps, changed only when the data leave it: a still axis is not re-laid out."""
        with np.errstate(all="ignore"):
            values = dff[rows] if rows else dff[:0]
            lo = float(np.nanmin(values)) if np.isfinite(values).any() else 0.0
            hi = float(np.nanmax(values)) if np.isfinite(values).any() else 1.0
        y_range = (min(np.floor(lo * 2) / 2, -0.5), max(np.ceil(hi * 2) / 2, 1.0))
        if y_range != self._y_range:
            self._y_range = y_range
            self.curves_plot.setYRange(*y_range, padding=0.02)

    def _sync_curves(self, wanted: Mapping[int, QtGui.QColor]) -> None:
        """Add and remove curves (and legend entries) to match ``wanted``; only on selection changes."""
        for neuron_id in [i for i in self._curves if i not in wanted]:
            self.curves_plot.removeItem(self._curves.pop(neuron_id))
        for neuron_id, color in wanted.items():
            if neuron_id not in self._curves:
                self._curves[neuron_id] = self.curves_plot.plot(
                    pen=pg.mkPen(color, width=2), name=f"neuron {neuron_id}", connect="finite"
                )
