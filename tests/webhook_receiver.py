"""A real HTTP webhook receiver for tests: stdlib http.server in a thread on 127.0.0.1, a free port.

It records every request and answers from a script, so tests can make it fail, throttle or stall::

    with WebhookReceiver() as rx:
        rx.script([(500,), (500,), (200,)])           # (status, headers, body, delay) - tail optional
        send_event(Settings(webhook_url=rx.url), ...)
        assert [r.status for r in rx.requests] == [500, 500, 200]

When the script is used up, every request gets ``default`` (200 unless told otherwise).
Hostile receivers: ``Response(500, trickle=2.0, body=...)`` sends the head, then one body byte every
2 s (``trickle_head=True`` trickles the status line and headers too); ``Response(500, stream_bytes=N)``
streams N bytes of body as fast as the client takes them (no Content-Length); ``rx.body_bytes_sent``
counts what each answer's body put on the wire.
``closed_port_url()`` gives a URL on which nothing listens (connection refused).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Response:
    """One scripted answer; ``delay`` seconds pass before the status line is sent."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | str = b""
    delay: float = 0.0
    trickle: float = 0.0  # seconds between single bytes of the body (and of the head with trickle_head)
    trickle_head: bool = False
    stream_bytes: int = 0  # an "endless" body of this many bytes, sent as fast as the client reads


ResponseSpec = Response | int | tuple[Any, ...]


def _as_response(spec: ResponseSpec) -> Response:
    if isinstance(spec, Response):
        return spec
    if isinstance(spec, int):
        return Response(spec)
    status, *rest = spec
    headers = rest[0] if len(rest) > 0 and rest[0] is not None else {}
    body = rest[1] if len(rest) > 1 and rest[1] is not None else b""
    delay = float(rest[2]) if len(rest) > 2 and rest[2] is not None else 0.0
    return Response(int(status), dict(headers), body, delay)


@dataclass
class RecordedRequest:
    """A request as received: raw body bytes exactly as signed; header lookup is case-insensitive."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    time: float
    status: int  # the status the receiver answered (or was about to answer)

    def header(self, name: str, default: str | None = None) -> str | None:
        lower = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lower:
                return value
        return default

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


class WebhookReceiver:
    """Start with ``with WebhookReceiver() as rx`` (or ``start()``/``stop()``); ``rx.url`` to post to."""

    def __init__(self, *, path: str = "/hook", default: ResponseSpec = 200) -> None:
        self.path = path
        self.default = _as_response(default)
        self._script: deque[Response] = deque()
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.body_bytes_sent: list[int] = []  # per hostile answer (trickle / stream_bytes), in order

    # lifecycle -------------------------------------------------------------------------------------
    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                response = receiver._next()
                with receiver._arrived:
                    receiver._requests.append(
                        RecordedRequest(
                            method=self.command,
                            path=self.path,
                            headers=dict(self.headers.items()),
                            body=body,
                            time=time.monotonic(),
                            status=response.status,
                        )
                    )
                    receiver._arrived.notify_all()
                if response.delay and receiver._stopping.wait(response.delay):
                    return
                if response.trickle or response.stream_bytes:
                    receiver._hostile(self.wfile, response)
                    self.close_connection = True
                    return
                payload = response.body.encode() if isinstance(response.body, str) else response.body
                try:
                    self.send_response(response.status)
                    for key, value in response.headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client gave up (timeout) before we answered

            do_POST = do_GET = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                return

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                return

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="webhook-receiver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _hostile(self, out: Any, response: Response) -> None:
        """Answer a byte at a time, or with an endless body; count the body bytes that got out."""
        payload = response.body.encode() if isinstance(response.body, str) else response.body
        head = f"HTTP/1.1 {response.status} Scripted\r\nConnection: close\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in response.headers.items())
        if not response.stream_bytes:
            head += f"Content-Length: {len(payload)}\r\n"
        head += "\r\n"
        sent = 0
        index = len(self.body_bytes_sent)
        self.body_bytes_sent.append(0)
        try:
            if response.trickle_head:
                for i in range(len(head)):
                    out.write(head[i].encode("latin-1"))
                    out.flush()
                    if self._stopping.wait(response.trickle):
                        return
            else:
                out.write(head.encode("latin-1"))
                out.flush()
            if response.stream_bytes:
                chunk = b"x" * 65536
                while sent < response.stream_bytes and not self._stopping.is_set():
                    out.write(chunk[: response.stream_bytes - sent])
                    out.flush()
                    sent += min(len(chunk), response.stream_bytes - sent)
                    self.body_bytes_sent[index] = sent
                return
            for i in range(len(payload)):
                out.write(payload[i : i + 1])
                out.flush()
                sent += 1
                self.body_bytes_sent[index] = sent
                if self._stopping.wait(response.trickle):
                    return
        except OSError:
            return  # the client hung up: what it did not take was never sent

    # scripting and inspection ----------------------------------------------------------------------
    @property
    def port(self) -> int:
        assert self._server is not None, "receiver not started"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def script(self, responses: Iterable[ResponseSpec]) -> None:
        """Queue answers, used in order; ``(status,)``, ``(status, headers)``, ..., an int or a Response."""
        with self._lock:
            self._script.extend(_as_response(r) for r in responses)

    def _next(self) -> Response:
        with self._lock:
            return self._script.popleft() if self._script else self.default

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()
            self._script.clear()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[RecordedRequest]:
        """Block until ``count`` requests arrived (for senders running in another thread or process)."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self._requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"webhook receiver got {len(self._requests)} request(s), expected {count}")
                self._arrived.wait(left)
            return list(self._requests)


def closed_port_url(path: str = "/hook") -> str:
    """An http://127.0.0.1 URL on a port where nothing listens: connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"
