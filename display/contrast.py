"""Contrast (display levels) for an image group: percentile auto, data min-max, or manual min/max."""

from __future__ import annotations

from enum import StrEnum

import numpy as np
from PySide6 import QtCore, QtWidgets

_HYSTERESIS = 0.03  # automatic levels follow changes beyond 3% of the current display range
_SUBSAMPLE = 4  # levels from every 4th pixel per axis: 16x less work, same percentiles to display precision


class ContrastMode(StrEnum):
    """How display levels follow the data."""

    AUTO = "auto"
    MINMAX = "min-max"
    MANUAL = "manual"


def compute_levels(
    image: np.ndarray, mode: ContrastMode, low_pct: float = 0.5, high_pct: float = 99.8
) -> tuple[float, float]:
    """Display levels of an image in the given automatic mode, from a strided subsample for speed."""
    sample = image[(slice(None, None, _SUBSAMPLE),) * image.ndim] if image.size > 4096 else image
    finite = sample[np.isfinite(sample)] if sample.dtype.kind == "f" else sample.ravel()
    if finite.size == 0:
        return 0.0, 1.0
    if mode is ContrastMode.AUTO:
        lo, hi = np.percentile(finite, (low_pct, high_pct))
    else:
        lo, hi = finite.min(), finite.max()
    lo, hi = float(lo), float(hi)
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


class ContrastControl(QtWidgets.QWidget):
    """A labelled mode box with min/max spin boxes; emits ``changed`` when the user edits anything."""

    changed = QtCore.Signal()

    def __init__(self, label: str, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.mode_box = QtWidgets.QComboBox()
        self.mode_box.addItems([m.value for m in ContrastMode])
        self.mode_box.setToolTip(
            "auto: 0.5-99.8 percentiles; min-max: full data range; manual: the spin boxes"
        )
        self.min_box, self.max_box = QtWidgets.QDoubleSpinBox(), QtWidgets.QDoubleSpinBox()
        for box in (self.min_box, self.max_box):
            box.setRange(-1e6, 1e6)
            box.setDecimals(1)
            box.setMaximumWidth(90)
            box.setMinimumWidth(60)
            box.setKeyboardTracking(False)
            box.valueChanged.connect(self._manual_edit)
        self._auto_levels: dict[str, tuple[float, float]] = {}
        self.mode_box.currentTextChanged.connect(lambda _: self.changed.emit())
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for widget in (
            QtWidgets.QLabel(f"<b>{label}</b>"),
            self.mode_box,
            QtWidgets.QLabel("min"),
            self.min_box,
            QtWidgets.QLabel("max"),
            self.max_box,
        ):
            layout.addWidget(widget)

    @property
    def mode(self) -> ContrastMode:
        """The selected contrast mode."""
        return ContrastMode(self.mode_box.currentText())

    def levels_for(self, image: np.ndarray, *, key: str = "image", show: bool = True) -> tuple[float, float]:
        """Levels to draw ``image`` with; automatic levels of each ``key`` (one per view) move only when the
        data's range shifts by more than a few percent, so the display neither flickers nor rebuilds its
        colour table every frame. Automatic modes also show the levels in the spin boxes when ``show``."""
        if self.mode is ContrastMode.MANUAL:
            return self.min_box.value(), self.max_box.value()
        levels = compute_levels(image, self.mode)
        last = self._auto_levels.get(key)
        if last is not None:
            tolerance = _HYSTERESIS * (last[1] - last[0])
            if abs(levels[0] - last[0]) <= tolerance and abs(levels[1] - last[1]) <= tolerance:
                levels = last
        self._auto_levels[key] = levels
        if show:
            self._show(levels)
        return levels

    def _show(self, levels: tuple[float, float]) -> None:
        for box, value in zip((self.min_box, self.max_box), levels, strict=True):
            if round(value, box.decimals()) != box.value():  # an unchanged box is not repainted
                box.blockSignals(True)
                box.setValue(value)
                box.blockSignals(False)

    def _manual_edit(self) -> None:
        self.mode_box.blockSignals(True)
        self.mode_box.setCurrentText(ContrastMode.MANUAL.value)
        self.mode_box.blockSignals(False)
        self.changed.emit()
