"""Acquisition: the FrameSource interface, the Micro-Manager camera loop (pymmcore-plus), focal-stack
z-scans, replay of recorded frames, and the simulated microscope (``acquire.sim``)."""
