"""napari plugin (npe2) for deepz-live: open recordings, calibration scans and focal stacks; watch a live run."""
