"""Stopping means stopping: SIGTERM/SIGINT cancel the statement the engine is running.

Raising from a signal handler in the middle of psycopg's wait would abandon the connection while
the server carries on (a batch already sent runs to its COMMIT: issue 10.2 saw a migration commit
3.5 s after the process was "stopped"). So the handler only asks the server to cancel the running
statement (libpq's cancel request, on its own connection) and records the signal; the engine then
rolls back, writes its audit row and raises ``MigrationCancelledError`` from its own code.

Cooperation with a host that owns the signal: Prefect's flow engine installs its own SIGTERM handler
(raising ``TerminationSignal``), and its runner only acknowledges a Cancel from the UI, and so
marks the run Cancelled rather than Crashed, while that exact handler is installed. So a handler
that is not Python's default is left in place; its exception then lands inside the engine's
statement, and the engine cancels that statement on the server itself, drains the connection,
rolls back, audits, and re-raises the host's exception with the MigrationCancelledError as its
cause (see ``engine._Attempt``). The CLI has Python's defaults: the handlers here replace them and
the error maps to exit 143/130.

Signal handlers can only be installed from the main thread. Elsewhere the scope still registers
the connection (``cancel_all`` reaches it) and logs that a signal cannot reach it; the server-side
``client_connection_check_interval`` set by the engine then aborts the statement when the process dies.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any, Protocol

log = logging.getLogger(__name__)

SIGNALS: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)


class Cancellable(Protocol):
    def cancel_safe(self, *, timeout: float = ...) -> None: ...


class CancelScope:
    """The signal received (if any) while one engine run was active."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._targets: list[Cancellable] = []
        self._lock = threading.Lock()
        self.previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def add(self, target: Cancellable) -> None:
        with self._lock:
            self._targets.append(target)

    def remove(self, target: Cancellable) -> None:
        with self._lock:
            if target in self._targets:
                self._targets.remove(target)

    def request(self, signum: int) -> None:
        """Record the signal and ask the server to cancel whatever each connection is running."""
        first = self.signum is None
        self.signum = self.signum or signum
        if not first:  # one cancel: a second one could hit the rollback or the audit row
            return
        with self._lock:
            targets = list(self._targets)
        for target in targets:
            try:
                target.cancel_safe(timeout=5.0)
            except Exception as exc:  # connection already gone: nothing left to cancel
                log.debug("cancel request failed: %s", exc)
        log.info("%s received: cancelling the running migration statement", signal.Signals(signum).name)

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            # A second Ctrl-C while cleaning up: the user means it.
            raise KeyboardInterrupt
        self.request(signum)


_active: list[CancelScope] = []
_active_lock = threading.Lock()


@contextlib.contextmanager
def cancel_scope() -> Iterator[CancelScope]:
    """Install the cancelling handlers (main thread only) for the duration of one engine run."""
    scope = CancelScope()
    installed = False
    if threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            current = signal.getsignal(sig)
            if current in (signal.SIG_DFL, signal.default_int_handler):  # a host's own handler stays
                scope.previous[sig] = signal.signal(sig, scope._handler)
        installed = True
    else:
        log.debug("not on the main thread: SIGTERM/SIGINT handlers cannot be installed here")
    with _active_lock:
        _active.append(scope)
    try:
        yield scope
    finally:
        with _active_lock:
            _active.remove(scope)
        if installed:
            for sig, prev in scope.previous.items():
                signal.signal(sig, prev if prev is not None else signal.SIG_DFL)


def cancel_all(signum: int = int(signal.SIGTERM)) -> None:
    """Cancel every running engine scope in this process (for hosts that get the signal themselves,
    e.g. a handler on the main thread while the engine runs in a worker thread)."""
    with _active_lock:
        scopes = list(_active)
    for scope in scopes:
        scope.request(signum)


def signal_name_of(exc: BaseException) -> str:
    """The signal behind an exception a host's handler raised (Prefect's TerminationSignal has .signal)."""
    signum = getattr(exc, "signal", None)
    if isinstance(signum, int):
        with contextlib.suppress(ValueError):
            return signal.Signals(signum).name
    return "SIGINT" if isinstance(exc, KeyboardInterrupt) else "SIGTERM"
