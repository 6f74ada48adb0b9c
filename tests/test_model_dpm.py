"""DPM builders: uniform planes, tilted and curved surfaces, arbitrary maps, range validation."""

from __future__ import annotations

import numpy as np
import pytest

from infer.dpm import curved_dpm, stack_dpms, tilted_dpm, uniform_dpm, uniform_planes, validate_dpm


def test_uniform_planes_and_dpms() -> None:
    planes = uniform_planes(-10, 10, 41)
    assert planes[0] == -10 and planes[-1] == 10 and np.allclose(np.diff(planes), 0.5)
    assert uniform_planes(-2, 4, 1).tolist() == [1.0]
    dpm = uniform_dpm(planes, (8, 6))
    assert dpm.shape == (41, 8, 6) and dpm.dtype == np.float32
    assert np.all(dpm[3] == planes[3])
    assert uniform_dpm(2.5, (4, 4)).shape == (4, 4)
    with pytest.raises(ValueError):
        uniform_planes(0, 1, 0)


def test_tilted_plane_has_the_requested_slopes_about_the_centre() -> None:
    px = 0.5
    d = tilted_dpm((21, 11), px, offset_um=1.0, slope_y=0.2, slope_x=-0.1)
    assert d.shape == (21, 11)
    assert np.isclose(d[10, 5], 1.0)  # centre pixel
    assert np.allclose(np.diff(d, axis=0), 0.2 * px) and np.allclose(np.diff(d, axis=1), -0.1 * px)


def test_curved_surface_from_polynomial_and_height_map() -> None:
    px = 1.0
    d = curved_dpm((5, 5), px, offset_um=-1.0, coefficients={(2, 0): 0.5, (0, 2): 0.5})
    assert np.isclose(d[2, 2], -1.0) and np.isclose(d[0, 0], -1.0 + 0.5 * 4 + 0.5 * 4)
    hm = np.arange(25, dtype=np.float32).reshape(5, 5) / 10
    assert np.allclose(curved_dpm((5, 5), px, height_map_um=hm), hm)
    with pytest.raises(ValueError, match="frame shape"):
        curved_dpm((4, 4), px, height_map_um=hm)
    assert stack_dpms([hm, -hm]).shape == (2, 5, 5)


def test_validate_dpm_names_the_trained_range() -> None:
    ok = uniform_dpm([-10, 10], (4, 4))
    assert validate_dpm(ok, 10.0).shape == (2, 4, 4)
    with pytest.raises(ValueError, match=r"\+/-10 um"):
        validate_dpm(uniform_dpm([-10.5], (4, 4)), 10.0)
    bad = np.zeros((4, 4), np.float32)
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        validate_dpm(bad, 10.0)
    with pytest.raises(ValueError, match="shape"):
        validate_dpm(np.zeros(4), 10.0)
