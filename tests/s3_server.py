"""A real S3 protocol server for tests: moto's ThreadedMotoServer on 127.0.0.1 and a free port.

``stop()`` behaves like a crashed server: the listening socket is closed (new connections are
refused) and open keep-alive connections are cut, so a client in the middle of an upload fails
instead of finishing over its existing connection. ``start()`` again on the same port brings the
same (in-process) data back, so a test can check what was left behind.

Usage (the Prefect flow tests reuse it)::

    with S3Server() as s3:             # or ``yield from serve(monkeypatch)`` in a fixture
        s3.env(monkeypatch)            # AWS_* variables pointing boto3 at it
        s3.create_bucket("backups")
"""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server


class _TrackingHandler(MotoRequestHandler):
    """Remembers open connections so that stop() can cut them."""

    connections: set[socket.socket]
    lock: threading.Lock

    def setup(self) -> None:
        super().setup()
        with self.lock:
            self.connections.add(self.connection)

    def finish(self) -> None:
        with self.lock:
            self.connections.discard(self.connection)
        super().finish()


class _Server(ThreadedMotoServer):
    def __init__(self, port: int) -> None:
        super().__init__(ip_address="127.0.0.1", port=port, verbose=False)
        self.connections: set[socket.socket] = set()
        self.lock = threading.Lock()

    def _server_entry(self) -> None:
        handler = type("Handler", (_TrackingHandler,), {"connections": self.connections, "lock": self.lock})
        app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server(self._ip_address, self._port, app, True, request_handler=handler)
        self._server_ready_event.set()
        self._server.serve_forever(poll_interval=0.05)

    def crash(self) -> None:
        """Stop serving, close the listening socket and cut every open connection."""
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()
        with self.lock:
            conns = list(self.connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=10)


class S3Server:
    """moto's S3 on 127.0.0.1; ``endpoint`` is its URL, ``client()`` a boto3 client pointed at it."""

    def __init__(self) -> None:
        self.port = 0
        self._server: _Server | None = None

    def start(self) -> S3Server:
        self._server = _Server(self.port)
        self._server.start()
        self.port = self._server.get_host_and_port()[1]
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.crash()
            self._server = None

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
        """Point boto3 (through its own environment settings) at this server, with dummy credentials."""
        values = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": "/nonexistent/aws-config",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
        }
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_SECURITY_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        return values

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing-secret",
        )

    def create_bucket(self, name: str | None = None) -> str:
        name = name or f"bk-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


def serve(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """Body of an ``s3`` fixture: a running server, boto3's environment pointed at it, stopped after.

    In a test module::

        @pytest.fixture
        def s3(monkeypatch):
            yield from serve(monkeypatch)
    """
    server = S3Server().start()
    server.env(monkeypatch)
    try:
        yield server
    finally:
        server.stop()
