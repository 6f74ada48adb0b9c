"""pyqtgraph viewer of live Deep-Z volumes, tracked neurons and traces, over zmq or from a recording."""

from display.process import launch_viewer_process
from display.state import ViewState

__all__ = ["ViewState", "launch_viewer_process"]
