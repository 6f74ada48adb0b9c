"""pyqtgraph viewer of live Deep-Z volumes, tracked neurons and traces, over zmq or from a recording."""

from display.process import display_available, launch_viewer_process
from display.state import ViewState

__all__ = ["ViewState", "display_available", "launch_viewer_process"]
