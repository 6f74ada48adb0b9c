"""Offline work on a Dask cluster: a local one by default, a scheduler address for a real one."""
