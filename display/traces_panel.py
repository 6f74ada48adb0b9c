"""Activity panels: dF/F curves of the selected neurons and a heat-map raster of all tracked neurons."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyqtgraph as pg
from PySide6 import QtGui

from display.contrast import ContrastMode, compute_levels
from display.state import ViewState

RASTER_COLORMAP = "viridis"


class TracesPanel:
    """A curves plot (selected neurons, in their selection colours) beside a raster image (all neurons)."""

    def __init__(self) -> None:
        self.curves_plot = pg.PlotItem(title="dF/F of selected neurons (click a neuron)")
        self.curves_plot.setLabel("bottom", "time (s)")
        self.curves_plot.setLabel("left", "dF/F")
        self.curves_plot.showGrid(x=True, y=True, alpha=0.2)
        self.legend = self.curves_plot.addLegend(offset=(5, 5), labelTextSize="8pt")
        self.raster_plot = pg.PlotItem(title="dF/F raster, all neurons")
        self.raster_plot.setLabel("bottom", "time (s)")
        self.raster_plot.setLabel("left", "neuron (row, sorted by ID)")
        self.raster_plot.invertY(True)
        self.raster_plot.getViewBox().setDefaultPadding(0.0)
        self.raster_plot.setXLink(self.curves_plot)
        self.raster = pg.ImageItem(axisOrder="row-major")
        self.raster.setColorMap(pg.colormap.get(RASTER_COLORMAP))
        self.raster_plot.addItem(self.raster)
        self._curves: dict[int, pg.PlotDataItem] = {}

    def show(self, state: ViewState, selected: Mapping[int, QtGui.QColor]) -> None:
        """Draw the trace window of ``state``: curves for ``selected`` IDs, raster rows for all."""
        ids, dff, t = state.trace_ids, state.traces_dff, state.trace_t
        if ids is None or dff is None or t is None or dff.size == 0:
            self.raster.clear()
            self._sync_curves({})
            return
        order = np.argsort(ids, kind="stable")
        dt = float(t[-1] - t[0]) / max(len(t) - 1, 1) or 1.0
        self.raster.setImage(dff[order], autoLevels=False, levels=compute_levels(dff, ContrastMode.AUTO, 1.0, 99.5))
        self.raster.setRect(float(t[0]) - dt / 2, -0.5, len(t) * dt, len(ids))
        rows = {int(i): r for r, i in enumerate(ids.tolist())}
        self._sync_curves({i: c for i, c in selected.items() if i in rows})
        for neuron_id, curve in self._curves.items():
            curve.setData(t, dff[rows[neuron_id]])

    def _sync_curves(self, wanted: Mapping[int, QtGui.QColor]) -> None:
        """Add and remove curves (and legend entries) to match ``wanted``; only on selection changes."""
        for neuron_id in [i for i in self._curves if i not in wanted]:
            self.curves_plot.removeItem(self._curves.pop(neuron_id))
        for neuron_id, color in wanted.items():
            if neuron_id not in self._curves:
                self._curves[neuron_id] = self.curves_plot.plot(
                    pen=pg.mkPen(color, width=2), name=f"neuron {neuron_id}", connect="finite")
