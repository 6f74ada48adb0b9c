"""napari plugin (npe2) of deepz-live: open recordings, calibration scans and focal stacks; watch a run."""
