"""The live viewer against malformed messages: every kind sent over a real zmq PUB socket to a real (offscreen)
viewer is rejected and counted, nothing escapes its Qt slot, and the next good message is shown. And
`deepz view --connect` to an endpoint that never answers says it is waiting and stops on SIGINT or SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
import zmq

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from view_data import message_arrays, small_states  # noqa: E402

from wire.messages import TOPIC, encode  # noqa: E402
from display.app import open_live_window  # noqa: E402

HEADER = {"v": 1, "seq": 1, "t": 5, "sent": 1.0, "stats": {}, "meta": {}}


def _free_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def _message(arrays: dict[str, np.ndarray] | None = None, **header: object) -> list[bytes]:
    """A raw message: the header fields given (None deletes one) and the arrays' buffers as they are."""
    arrays = arrays if arrays is not None else {"frame": np.zeros((8, 8), np.uint16)}
    fields = {**HEADER, "arrays": [{"name": n, "dtype": a.dtype.str, "shape": list(a.shape)}
                                   for n, a in arrays.items()], **header}  # fmt: skip
    fields = {k: v for k, v in fields.items() if v is not None}
    return [TOPIC, json.dumps(fields).encode(), *(a.tobytes() for a in arrays.values())]


def _with(meta: dict | None = None, **arrays: np.ndarray) -> list[bytes]:
    """A frame plus ``arrays`` (and ``meta``)."""
    return _message({"frame": np.zeros((8, 8), np.uint16), **arrays}, meta=meta or {})


IDS = np.arange(4, dtype=np.int64)
POS = np.zeros((4, 3), np.float32)
VOLUME = np.zeros((3, 8, 8), np.uint16)
MALFORMED: dict[str, list[bytes]] = {
    "topic only": [TOPIC],
    "longer topic": [TOPIC + b"x", json.dumps(HEADER).encode()],
    "garbage bytes": [TOPIC, bytes(range(256)) * 3],
    "not UTF-8": [TOPIC, b"\xff\xfe\xfa"],
    "not JSON": [TOPIC, b"{not json"],
    "JSON list": [TOPIC, b"[1, 2, 3]"],
    "JSON null": [TOPIC, b"null"],
    "version 99": _message(v=99),
    "no version": _message(v=None),
    "no seq": _message(seq=None),
    "seq text": _message(seq="one"),
    "t list": _message(t=[1]),
    "t negative": _message(t=-3),
    "t bool": _message(t=True),
    "sent NaN": [TOPIC, json.dumps({**HEADER, "arrays": [], "sent": float("nan")}).encode()],
    "sent text": _message(sent="now"),
    "no arrays": [TOPIC, json.dumps(HEADER).encode()],
    "arrays object": [TOPIC, json.dumps({**HEADER, "arrays": {"frame": 1}}).encode()],
    "entry not object": [TOPIC, json.dumps({**HEADER, "arrays": [7]}).encode(), b""],
    "entry without dtype": [TOPIC, json.dumps({**HEADER, "arrays": [{"name": "frame", "shape": [2]}]}).encode(),
                            b"abcd"],  # fmt: skip
    "unknown dtype": [TOPIC, json.dumps({**HEADER, "arrays": [{"name": "frame", "dtype": "<zz9", "shape": [2]}]}
                                        ).encode(), b"abcd"],  # fmt: skip
    "object dtype": [TOPIC, json.dumps({**HEADER, "arrays": [{"name": "frame", "dtype": "|O", "shape": [1]}]}
                                       ).encode(), b"\x00" * 8],  # fmt: skip
    "negative shape": [TOPIC, json.dumps({**HEADER, "arrays": [{"name": "frame", "dtype": "<u2", "shape": [-1, 4]}]}
                                         ).encode(), b""],  # fmt: skip
    "float shape": [TOPIC, json.dumps({**HEADER, "arrays": [{"name": "frame", "dtype": "<u2", "shape": [2.5]}]}
                                      ).encode(), b"abcd"],  # fmt: skip
    "overflowing shape": [TOPIC, json.dumps({**HEADER, "arrays": [{"name": "x", "dtype": "<u2",
                                                                  "shape": [2**30, 2**30, 2**30, 2**30]}]}).encode(),
                          b""],  # fmt: skip
    "short buffer": _message({"frame": np.zeros((8, 8), np.uint16)})[:2] + [b"\x00" * 100],
    "truncated multipart": _message({"frame": np.zeros((8, 8), np.uint16), "volume": VOLUME})[:3],
    "extra buffer": _with() + [b"\x00" * 16],
    "duplicate name": [TOPIC, json.dumps({**HEADER, "arrays": [{"name": "frame", "dtype": "<u2", "shape": [8, 8]}] * 2}
                                         ).encode(), b"\x00" * 128, b"\x00" * 128],  # fmt: skip
    "frame 3-D": _message({"frame": np.zeros((2, 8, 8), np.uint16)}),
    "frame 1-D": _message({"frame": np.zeros(64, np.uint16)}),
    "frame float": _message({"frame": np.zeros((8, 8), np.float32)}),
    "frame empty": _message({"frame": np.zeros((0, 8), np.uint16)}),
    "volume 2-D": _with(volume=np.zeros((8, 8), np.uint16)),
    "volume no planes": _with(volume=np.zeros((0, 8, 8), np.uint16)),
    "positions (N, 2)": _with(track_ids=IDS, track_positions_um=np.zeros((4, 2), np.float32)),
    "positions NaN": _with(track_ids=IDS, track_positions_um=np.full((4, 3), np.nan, np.float32)),
    "positions infinite": _with(track_ids=IDS, track_positions_um=np.full((4, 3), np.inf, np.float32)),
    "ids float": _with(track_ids=IDS.astype(np.float64), track_positions_um=POS),
    "ids and positions disagree": _with(track_ids=IDS[:3], track_positions_um=POS),
    "readout length": _with(track_ids=IDS, track_positions_um=POS, track_dff=np.zeros(2, np.float32)),
    "trace rows": _with(trace_ids=IDS, traces_dff=np.zeros((3, 5), np.float32), trace_t=np.arange(5.0)),
    "trace window": _with(trace_ids=IDS, traces_dff=np.zeros((4, 5), np.float32), trace_t=np.arange(4.0)),
    "trace time NaN": _with(trace_ids=IDS, traces_dff=np.zeros((4, 2), np.float32), trace_t=np.array([0, np.nan])),
    "traces infinite": _with(trace_ids=IDS, traces_dff=np.full((4, 2), np.inf, np.float32), trace_t=np.arange(2.0)),
    "stats list": _message(stats=[1, 2]),
    "stats nested": _message(stats={"input_hz": {"a": 1}}),
    "meta list": _message(meta=[1]),
    "pixel size zero": _message(meta={"pixel_size_um": 0}),
    "pixel size text": _message(meta={"pixel_size_um": "small"}),
    "volume pixel size negative": _message(meta={"volume_pixel_size_um": -0.1}),
    "planes number": _with(volume=VOLUME, meta={"planes_um": 5}),
    "planes text": _with(volume=VOLUME, meta={"planes_um": ["a", "b", "c"]}),
    "planes count": _with(volume=VOLUME, meta={"planes_um": [0.0, 1.0]}),
}


