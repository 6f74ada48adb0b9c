"""What every lab evaluation and bench shares: where it ran, which data it scored, and the simulator it used.

Results go to JSON through deepz.results (write_json, or results_file for runs that may be cut short).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepz.config import ConfigError

if TYPE_CHECKING:
    import torch

    from acquire.sim import SimConfig
    import numpy as np

    from acquire.sim.config import OpticsConfig
    from infer.engine import Engine
    from infer.manifest import Optics


def package_version(name: str) -> str | None:
    """The installed version of a distribution, or None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine(device: torch.device | None = None, *, packages: tuple[str, ...] = ()) -> dict[str, Any]:
    """Where a measurement ran: platform, CPU, cores and their load, Python; torch and its threads when it is
    loaded; the GPU of a CUDA ``device``; and the versions of ``packages``."""
    env: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),  # other processes competing for the same cores
        "python": platform.python_version(),
    }
    if "torch" in sys.modules:
        import torch

        env |= {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    if device is not None:
        env["device"] = str(device)
        if device.type == "cuda":
            import torch

            env |= {"gpu": torch.cuda.get_device_name(device), "cuda": torch.version.cuda}
    return env | {name: package_version(name) for name in packages}


def sim_config(
    size: int | tuple[int, int], *, seed: int | None = None, base: SimConfig | None = None
) -> SimConfig:
    """The simulator's config (``base``, else the default) with a camera of ``size`` pixels and ``seed``."""
    from acquire.sim import SimConfig

    base = base if base is not None else SimConfig()
    shape = (size, size) if isinstance(size, int) else tuple(size)
    update: dict[str, Any] = {"camera": base.camera.model_copy(update={"shape": shape})}
    if seed is not None:
        update["seed"] = seed
    return base.model_copy(update=update)


def optics_of(config: OpticsConfig) -> Optics:
    """The model manifest's Optics of a simulated microscope (what a model trained on it records)."""
    from infer.manifest import Optics

    return Optics(numerical_aperture=config.na, magnification=config.magnification,
                  wavelength_um=config.emission_um, pixel_size_um=config.pixel_size_um)


def shipped_deepz(
    frame_shape: tuple[int, int], planes_um: np.ndarray, *, engine: str = "torch", device: str | None = None
) -> tuple[Engine, dict[str, str]]:
    """The shipped Deep-Z model in an engine refocusing one frame (focus at 0) onto ``planes_um``, and what
    the results say of it (model name and digest, engine)."""
    from infer.dpm import uniform_dpm
    from infer.engine import make_engine
    from infer.model_io import default_model_path, load_model

    model = load_model(default_model_path())
    dpm = uniform_dpm(planes_um, frame_shape)
    built = make_engine(engine, model, frame_shape, dpm, batch=1, device=device)
    return built, {"model": model.manifest.name, "model_digest": model.digest, "engine": built.name}


def seed_or_path(path: Path | None, seed: int | None, *, path_flag: str) -> None:
    """Check that an evaluation got exactly one source: saved data at ``path`` or fresh worms of ``seed``."""
    if (path is None) == (seed is None):
        raise ConfigError(f"Give exactly one of {path_flag} PATH or --seed S.")
