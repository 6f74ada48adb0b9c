"""The zmq message format between the pipeline and its viewers (version 1).

Spec
----
One message is a zmq multipart message of ``2 + n`` frames:

1. topic: the ASCII bytes ``b"deepz"`` (subscribers filter on it);
2. header: UTF-8 JSON object with
   - ``"v"``: format version (int, currently 1; readers refuse other major versions),
   - ``"seq"``: message sequence number from the publisher (int, increasing),
   - ``"t"``: frame index of the newest frame the message describes (int),
   - ``"sent"``: host time at publication (``time.time()`` seconds),
   - ``"arrays"``: list of ``{"name": str, "dtype": numpy dtype string, "shape": [int, ...]}``, one per
     buffer frame that follows, in order,
   - ``"stats"``: flat object of pipeline figures (rates in Hz, latencies in ms, counts),
   - ``"meta"``: free object (planes_um, pixel_size_um, voxel size, recording path ...);
3. ``n`` raw array buffers, C-contiguous, little-endian, exactly ``prod(shape) * itemsize`` bytes each.

Array names used by the pipeline: ``frame`` (H, W) uint16 raw camera frame; ``volume`` (K, H, W) uint16
virtual volume; ``track_ids`` (N,) int64; ``track_positions_um`` (N, 3) float32 (z, y, x);
``trace_ids`` (M,) int64 and ``traces_dff`` (M, W) float32: the recent dF/F window of the tracked neurons;
``trace_t`` (W,) float64 times of that window in seconds. With a live readout (calibrated reference
neurons), ``track_dff`` and ``track_confidence`` (N,) float32: each marked neuron's current dF/F and the
readout's confidence in it (its signal-to-noise ratio); stats then carry ``calibrations``,
``last_calibration_host_s``, ``reference_neurons``, ``calibration_pause_s`` and ``calibration_frames_cost``.
Any may be absent.

Readers reject, with a MessageError and nothing else, any message off this spec: framing, header fields and
types, buffer sizes, and the content rules of wire.checks (each named array's dimensions, dtype and
finiteness, the agreement of arrays about the same neurons or time window, the geometry in meta).

Security: publishers bind to loopback unless asked; beyond it they warn, and with CurveZMQ keys (wire.curve,
`deepz keys`) the stream is encrypted and only admitted clients complete the handshake.

Delivery is latest-only and lossy: the publisher's send high-water mark is small and sends never block, and
subscribers drain their socket to the newest message (``CONFLATE`` does not support multipart messages).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import zmq

from wire.checks import NUMERIC_KINDS, MessageError, check_content

if TYPE_CHECKING:
    from wire.curve import ClientKeys, ServerKeys

log = logging.getLogger(__name__)

VERSION = 1
TOPIC = b"deepz"
DEFAULT_ADDRESS = "tcp://127.0.0.1:5557"
MAX_DIMS = 8


@dataclass(frozen=True)
class Message:
    """One decoded update: named arrays plus the pipeline's stats and metadata."""

    seq: int
    t: int
    sent: float
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def encode(
    seq: int,
    t: int,
    arrays: Mapping[str, np.ndarray],
    stats: Mapping[str, Any] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> list[bytes | memoryview]:
    """Build the multipart frames of one message; array buffers are passed without copying."""
    contiguous = {name: np.ascontiguousarray(a) for name, a in arrays.items()}
    header = {
        "v": VERSION,
        "seq": int(seq),
        "t": int(t),
        "sent": time.time(),
        "arrays": [
            {"name": name, "dtype": a.dtype.newbyteorder("<").str, "shape": list(a.shape)}
            for name, a in contiguous.items()
        ],
        "stats": dict(stats or {}),
        "meta": dict(meta or {}),
    }
    buffers = [a.astype(a.dtype.newbyteorder("<"), copy=False).data.cast("B") for a in contiguous.values()]
    return [TOPIC, json.dumps(header).encode(), *buffers]


def decode(frames: Sequence[bytes | zmq.Frame]) -> Message:
    """Parse the multipart frames of one message; raises MessageError on anything off-spec (framing, header,
    buffer sizes, and the content rules of wire.checks), never another exception."""
    raw = [f.buffer if isinstance(f, zmq.Frame) else f for f in frames]
    if len(raw) < 2 or bytes(raw[0]) != TOPIC:
        raise MessageError("not a deepz message: missing the b'deepz' topic frame or header")
    header = _header(raw[1])
    specs = header["arrays"]
    if len(specs) != len(raw) - 2:
        raise MessageError(f"header lists {len(specs)} arrays but {len(raw) - 2} buffers arrived")
    arrays: dict[str, np.ndarray] = {}
    for spec, buf in zip(specs, raw[2:], strict=True):
        name, dtype, shape = _array_spec(spec)
        if name in arrays:
            raise MessageError(f"array {name!r} is listed twice")
        size = memoryview(buf).nbytes
        expected = math.prod(shape) * dtype.itemsize
        if size != expected:
            raise MessageError(f"array {name!r}: {size} bytes, expected {expected} for {shape} {dtype}")
        arrays[name] = np.frombuffer(buf, dtype=dtype).reshape(shape)
    message = Message(
        seq=header["seq"], t=header["t"], sent=float(header["sent"]), arrays=arrays,
        stats=header.get("stats", {}), meta=header.get("meta", {}),
    )
    check_content(message)
    return message


def _header(frame: bytes | memoryview) -> dict[str, Any]:
    """The header frame as a dict whose required fields have their spec types."""
    try:
        header = json.loads(bytes(frame))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MessageError(f"message header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise MessageError(f"message header is a JSON {type(header).__name__}, not an object")
    if header.get("v") != VERSION:
        raise MessageError(f"message format version {header.get('v')!r}; this program reads version {VERSION}")
    for key in ("seq", "t"):
        value = header.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise MessageError(f"header field {key!r} is {value!r}; it must be an integer >= 0")
    sent = header.get("sent")
    if not isinstance(sent, int | float) or isinstance(sent, bool) or not math.isfinite(sent):
        raise MessageError(f"header field 'sent' is {sent!r}; it must be a finite time in seconds")
    if not isinstance(header.get("arrays"), list):
        raise MessageError("header field 'arrays' is missing or not a list")
    return header


def _array_spec(spec: Any) -> tuple[str, np.dtype, tuple[int, ...]]:
    """(name, dtype, shape) of one ``arrays`` entry of the header."""
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not isinstance(spec.get("dtype"), str):
        raise MessageError(f"array entry {spec!r} lacks a name, dtype or shape")
    name, shape = spec["name"], spec.get("shape")
    if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(
        isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2**31 for n in shape
    ):
        raise MessageError(f"array {name!r} has shape {shape!r}; a shape is a list of up to {MAX_DIMS} sizes >= 0")
    try:
        dtype = np.dtype(spec["dtype"])
    except (TypeError, ValueError) as exc:
        raise MessageError(f"array {name!r} has dtype {spec['dtype']!r}, which numpy does not know") from exc
    if dtype.kind not in NUMERIC_KINDS:
        raise MessageError(f"array {name!r} has dtype {dtype}; arrays are numbers")
    return name, dtype, tuple(shape)


def is_local(address: str) -> bool:
    """True for endpoints only this machine can reach: ipc, inproc, or tcp on a loopback address."""
    scheme, _, rest = address.partition("://")
    if scheme != "tcp":
        return scheme in ("ipc", "inproc")
    host = rest.rsplit(":", 1)[0].strip("[]")
    return host == "localhost" or host == "::1" or host.startswith("127.")


class Publisher:
    """PUB socket that never blocks the pipeline: zmq drops messages to a subscriber whose queue is full.

    With ``curve`` (wire.curve) the stream is encrypted and only authorised clients receive it; binding
    beyond loopback is logged as a warning either way (without CurveZMQ, anyone on the network can watch).
    """

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        curve: ServerKeys | None = None,
    ) -> None:
        # a CURVE server's authenticator owns its context's ZAP endpoint: give it a context of its own
        self._own_context = context is None and curve is not None
        self._ctx = context or (zmq.Context() if curve is not None else zmq.Context.instance())
        self._socket = self._ctx.socket(zmq.PUB)
        self._socket.setsockopt(zmq.SNDHWM, 2)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._authenticator = curve.secure(self._socket) if curve is not None else None
        try:
            self._socket.bind(address)
        except zmq.ZMQError as exc:
            self.close()
            raise OSError(
                f"cannot publish on {address}: {exc}. Another deepz run may hold the port; "
                "pass --publish tcp://127.0.0.1:OTHER_PORT."
            ) from exc
        self.address = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.curve = curve
        self._seq = 0
        if not is_local(address):
            log.warning(
                "publishing on %s: every network interface of this machine; %s", address,
                f"encrypted with CurveZMQ, only clients with a key from {curve.secret_file.parent} get it"
                if curve is not None else
                "ANYONE who can reach this machine can watch the stream. Protect it with CurveZMQ: deepz keys --out "
                "KEYS, then [publish] curve_secret_key = \"KEYS/server.key_secret\" and deepz view --connect ADDRESS "
                "--server-key KEYS/server.key --client-key KEYS/client.key_secret",
            )  # fmt: skip

    def publish(
        self,
        t: int,
        arrays: Mapping[str, np.ndarray],
        stats: Mapping[str, Any] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        """Send one message without blocking; arrays must not be modified afterwards (zero-copy)."""
        self._seq += 1
        self._socket.send_multipart(encode(self._seq, t, arrays, stats, meta), flags=zmq.NOBLOCK, copy=False)

    def close(self) -> None:
        self._socket.close(linger=0)
        if self._authenticator is not None:
            self._authenticator.stop()
        if self._own_context:
            self._ctx.term()


class Subscriber:
    """SUB socket that hands out only the newest message, discarding older queued ones; with ``curve``
    (wire.curve) it connects to a CURVE publisher."""

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        curve: ClientKeys | None = None,
    ) -> None:
        self._ctx = context or zmq.Context.instance()
        self._socket = self._ctx.socket(zmq.SUB)
        self._socket.setsockopt(zmq.RCVHWM, 4)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.SUBSCRIBE, TOPIC)
        if curve is not None:
            curve.secure(self._socket)
        try:
            self._socket.connect(address)
        except zmq.ZMQError as exc:
            self._socket.close()
            raise OSError(f"cannot connect to {address}: {exc}") from exc
        self.address = address
        self.received = 0
        self.discarded = 0

    def latest(self, timeout_ms: int = 0) -> Message | None:
        """Return the newest message waiting (waiting up to ``timeout_ms`` for one), or None."""
        if not self._socket.poll(timeout_ms):
            return None
        newest = None
        while True:
            try:
                frames = self._socket.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            if newest is not None:
                self.discarded += 1
            newest = frames
        if newest is None:  # polled readable, yet nothing to take
            return None
        self.received += 1
        return decode(newest)

    def close(self) -> None:
        self._socket.close(linger=0)
