"""Dock widget: watch a live deepz run over zmq (the pipeline's wire format) as napari layers and traces."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from qtpy import QtCore, QtWidgets

from deepz_napari.traces import TracesPanel
from wire.messages import DEFAULT_ADDRESS, Message, MessageError, Subscriber

if TYPE_CHECKING:
    import napari

POLL_MS = 30  # as the pyqtgraph viewer: at most ~33 updates a second, the newest message only


class LiveWidget(QtWidgets.QWidget):
    """Connects to a pipeline's PUB address and keeps three layers current: the raw frame (at z = 0), the
    virtual volume (at its planes) and the tracked neurons (Points with IDs); the dF/F window below."""

    def __init__(self, napari_viewer: napari.Viewer, address: str = DEFAULT_ADDRESS) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.subscriber: Subscriber | None = None
        self.shown = 0
        self.rejected = 0
        self.address = QtWidgets.QLineEdit(address)
        self.button = QtWidgets.QPushButton("Connect")
        self.button.clicked.connect(self.toggle)
        self.status = QtWidgets.QLabel("not connected")
        self.traces = TracesPanel()
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.address)
        row.addWidget(self.button)
        box = QtWidgets.QVBoxLayout(self)
        box.addLayout(row)
        box.addWidget(self.status)
        box.addWidget(self.traces)
        self._timer = QtCore.QTimer(self)
        self._timer.timeout.connect(self.poll)

    def toggle(self) -> None:
        """Connect to the address in the box, or disconnect."""
        if self.subscriber is not None:
            self.stop()
            return
        try:
            self.subscriber = Subscriber(self.address.text().strip())
        except OSError as exc:
            self.status.setText(str(exc))
            return
        self.button.setText("Disconnect")
        self.status.setText(f"waiting for {self.subscriber.address}")
        self._timer.start(POLL_MS)

    def stop(self) -> None:
        """Stop polling and close the socket (the layers stay)."""
        self._timer.stop()
        if self.subscriber is not None:
            self.subscriber.close()
            self.subscriber = None
        self.button.setText("Connect")
        self.status.setText("not connected")

    def poll(self) -> None:
        """Show the newest waiting message, if any (a bad one is counted and reported, never raised)."""
        try:
            message = self.subscriber.latest() if self.subscriber is not None else None
        except MessageError as exc:
            self.rejected += 1
            self.status.setText(f"rejected {self.rejected} bad message(s); last: {exc}")
            return
        if message is not None:
            self.show_message(message)

    def show_message(self, message: Message) -> None:
        """Update the layers and traces from one pipeline message."""
        a, meta = message.arrays, message.meta
        px = float(meta.get("pixel_size_um", 1.0))
        if "frame" in a:
            self._image("live frame", a["frame"][None], [1.0, px, px], [0.0, 0.0, 0.0])
        if "volume" in a and meta.get("planes_um"):
            planes = np.asarray(meta["planes_um"], np.float64)
            dz = float(np.mean(np.diff(planes))) if len(planes) > 1 else 1.0
            vpx = float(meta.get("volume_pixel_size_um", px))
            self._image("live volume", a["volume"], [dz, vpx, vpx], [float(planes[0]), 0.0, 0.0])
        if "track_ids" in a and "track_positions_um" in a:
            self._neurons(a["track_ids"], a["track_positions_um"], a.get("track_dff"))
        if "traces_dff" in a and "trace_ids" in a and "trace_t" in a:
            self.traces.set_traces(a["trace_ids"], a["trace_t"] - a["trace_t"][-1], a["traces_dff"])
            self.traces.set_time(0.0)
        self.shown += 1
        stats = message.stats
        rate = stats.get("input_hz")
        self.status.setText(f"frame {message.t}" + (f", {rate:.0f} Hz in" if isinstance(rate, float) else ""))

    def _image(self, name: str, data: np.ndarray, scale: list[float], translate: list[float]) -> None:
        layer = self._layer(name)
        if layer is None or layer.data.shape != data.shape:
            if layer is not None:
                self.viewer.layers.remove(layer)
            self.viewer.add_image(
                data.copy(), name=name, scale=scale, translate=translate, blending="additive",
                units=("micrometer",) * 3, axis_labels=("z", "y", "x"),
            )  # fmt: skip
        else:
            layer.data = data.copy()

    def _neurons(self, ids: np.ndarray, positions_um: np.ndarray, dff: np.ndarray | None) -> None:
        values = np.full(len(ids), np.nan) if dff is None else np.asarray(dff)
        features = {"id": np.asarray(ids), "dff": values}
        layer = self._layer("live neurons")
        if layer is None:
            self.viewer.add_points(
                np.asarray(positions_um, np.float64), name="live neurons", features=features,
                text={"string": "{id}", "size": 8}, size=2.0, face_color="transparent", border_color="cyan",
                units=("micrometer",) * 3,
            )  # fmt: skip
        else:
            layer.data = np.asarray(positions_um, np.float64)
            layer.features = features

    def _layer(self, name: str) -> object | None:
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def closeEvent(self, event: object) -> None:  # noqa: N802 - Qt's name
        self.stop()
        super().closeEvent(event)
