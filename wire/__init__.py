"""The wire format between the pipeline and its viewers (zmq messages, their content checks, CurveZMQ keys),
and the per-frame metadata every stage passes on (wire.frames).

A leaf package: it imports no stage and not deepz, so both the pipeline (deepz/) and the viewer (display/)
depend on it and on nothing of each other.
"""
