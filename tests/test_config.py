"""Run configuration: TOML + flag overrides, and clear errors for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepz.config import PACKAGED_CONFIGS, ConfigError, load_config

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
        ("[calibration]\nenabled = true\n[tracking]\nenabled = false", "--no-track.*keep one of them"),
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


def test_repo_configs_are_the_packaged_ones():
    """configs/ in the repository is the package's deepz/configs (one source of truth, shipped in the wheel)."""
    assert CONFIGS.resolve() == PACKAGED_CONFIGS and (PACKAGED_CONFIGS / "demo.toml").is_file()


def test_a_shipped_config_is_found_by_name_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config("demo") == load_config(PACKAGED_CONFIGS / "demo.toml")
    cfg = load_config("superres-live")  # its sim_config and model are relative to the file / shipped names
    assert cfg.source.sim_config == PACKAGED_CONFIGS / "sim-10x.toml" and cfg.source.sim_config.is_file()
    assert cfg.inference.model.name == "superres-na" and (cfg.inference.model / "manifest.json").is_file()
    with pytest.raises(ConfigError, match=r"does not exist; pass a path or a shipped config: demo, "):
        load_config("nodemo")


def test_paths_inside_a_config_are_relative_to_the_file(tmp_path, monkeypatch):
    rig = tmp_path / "rig"
    rig.mkdir()
    (rig / "optics.toml").write_text("[optics]\nna = 0.4\n")
    (rig / "run.toml").write_text(
        '[source]\nsim_config = "optics.toml"\n[inference]\nmodel = "models/mine"\n'
        '[recording]\nout = "rec.zarr"\n'
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(rig / "run.toml", {"source": {"mm_config": None}})
    assert cfg.source.sim_config == rig / "optics.toml"
    assert cfg.inference.model == rig / "models" / "mine"  # inputs: beside the config
    assert cfg.recording.out == Path("rec.zarr")  # outputs: in the working directory
    flags = load_config(rig / "run.toml", {"source": {"sim_config": Path("sim-10x")}})  # a flag: cwd or shipped
    assert flags.source.sim_config == PACKAGED_CONFIGS / "sim-10x.toml"
