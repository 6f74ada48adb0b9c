"""One titled image plot: a bare ImageItem (no histogram) in a PlotItem with axes in micrometres."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore

from display.plot_cache import cache_decorations

_EDGE_PADDING = 0.01  # an image touching its axes would drag them into every repaint; a thin margin avoids it


class ImagePanel:
    """A PlotItem showing one row-major image placed on a rectangle in plot (um) coordinates."""

    def __init__(
        self, title: str, colormap: str, *, x_label: str, y_label: str, invert_y: bool, lock_aspect: bool
    ) -> None:
        self.plot = pg.PlotItem(title=title)
        self.plot.setLabel("bottom", x_label)
        self.plot.setLabel("left", y_label)
        self.plot.invertY(invert_y)
        self.plot.setAspectLocked(lock_aspect)
        self.plot.getViewBox().setDefaultPadding(0.0)
        cache_decorations(self.plot)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.image.setColorMap(pg.colormap.get(colormap))
        self.plot.addItem(self.image)
        self._rect: tuple[float, float, float, float] | None = None

    def set_image(
        self, image: np.ndarray, levels: tuple[float, float], rect: tuple[float, float, float, float]
    ) -> None:
        """Draw ``image`` with fixed ``levels`` on ``rect`` = (x, y, width, height) in plot units."""
        self.image.setImage(image, autoLevels=False, levels=levels)
        if rect != self._rect:
            self._rect = rect
            self.image.setRect(QtCore.QRectF(*rect))
            view = self.plot.getViewBox()
            view.setRange(QtCore.QRectF(*rect), padding=_EDGE_PADDING)
            view.disableAutoRange()  # fixed range: new data repaints the image only, not the axes

    def set_title(self, title: str) -> None:
        """Change the panel title (skipped when unchanged: setting text triggers layout work)."""
        if self.plot.titleLabel.text != title:
            self.plot.setTitle(title)

    def clear(self) -> None:
        """Show nothing."""
        self.image.clear()
