"""CurveZMQ for remote viewers: real PUB/SUB pairs over tcp loopback. With the keys from `deepz keys` a viewer
receives the stream; a subscriber without them (or with a key the publisher does not admit) receives nothing;
a bind beyond loopback is warned about."""

from __future__ import annotations

import logging
import os
import stat
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from deepz.cli import app  # noqa: E402
from deepz.config import PublishConfig  # noqa: E402
from wire.curve import ClientKeys, CurveKeyError, ServerKeys, create_keys  # noqa: E402
from wire.messages import Publisher, Subscriber, is_local  # noqa: E402
from deepz.wiring import build_publisher  # noqa: E402

FRAME = {"frame": np.full((16, 16), 7, np.uint16)}


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("keys")
    result = CliRunner().invoke(app, ["keys", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _received(pub: Publisher, subscribers: list[Subscriber], seconds: float = 2.0) -> list[bool]:
    """Publish for ``seconds`` (past zmq's connect and CURVE handshake); which subscribers got a message."""
    got = [False] * len(subscribers)
    deadline, t = time.monotonic() + seconds, 0
    while time.monotonic() < deadline and not all(got):
        pub.publish(t, FRAME)
        t += 1
        for i, sub in enumerate(subscribers):
            got[i] = got[i] or sub.latest(timeout_ms=20) is not None
    return got


def test_keys_command_writes_private_secret_files_and_never_overwrites(keys: Path) -> None:
    assert sorted(p.name for p in keys.iterdir()) == ["client.key", "client.key_secret", "server.key",
                                                      "server.key_secret"]  # fmt: skip
    assert stat.S_IMODE((keys / "server.key_secret").stat().st_mode) == 0o600
    assert stat.S_IMODE((keys / "client.key_secret").stat().st_mode) == 0o600
    before = (keys / "server.key_secret").read_bytes()
    with pytest.raises(CurveKeyError, match="--overwrite"):
        create_keys(keys)
    assert (keys / "server.key_secret").read_bytes() == before


def test_only_subscribers_with_admitted_keys_receive_the_stream(keys: Path, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    create_keys(stranger)  # a valid key pair the publisher does not admit, and another server's public key
    pub = Publisher("tcp://127.0.0.1:*", curve=ServerKeys.load(keys / "server.key_secret"))
    subscribers = [
        Subscriber(pub.address, curve=ClientKeys.load(keys / "server.key", keys / "client.key_secret")),
        Subscriber(pub.address),  # no CURVE at all
        Subscriber(pub.address, curve=ClientKeys.load(keys / "server.key", stranger / "client.key_secret")),
        Subscriber(pub.address, curve=ClientKeys.load(stranger / "server.key", keys / "client.key_secret")),
    ]
    try:
        assert _received(pub, subscribers) == [True, False, False, False]
    finally:
        for sub in subscribers:
            sub.close()
        pub.close()


def test_non_loopback_bind_is_warned_and_curve_comes_from_the_publish_config(keys: Path, caplog) -> None:
    assert is_local("tcp://127.0.0.1:5557") and is_local("ipc:///tmp/x") and is_local("tcp://[::1]:5557")
    assert not is_local("tcp://*:5557") and not is_local("tcp://0.0.0.0:5557") and not is_local("tcp://10.0.0.2:1")
    with caplog.at_level(logging.WARNING, logger="wire.messages"):
        Publisher("tcp://*:*").close()
        assert "ANYONE who can reach this machine" in caplog.text and "deepz keys" in caplog.text
        caplog.clear()
        pub = build_publisher(PublishConfig(address="tcp://*:*", curve_secret_key=keys / "server.key_secret"))
    try:
        assert "encrypted with CurveZMQ" in caplog.text and "ANYONE" not in caplog.text
        local_viewer = ClientKeys.load(pub.curve.secret_file, pub.curve.secret_file)  # what deepz live --view uses
        address = pub.address.replace("0.0.0.0", "127.0.0.1")
        plain = Subscriber(address)
        secured = Subscriber(address, curve=local_viewer)
        assert _received(pub, [secured, plain]) == [True, False]
        secured.close()
        plain.close()
    finally:
        pub.close()
    with pytest.raises(CurveKeyError, match="holds no secret key"):
        ServerKeys.load(keys / "server.key")


def test_live_viewer_shows_a_curve_stream(keys: Path, qtbot) -> None:
    from display.app import open_live_window

    pub = Publisher("tcp://127.0.0.1:*", curve=ServerKeys.load(keys / "server.key_secret"))
    window, feed = open_live_window(pub.address, ClientKeys.load(keys / "server.key", keys / "client.key_secret"))
    qtbot.addWidget(window)
    try:
        qtbot.waitUntil(lambda: pub.publish(3, FRAME) or feed.shown > 0, timeout=10_000)
        assert window.state.t == 3 and feed.rejected == 0
    finally:
        feed.close()
        pub.close()
