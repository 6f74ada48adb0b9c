"""The zmq message format over real sockets: round trip, rejection of bad messages, latest-only delivery."""

from __future__ import annotations

import time

import numpy as np
import pytest
import zmq

from wire.messages import TOPIC, MessageError, Publisher, Subscriber, decode, encode


@pytest.fixture
def pair():
    pub = Publisher("tcp://127.0.0.1:*")
    sub = Subscriber(pub.address)
    time.sleep(0.3)  # let the subscription reach the publisher (zmq slow joiner)
    yield pub, sub
    sub.close()
    pub.close()


def test_round_trip_over_tcp_keeps_arrays_stats_and_meta(pair):
    pub, sub = pair
    frame = np.random.default_rng(0).integers(0, 65535, (64, 48), dtype=np.uint16)
    volume = np.arange(3 * 64 * 48, dtype=np.uint16).reshape(3, 64, 48)
    positions = np.array([[1.5, 2.0, 3.25]], np.float32)
    pub.publish(7, {"frame": frame, "volume": volume, "track_positions_um": positions},
                       {"input_hz": 99.5}, {"planes_um": [-1.0, 0.0, 1.0]})
    msg = sub.latest(timeout_ms=2000)
    assert msg is not None and msg.t == 7 and msg.seq == 1
    np.testing.assert_array_equal(msg.arrays["frame"], frame)
    np.testing.assert_array_equal(msg.arrays["volume"], volume)
    np.testing.assert_array_equal(msg.arrays["track_positions_um"], positions)
    assert msg.stats == {"input_hz": 99.5} and msg.meta == {"planes_um": [-1.0, 0.0, 1.0]}


def test_subscriber_hands_out_only_the_newest(pair):
    pub, sub = pair
    for t in range(2):
        pub.publish(t, {"frame": np.full((8, 8), t, np.uint16)})
        time.sleep(0.05)
    msg = sub.latest(timeout_ms=2000)
    assert msg.t == 1 and sub.discarded == 1
    assert sub.latest(timeout_ms=50) is None


def test_stalled_subscriber_never_blocks_the_publisher():
    pub = Publisher("tcp://127.0.0.1:*")
    stalled = Subscriber(pub.address)
    time.sleep(0.3)
    big = np.zeros((16, 256, 256), np.uint16)  # 2 MiB a message; nobody reads them while they are sent
    for t in range(300):
        pub.publish(t, {"volume": big})
    newest = None
    while (msg := stalled.latest(timeout_ms=500)) is not None:
        newest = msg
    delivered = stalled.received + stalled.discarded
    assert newest is not None and delivered < 150  # the rest were dropped at the high-water mark
    stalled.close()
    pub.close()


@pytest.mark.parametrize(
    ("frames", "match"),
    [
        ([b"other", b"{}"], "topic"),
        ([TOPIC, b"not json"], "not JSON"),
        ([TOPIC, b'{"v": 99, "arrays": []}'], "version 99"),
        ([TOPIC, b'{"v": 1, "seq": 1, "t": 0, "sent": 0, "arrays": [{"name": "a", "dtype": "<u2", "shape": [4]}]}'],
         "lists 1 arrays but 0"),
        ([TOPIC, b'{"v": 1, "seq": 1, "t": 0, "sent": 0, "arrays": [{"name": "a", "dtype": "<u2", "shape": [4]}]}',
          b"abc"], "3 bytes, expected 8"),
    ],
)
def test_bad_messages_are_rejected_with_the_reason(frames, match):
    with pytest.raises(MessageError, match=match):
        decode(frames)


def test_encode_is_zero_copy_for_contiguous_arrays():
    volume = np.ones((2, 4, 4), np.uint16)
    parts = encode(1, 0, {"volume": volume})
    assert np.shares_memory(np.frombuffer(parts[2], np.uint16), volume)
    assert isinstance(zmq.Frame(parts[2]).buffer, memoryview)
