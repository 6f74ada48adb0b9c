"""CLI commands, one module per area: module-level Typer sub-apps (``app``, and ``bench`` / ``simulate`` where the
area has benches or simulated data sets) that deepz/cli.py merges into ``deepz``."""
