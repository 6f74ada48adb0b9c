"""Plot decorations: axes and title cached as pixmaps (a data repaint blits them), plain unit labels."""

from __future__ import annotations

import pyqtgraph as pg
from PySide6 import QtWidgets

_CACHE = QtWidgets.QGraphicsItem.CacheMode.DeviceCoordinateCache


def cache_decorations(plot: pg.PlotItem) -> None:
    """Cache the axes and title of ``plot`` as pixmaps (re-rendered only when they change); no SI prefixes."""
    for name in ("left", "bottom", "right", "top"):
        axis = plot.getAxis(name)
        axis.setCacheMode(_CACHE)
        axis.enableAutoSIPrefix(False)  # plain um and s; no "(x0.001)" scale factors
    plot.titleLabel.setCacheMode(_CACHE)
