"""Acquisition: frame sources (deepz.protocols.FrameSource) for the Micro-Manager camera loop (pymmcore-plus),
focal-stack z-scans, replay of recorded frames, and the simulated microscope (``acquire.sim``)."""

import os

# Cores here are driven from worker threads and never need Qt signals. Without this default, pymmcore-plus
# switches to Qt signals (which need qtpy) whenever a QApplication exists in the process, e.g. a viewer.
os.environ.setdefault("PYMM_SIGNALS_BACKEND", "psygnal")
