"""One error boundary: every `deepz` command, given a path or config that is not there (or cannot be written),
stops with exit code 2 and a one-line ``error: ...`` message, never a traceback."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
import typer
from typer.testing import CliRunner

from deepz.cli import app

MISSING = "/nonexistent/deepz"  # a folder that is not there
UNWRITABLE = "/dev/null/deepz"  # below a file: nothing can be created there

# per command: arguments with one bad path or config ({tmp} is a fresh folder for required outputs)
BAD_INPUT: dict[str, list[str]] = {
    "acquire-stack": ["--out", "{tmp}/s.zarr", "--sim-config", f"{MISSING}/sim.toml"],
    "train": ["--config", f"{MISSING}/recipe.toml"],
    "evaluate": [f"{MISSING}/model", "--seed", "0"],
    "track": [f"{MISSING}/rec.zarr"],
    "evaluate-tracking": ["--json", "{tmp}/r.json", "--targettrack-dir", MISSING],
    "view": [f"{MISSING}/rec.zarr"],
    "live": ["--config", f"{MISSING}/run.toml"],
    "replay": [f"{MISSING}/rec.zarr", "--out", "{tmp}/replay.zarr"],
    "replay-batch": [f"{MISSING}/rec.zarr", "--out-dir", "{tmp}/replays"],
    "info": ["--config", f"{MISSING}/run.toml"],
    "export": [f"{MISSING}/rec.zarr", "--out", "{tmp}/tables"],
    "evaluate-superres": [f"{MISSING}/model", "--seed", "0"],
    "isotropic": [f"{MISSING}/stack.zarr", "--out", "{tmp}/iso.zarr"],
    "evaluate-isotropic": ["--targettrack", "--targettrack-dir", MISSING],
    "evaluate-activity": ["--json", "{tmp}/r.json", "--targettrack", "--targettrack-dir", MISSING],
    "calibrate": ["--out", "{tmp}/c.zarr", "--sim-config", f"{MISSING}/sim.toml"],
    "keys": ["--out", UNWRITABLE],
    "bench acquire": ["--sim-config", f"{MISSING}/sim.toml"],
    "bench train": ["--json", "{tmp}/r.json", "--recipe", f"{MISSING}/recipe.toml"],
    "bench infer": ["--model", f"{MISSING}/model"],
    "bench storage": ["--json", f"{UNWRITABLE}/r.json"],
    "bench track": ["--json", f"{UNWRITABLE}/r.json"],
    "bench view": ["--json", f"{UNWRITABLE}/r.json"],
    "bench pipeline": ["--json", "{tmp}/r.json", "--rate", "0"],
    "bench replay": ["--json", "{tmp}/r.json", "--model", f"{MISSING}/model"],
    "bench activity": ["--json", "{tmp}/r.json", "--device", "no-such-device"],
    "simulate frames": ["--out", "{tmp}/f.zarr", "--sim-config", f"{MISSING}/sim.toml"],
    "simulate stacks": ["--out", "{tmp}/s.zarr", "--sim-config", f"{MISSING}/sim.toml"],
    "simulate pairs": ["--out", "{tmp}/p.zarr", "--sim-config", f"{MISSING}/sim.toml"],
}


def commands() -> list[str]:
    """Every leaf command of the CLI, as its words ("bench infer")."""
    root = typer.main.get_command(app)
    ctx = click.Context(root)

    def walk(group, prefix: list[str]) -> list[str]:
        found = []
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            leaf = not hasattr(command, "list_commands")
            found += [" ".join([*prefix, name])] if leaf else walk(command, [*prefix, name])
        return found

    return walk(root, [])


def test_every_command_has_a_bad_input_case() -> None:
    assert sorted(commands()) == sorted(BAD_INPUT)


@pytest.mark.parametrize("command", sorted(BAD_INPUT))
def test_a_bad_path_or_config_is_one_line_and_exit_code_2(command: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("DEEPZ_TARGETTRACK", raising=False)
    args = command.split() + [a.replace("{tmp}", str(tmp_path)) for a in BAD_INPUT[command]]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0] == result.output.strip().splitlines()[-1], result.output
