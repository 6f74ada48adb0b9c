"""CurveZMQ for the live stream: encryption and client authentication when it leaves the machine.

`deepz keys --out DIR` makes a server and a client certificate pair (zmq.auth's files: ``NAME.key`` holds the
public key, ``NAME.key_secret`` both keys). The publisher uses the server's secret file and lets in only
clients whose public ``*.key`` file lies in its clients folder (by default the folder of its own key); a
viewer needs the server's public key and a client's secret file. A subscriber without them never completes
the handshake and receives nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

SERVER = "server"
CLIENT = "client"


class CurveKeyError(ValueError):
    """A CurveZMQ key file is missing, unreadable or lacks the secret key it should hold."""


def create_keys(out: Path, *, overwrite: bool = False) -> dict[str, Path]:
    """Write a server and a client certificate pair into ``out``; secret files are readable by the owner only.

    Returns the four paths by name (server.key, server.key_secret, client.key, client.key_secret).
    """
    names = [f"{who}{suffix}" for who in (SERVER, CLIENT) for suffix in (".key", ".key_secret")]
    existing = [name for name in names if (out / name).exists()]
    if existing and not overwrite:
        raise CurveKeyError(f"{out} already holds {', '.join(existing)}; pass --overwrite to replace them")
    out.mkdir(parents=True, exist_ok=True)
    previous = os.umask(0o077)  # secret files are never readable by others, not even for a moment
    try:
        for who in (SERVER, CLIENT):
            public, _secret = zmq.auth.create_certificates(out, who)
            os.chmod(public, 0o644)
    finally:
        os.umask(previous)
    return {name: out / name for name in names}


def _load(path: Path) -> tuple[bytes, bytes | None]:
    """(public, secret or None) keys of a certificate file."""
    try:
        return zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise CurveKeyError(f"cannot read the CurveZMQ key {path}: {exc}") from None


def _key_pair(path: Path) -> tuple[bytes, bytes]:
    """(public, secret) keys of a ``.key_secret`` file."""
    public, secret = _load(path)
    if not secret:
        raise CurveKeyError(f"{path} holds no secret key; give the .key_secret file made by `deepz keys`")
    return public, secret


@dataclass(frozen=True)
class ServerKeys:
    """The publisher's key pair and the public keys of the clients it lets in."""

    public: bytes
    secret: bytes
    clients: frozenset[bytes]
    secret_file: Path

    @classmethod
    def load(cls, secret_file: Path, clients_dir: Path | None = None) -> ServerKeys:
        """From the server's ``.key_secret`` file and a folder of client ``*.key`` files (default: its own
        folder); the server's own key is always let in, so a viewer on this machine can use its file."""
        public, secret = _key_pair(secret_file)
        folder = clients_dir or secret_file.parent
        try:
            clients = set(zmq.auth.load_certificates(folder))
        except OSError as exc:
            raise CurveKeyError(f"cannot read the CurveZMQ client keys in {folder}: {exc}") from None
        return cls(public, secret, frozenset(clients | {public}), secret_file)

    def secure(self, socket: zmq.Socket[bytes]) -> ThreadAuthenticator:
        """Make ``socket`` (not yet bound) a CURVE server and start the authenticator that checks clients."""
        authenticator = ThreadAuthenticator(socket.context)
        authenticator.start()
        authenticator.configure_curve_callback("*", credentials_provider=self)
        socket.curve_secretkey = self.secret
        socket.curve_publickey = self.public
        socket.curve_server = True
        return authenticator

    def callback(self, _domain: str, client_key: bytes) -> bool:
        """ZAP: let a client in when its public key is one of ``clients``."""
        return client_key in self.clients


@dataclass(frozen=True)
class ClientKeys:
    """What a subscriber needs: the server's public key and its own key pair."""

    server_public: bytes
    public: bytes
    secret: bytes

    @classmethod
    def load(cls, server_key: Path, client_key: Path) -> ClientKeys:
        """From the server's ``.key`` (or ``.key_secret``) file and the client's ``.key_secret`` file."""
        server_public, _ = _load(server_key)
        public, secret = _key_pair(client_key)
        return cls(server_public, public, secret)

    def secure(self, socket: zmq.Socket[bytes]) -> None:
        """Make ``socket`` (not yet connected) a CURVE client of the server."""
        socket.curve_serverkey = self.server_public
        socket.curve_publickey = self.public
        socket.curve_secretkey = self.secret
