"""Tracked-neuron markers with ID labels on one plot; clicking a marker reports the neuron's ID."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui

# labels are cached glyph symbols (one atlas blit each, far cheaper than TextItems); the box fits 5 digits
_LABEL_BOX_PX = 80
_LABEL_FONT_PX = 10
_MAX_CACHED_LABELS = 1_000  # a glyph path is ~10 kB: bounded memory under ID churn
_MARKER_PX = 10
_SELECTED_PX = 14
_MARKER_PEN = pg.mkPen(0, 230, 255, 220, width=1.2)
_NO_PEN = pg.mkPen(None)
_NO_BRUSH = pg.mkBrush(None)
_LABEL_BRUSH = pg.mkBrush(220, 245, 255, 230)
_VALUE_MAP = pg.colormap.get("inferno")
_VALUE_RANGE = (-0.2, 1.0)  # readout dF/F spread over the colour map; beyond it the colour saturates
_VALUE_LEVELS = 16  # fills are quantised (16 colours x 4 opacities) so the symbol atlas stays small
_CONFIDENCE_LEVELS = 4
_CONFIDENT_SNR = 10.0  # readout confidence (signal-to-noise ratio) drawn fully opaque; 0 is nearly clear
_label_paths: dict[int, QtGui.QPainterPath] = {}
_value_brushes: dict[tuple[int, int], QtGui.QBrush] = {}
_selection_styles: dict[int, tuple[QtGui.QPen, QtGui.QBrush]] = {}


def _label_path(neuron_id: int) -> QtGui.QPainterPath:
    """The neuron's ID as a glyph path, up and to the right of the point, in symbol units (box = 1)."""
    path = _label_paths.get(neuron_id)
    if path is None:
        if len(_label_paths) >= _MAX_CACHED_LABELS:  # long runs with ID churn: keep the cache bounded
            _label_paths.clear()
        font = QtGui.QFont()
        font.setPixelSize(_LABEL_FONT_PX)
        font.setBold(True)
        text = QtGui.QPainterPath()
        text.addText(QtCore.QPointF(_MARKER_PX * 0.5, -_MARKER_PX * 0.3), font, str(neuron_id))
        path = QtGui.QTransform.fromScale(1 / _LABEL_BOX_PX, 1 / _LABEL_BOX_PX).map(text)
        _label_paths[neuron_id] = path
    return path


def selection_style(color: QtGui.QColor) -> tuple[QtGui.QPen, QtGui.QBrush]:
    """Shared pen and brush per selection colour (pyqtgraph caches symbols by pen/brush identity)."""
    key = color.rgba()
    if key not in _selection_styles:
        fill = QtGui.QColor(color)
        fill.setAlpha(90)  # the neuron stays visible under its marker
        _selection_styles[key] = (pg.mkPen(color, width=2.5), pg.mkBrush(fill))
    return _selection_styles[key]


def value_brushes(values: np.ndarray, confidence: np.ndarray | None) -> list[QtGui.QBrush]:
    """Marker fills showing the readout: colour from dF/F, opacity from its confidence (signal-to-noise ratio;
    a doubtful value fades)."""
    lo, hi = _VALUE_RANGE
    level = np.round(np.clip((np.nan_to_num(values, nan=lo) - lo) / (hi - lo), 0, 1) * (_VALUE_LEVELS - 1))
    conf = np.ones(len(values)) if confidence is None else np.nan_to_num(confidence, nan=0.0)
    opacity = np.round(np.clip(conf / _CONFIDENT_SNR, 0, 1) * (_CONFIDENCE_LEVELS - 1))
    brushes = []
    for key in zip(level.astype(int).tolist(), opacity.astype(int).tolist(), strict=True):
        brush = _value_brushes.get(key)
        if brush is None:
            color = _VALUE_MAP.map(key[0] / (_VALUE_LEVELS - 1), mode="qcolor")
            color.setAlpha(60 + 190 * key[1] // (_CONFIDENCE_LEVELS - 1))
            brush = _value_brushes[key] = pg.mkBrush(color)
        brushes.append(brush)
    return brushes


class NeuronMarkers(QtCore.QObject):
    """Markers and ID labels of tracked neurons on a plot, selected ones filled with their trace colour."""

    clicked = QtCore.Signal(int)

    def __init__(self, plot: pg.PlotItem, *, label_all: bool = True) -> None:
        super().__init__()
        self.label_all = label_all  # False: only selected neurons get an ID (dense projections stay legible)
        self.labels = pg.ScatterPlotItem(pxMode=True, pen=_NO_PEN, brush=_LABEL_BRUSH, size=_LABEL_BOX_PX)
        self.labels.setAcceptedMouseButtons(QtCore.Qt.MouseButton.NoButton)
        self.points = pg.ScatterPlotItem(
            pxMode=True, symbol="o", pen=_MARKER_PEN, brush=_NO_BRUSH, size=_MARKER_PX
        )
        self.selected = pg.ScatterPlotItem(pxMode=True, symbol="o", size=_SELECTED_PX)
        for z, item in enumerate((self.labels, self.points, self.selected), start=10):
            item.setZValue(z)
            plot.addItem(item, ignoreBounds=True)  # markers never change the view range (no axis re-layout)
            if item is not self.labels:
                item.sigClicked.connect(self._on_click)

    def set_points(
        self,
        ids: np.ndarray,
        xy: np.ndarray,
        selected: Mapping[int, QtGui.QColor],
        show_labels: bool,
        values: np.ndarray | None = None,
        confidence: np.ndarray | None = None,
    ) -> None:
        """Place markers for ``ids`` at plot coordinates ``xy`` (N, 2); one style except the selected. With
        the readout's ``values`` (dF/F) and ``confidence`` (N,), unselected markers are filled with them."""
        ids = np.asarray(ids, dtype=np.int64)
        is_selected = np.isin(ids, np.fromiter(selected, dtype=np.int64, count=len(selected)))
        plain = ~is_selected
        fill = {}
        if values is not None and len(values) == len(ids):
            conf = confidence[plain] if confidence is not None and len(confidence) == len(ids) else None
            fill = {"brush": value_brushes(np.asarray(values)[plain], conf)}
        self.points.setData(x=xy[plain, 0], y=xy[plain, 1], data=ids[plain], **fill)
        chosen = ids[is_selected].tolist()
        styles = [selection_style(selected[i]) for i in chosen]
        self.selected.setData(
            x=xy[is_selected, 0],
            y=xy[is_selected, 1],
            data=ids[is_selected],
            pen=[s[0] for s in styles],
            brush=[s[1] for s in styles],
        )
        labelled = slice(None) if self.label_all else is_selected
        if show_labels:
            self.labels.setData(
                x=xy[labelled, 0], y=xy[labelled, 1], symbol=[_label_path(i) for i in ids[labelled].tolist()]
            )
        else:
            self.labels.clear()

    def clear(self) -> None:
        """Remove all markers and labels."""
        for item in (self.points, self.selected, self.labels):
            item.clear()

    def _on_click(self, _item: pg.ScatterPlotItem, points: list, _event: object) -> None:
        if len(points):
            self.clicked.emit(int(points[0].data()))
