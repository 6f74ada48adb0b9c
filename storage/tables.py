"""Traces from the tracks table: one dF/F row per neuron id, one column per tracked time point."""

from __future__ import annotations

import numpy as np


def traces_from_tracks(
    t: np.ndarray, ids: np.ndarray, dff: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids (M,), t (T,), dff (M, T) float32, NaN where a neuron was not tracked) from table columns."""
    unique_ids, id_index = np.unique(ids, return_inverse=True)
    unique_t, t_index = np.unique(t, return_inverse=True)
    table = np.full((len(unique_ids), len(unique_t)), np.nan, np.float32)
    table[id_index, t_index] = dff
    return unique_ids, unique_t, table
