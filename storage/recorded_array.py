"""Committed rows of a recording array of a recording array; names the corrupt chunk when a read fails."""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr

from storage.records import CorruptChunkError


class RecordedArray:
    """Array-like over the first ``length`` rows of a zarr array (rows past the commit point stay hidden)."""

    def __init__(self, array: zarr.Array, length: int, name: str) -> None:
        self._array = array
        self._name = name
        self.shape: tuple[int, ...] = (min(length, array.shape[0]), *array.shape[1:])
        self.dtype = array.dtype
        self.ndim = array.ndim

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        data = self[:]
        return data if dtype is None else data.astype(dtype)

    def __repr__(self) -> str:
        return f"RecordedArray({self._name!r}, shape={self.shape}, dtype={self.dtype})"

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if key and key[0] is not Ellipsis:
            first, rest = self._first_axis(key[0]), key[1:]
        else:
            first, rest = slice(0, len(self)), key
        try:
            return np.asarray(self._array[(first, *rest)])
        except Exception as exc:  # noqa: BLE001 - codec errors have no common type; located and re-raised
            corrupt = self._find_corrupt_row(first)
            if corrupt is None:
                raise
            raise corrupt from exc

    def _first_axis(self, index: Any) -> Any:
        n = len(self)
        if isinstance(index, slice):
            return slice(*index.indices(n))
        if isinstance(index, int | np.integer):
            t = int(index) + (n if index < 0 else 0)
            if not 0 <= t < n:
                raise IndexError(f"index {index} is out of range for {self._name} with {n} stored rows")
            return t
        indices = np.asarray(index)
        if indices.dtype == bool or indices.min(initial=0) < -n or indices.max(initial=0) >= n:
            raise IndexError(f"{self._name}: only in-range integer indices are supported, got {index!r}")
        return np.where(indices < 0, indices + n, indices)

    def _find_corrupt_row(self, first: Any) -> CorruptChunkError | None:
        """Read row by row to find the first undecodable row and the file that holds it."""
        rows = range(len(self))[first] if isinstance(first, slice) else np.atleast_1d(first)
        shard_rows = (self._array.shards or self._array.chunks)[0]
        for t in rows:
            try:
                self._array[int(t)]
            except Exception as exc:  # noqa: BLE001 - any decode failure marks this row
                key = "/".join(["c", str(int(t) // shard_rows)] + ["0"] * (self.ndim - 1))
                return CorruptChunkError(
                    f"{self._name}: the chunk holding row t={int(t)} (file {self._name}/{key}) is corrupt "
                    f"and cannot be decoded ({type(exc).__name__}: {exc}). The rest of the recording is "
                    "still readable; skip this row or restore the file from a backup."
                )
        return None
