"""Orthogonal views of a virtual volume: XY plane (or max projection), XZ and YZ max projections, neurons."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from PySide6 import QtGui

from display.contrast import ContrastControl
from display.image_panel import ImagePanel
from display.markers import NeuronMarkers
from display.state import ViewState

VOLUME_COLORMAP = "inferno"
_ZOOM_MARGIN_UM = 15.0  # room around the tracked neurons for the worm's motion
_MIN_SLICE_TOLERANCE_UM = 2.0  # a neuron shows on an XY plane within this distance (about a nucleus radius+)


@dataclass(frozen=True)
class VolumeGeometry:
    """Where a (K, H, W) volume sits in sample coordinates (um)."""

    pixel_um: float
    planes_um: np.ndarray
    height: int
    width: int

    @property
    def dz_um(self) -> float:
        """Spacing between planes (1 when there is a single plane)."""
        return (
            float((self.planes_um[-1] - self.planes_um[0]) / (len(self.planes_um) - 1))
            if len(self.planes_um) > 1
            else 1.0
        )

    def xy_rect(self) -> tuple[float, float, float, float]:
        """Image rectangle of an (H, W) image: pixel centres at (row * px, col * px)."""
        px = self.pixel_um
        return (-px / 2, -px / 2, self.width * px, self.height * px)

    def xz_rect(self) -> tuple[float, float, float, float]:
        """Rectangle of the (K, W) XZ projection: x across, z up."""
        px, dz = self.pixel_um, self.dz_um
        return (-px / 2, float(self.planes_um[0]) - dz / 2, self.width * px, len(self.planes_um) * dz)

    def yz_rect(self) -> tuple[float, float, float, float]:
        """Rectangle of the (H, K) YZ projection: z across, y down (shared with the XY view)."""
        px, dz = self.pixel_um, self.dz_um
        return (float(self.planes_um[0]) - dz / 2, -px / 2, len(self.planes_um) * dz, self.height * px)


class VolumeViews:
    """XY / XZ / YZ panels of the volume with tracked-neuron markers (``markers[view].clicked``)."""

    def __init__(self) -> None:
        self.xy = ImagePanel(
            "XY plane", VOLUME_COLORMAP, x_label="x (um)", y_label="y (um)", invert_y=True, lock_aspect=True
        )
        self.xz = ImagePanel(
            "XZ max projection",
            VOLUME_COLORMAP,
            x_label="x (um)",
            y_label="z (um)",
            invert_y=False,
            lock_aspect=False,
        )
        self.yz = ImagePanel(
            "YZ max projection",
            VOLUME_COLORMAP,
            x_label="z (um)",
            y_label="y (um)",
            invert_y=True,
            lock_aspect=False,
        )
        self.xz.plot.setXLink(self.xy.plot)
        self.yz.plot.setYLink(self.xy.plot)
        self._zoomed = False
        self._volume_key: object = None
        self.markers = {
            "xy": NeuronMarkers(self.xy.plot),
            "xz": NeuronMarkers(self.xz.plot, label_all=False),
            "yz": NeuronMarkers(self.yz.plot, label_all=False),
        }

    def show(
        self,
        state: ViewState,
        *,
        z_index: int,
        max_projection: bool,
        contrast: ContrastControl,
        selected: Mapping[int, QtGui.QColor],
        show_labels: bool,
        new_data: bool = False,
    ) -> None:
        """Draw the volume of ``state`` (plane ``z_index`` or the XY max projection) and its neurons; the XY
        image and the projections get their own automatic levels (projections are brighter than planes).
        With ``new_data``, the images are kept when the source says the volume is the one already shown
        (``meta["volume_t"]``: live frames often outpace volumes); the neurons are always redrawn."""
        volume = state.volume
        if volume is None:
            return
        planes = state.planes_um
        geometry = VolumeGeometry(state.volume_pixel_size_um, planes, volume.shape[1], volume.shape[2])
        z_index = min(max(z_index, 0), volume.shape[0] - 1)
        volume_key = state.meta.get("volume_t")
        if not (new_data and volume_key is not None and volume_key == self._volume_key):
            self._volume_key = volume_key
            self._show_images(volume, planes, geometry, z_index, max_projection, contrast)
        ids, pos = state.track_ids, state.track_positions_um
        if not self._zoomed and ids is not None and pos is not None and len(ids):
            self._zoom_to(pos[:, 2], pos[:, 1], geometry)
        plane_z = None if max_projection else float(planes[z_index])
        tolerance = max(abs(geometry.dz_um), _MIN_SLICE_TOLERANCE_UM)
        self._show_neurons(state, plane_z, tolerance, selected, show_labels)

    def show_neurons(
        self, state: ViewState, *, selected: Mapping[int, QtGui.QColor], show_labels: bool
    ) -> None:
        """Draw the neurons of a state without images (a tracks-only store): all of them in every view, framed
        once by the source's extent of all tracks (``meta["extent_um"]``: axis -> (min, max) um)."""
        extent = state.meta.get("extent_um")
        if not self._zoomed and extent:
            self._zoomed = True
            (z0, z1), (y0, y1), (x0, x1) = (extent[axis] for axis in "zyx")
            margin = _ZOOM_MARGIN_UM / 3  # no motion to allow for: the extent covers every time point
            x_range, y_range, z_range = ((a - margin, b + margin) for a, b in ((x0, x1), (y0, y1), (z0, z1)))
            self.xy.plot.getViewBox().setRange(xRange=x_range, yRange=y_range, padding=0.0)
            self.xz.plot.getViewBox().setRange(yRange=z_range, padding=0.0)
            self.yz.plot.getViewBox().setRange(xRange=z_range, padding=0.0)
            self.xy.set_title("XY: all tracked neurons (no volume stored)")
            self.xz.set_title("XZ: tracked neurons")
            self.yz.set_title("YZ: tracked neurons")
        self._show_neurons(state, None, 0.0, selected, show_labels)

    def _show_images(
        self,
        volume: np.ndarray,
        planes: np.ndarray,
        geometry: VolumeGeometry,
        z_index: int,
        max_projection: bool,
        contrast: ContrastControl,
    ) -> None:
        xy = volume.max(axis=0) if max_projection else volume[z_index]
        self.xy.set_image(
            xy, contrast.levels_for(xy, key="mip" if max_projection else "plane"), geometry.xy_rect()
        )
        self.xy.set_title(
            "XY max projection"
            if max_projection
            else f"XY plane z = {planes[z_index]:+.1f} um ({z_index + 1}/{volume.shape[0]})"
        )
        for panel in (self.xz, self.yz):  # a single plane (super-resolution) has no axial extent to project
            panel.plot.setVisible(volume.shape[0] > 1)
        xz = volume.max(axis=1)
        projection_levels = contrast.levels_for(xz, key="projections", show=False)
        self.xz.set_image(xz, projection_levels, geometry.xz_rect())
        self.yz.set_image(volume.max(axis=2).T, projection_levels, geometry.yz_rect())

    def _show_neurons(
        self,
        state: ViewState,
        plane_z: float | None,
        tolerance_um: float,
        selected: Mapping[int, QtGui.QColor],
        show_labels: bool,
    ) -> None:
        """Markers of the state's neurons; in XY those within ``tolerance_um`` of ``plane_z`` (None: all)."""
        ids, pos = state.track_ids, state.track_positions_um
        if ids is None or pos is None or len(ids) == 0:
            for markers in self.markers.values():
                markers.clear()
            return
        z, y, x = pos[:, 0], pos[:, 1], pos[:, 2]
        on_plane = slice(None)
        if plane_z is not None:
            on_plane = np.abs(z - plane_z) <= tolerance_um
        values, conf = state.track_dff, state.track_confidence  # the readout's, when it runs
        values = values if values is not None and len(values) == len(ids) else None
        conf = conf if conf is not None and len(conf) == len(ids) else None
        plane_values = None if values is None else values[on_plane]
        plane_conf = None if conf is None else conf[on_plane]
        self.markers["xy"].set_points(ids[on_plane], np.column_stack([x, y])[on_plane], selected, show_labels,
                                      plane_values, plane_conf)
        self.markers["xz"].set_points(ids, np.column_stack([x, z]), selected, show_labels, values, conf)
        self.markers["yz"].set_points(ids, np.column_stack([z, y]), selected, show_labels, values, conf)

    def _zoom_to(self, x: np.ndarray, y: np.ndarray, geometry: VolumeGeometry) -> None:
        """Frame the tracked neurons (plus a margin for motion) once, on the first data that has them."""
        self._zoomed = True
        x0, y0, width, height = geometry.xy_rect()
        left, right = (
            max(float(x.min()) - _ZOOM_MARGIN_UM, x0),
            min(float(x.max()) + _ZOOM_MARGIN_UM, x0 + width),
        )
        top, bottom = (
            max(float(y.min()) - _ZOOM_MARGIN_UM, y0),
            min(float(y.max()) + _ZOOM_MARGIN_UM, y0 + height),
        )
        if right > left and bottom > top:
            self.xy.plot.getViewBox().setRange(xRange=(left, right), yRange=(top, bottom), padding=0.0)
