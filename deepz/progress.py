"""Progress bars for long runs, fed by the pipeline's status callback."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm


@contextlib.contextmanager
def replay_progress(recording: Path) -> Iterator[Callable[[dict[str, Any]], None]]:
    """A tqdm bar over the recording's frames; yields the status callback that advances it."""
    from storage import RecordingReader

    total = RecordingReader(recording).n_frames
    with tqdm(total=total, unit="frame", desc=f"replay {Path(recording).name}", dynamic_ncols=True) as bar:

        def advance(status: dict[str, Any]) -> None:
            bar.update(status["volumes"] - bar.n)
            bar.set_postfix(volumes_per_s=status["volume_hz"], refresh=False)

        yield advance
