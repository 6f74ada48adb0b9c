"""Run configuration: TOML + flag overrides, and clear errors for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepz.config import ConfigError, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_shipped_run_configs_load():
    for path in CONFIGS.glob("*.toml"):
        text = path.read_text()
        if "[source]" in text or "[inference]" in text:
            load_config(path)


def test_flags_override_the_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('duration_s = 5\n[inference]\nplanes = 8\nengine = "torch"\n')
    cfg = load_config(path, {"inference": {"planes": 12, "engine": None}, "recording": {"volumes": "3"}})
    assert cfg.inference.planes == 12 and cfg.inference.engine == "torch"
    assert cfg.duration_s == 5 and cfg.recording.volume_every == 3


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[inference\nplanes = 3", "not valid TOML"),
        ("[inference]\nplanez = 3", "planez: Extra inputs are not permitted"),
        ("[inference]\nz_range_um = [5, -5]", "low < high"),
        ('[recording]\nvolumes = "sometimes"', "every"),
        ("[source]\nrate_hz = -1", "rate_hz"),
        ('[source]\nmm_config = "/nonexistent/rig.cfg"', "does not exist"),
    ],
)
def test_bad_configs_name_the_problem(tmp_path, text, match):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(path)


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