@pytest.fixture
def publisher() -> Iterator[tuple[str, zmq.Socket]]:
    address = _free_address()
    sock = zmq.Context.instance().socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(address)
    yield address, sock
    sock.close(linger=0)


def test_every_malformed_message_is_rejected_counted_and_the_next_good_one_shown(publisher, qtbot) -> None:
    address, sock = publisher
    escaped: list[BaseException] = []
    previous_hook = sys.excepthook
    sys.excepthook = lambda kind, value, tb: escaped.append(value)
    window, feed = open_live_window(address)
    qtbot.addWidget(window)
    window.show()
    try:
        assert f"waiting for {address} (no message yet" in window.status_label.text()
        state = small_states()[0]
        good = encode(1, 1, message_arrays(state), {"input_hz": 100.0}, state.meta)
        qtbot.waitUntil(lambda: sock.send_multipart(good) or feed.shown > 0, timeout=10_000)  # subscribed
        for kind, frames in MALFORMED.items():
            before = feed.rejected
            sock.send_multipart(frames)
            qtbot.waitUntil(lambda before=before: feed.rejected > before, timeout=5_000)
            assert feed.rejected == before + 1, kind
            assert "rejected" in window.status_label.text(), kind
        assert feed.shown == 1 and window.state.t == 1
        qtbot.waitUntil(lambda: sock.send_multipart(encode(2, 99, message_arrays(state), {}, state.meta))
                        or window.state.t == 99, timeout=5_000)  # fmt: skip
        assert f"rejected {len(MALFORMED)} bad message(s)" in window.status_label.text()
    finally:
        sys.excepthook = previous_hook
        feed.close()
    assert escaped == []


def _viewer(address: str) -> tuple[subprocess.Popen, list[str]]:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.Popen([sys.executable, "-m", "deepz", "view", "--connect", address], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()
    return proc, lines


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_view_connect_to_a_silent_endpoint_waits_visibly_and_stops_on_signal(sig: signal.Signals) -> None:
    address = "tcp://192.0.2.1:5557"  # TEST-NET-1: nothing ever answers
    proc, lines = _viewer(address)
    try:
        deadline = time.monotonic() + 60
        while not any(f"waiting for {address} (no message yet)" in line for line in lines):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.05)
        time.sleep(0.5)  # inside the Qt event loop
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = "".join(lines)
    assert "Traceback" not in text and f"viewer stopped ({sig.name})" in text
