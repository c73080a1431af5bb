"""Error types whose message is a single line a person can act on.

Every error raised to the CLI is a MigratorError: the CLI prints ``error: <message>`` and exits
with ``exit_code``; no traceback reaches the user. Messages must already be redacted.
"""

from __future__ import annotations

from typing import ClassVar


class MigratorError(Exception):
    """A failure the user can act on; ``str(err)`` is the whole one-line explanation."""

    exit_code = 1


class ConfigError(MigratorError):
    """A setting (option, environment variable, URL) is missing or malformed."""

    exit_code = 2


class MigrationFileError(MigratorError):
    """The migrations folder has a file problem (bad name, duplicate, missing pair, unreadable...)."""


class DirtyDatabaseError(MigratorError):
    """The database is marked dirty; golang-migrate's wording is kept so runbooks still match."""

    def __reduce__(self) -> tuple[object, ...]:
        return (DirtyDatabaseError, (self.version, self.detail))

    def __init__(self, version: int, detail: str = "") -> None:
        self.version = version
        self.detail = detail
        msg = (
            f"Dirty database version {version}. Fix and force version: `migrator status` shows what ran and the "
            f"ways out (`migrator recover`, or fix it by hand, then `migrator force V --expect {version}` with the "
            "last version that fully applied)"
        )
        super().__init__(msg + (f" ({detail})" if detail else ""))


class ForceRefusedError(MigratorError):
    """``force`` with an expected current version refused: the database records another one."""


class ApprovalRejected(MigratorError):
    """An engineer rejected the plan in the approval form: nothing was applied. Alerted as
    ``approval.rejected``, never as a failure page. ``approver`` and ``comment`` say who and why."""

    def __init__(self, message: str, approver: str | None = None, comment: str = "") -> None:
        super().__init__(message)
        self.approver = approver
        self.comment = comment

    def __reduce__(self) -> tuple[object, ...]:
        return (ApprovalRejected, (str(self), self.approver, self.comment))


class LockTimeoutError(MigratorError):
    """Another migrator or golang-migrate process holds the migration lock for too long."""


class MigrationFailedError(MigratorError):
    """A migration's SQL failed; carries where it failed so alerts and flows can report it."""

    def __init__(
        self,
        message: str,
        *,
        version: int,
        name: str,
        direction: str,
        file: str,
        line: int | None,
        column: int | None,
        statement: str | None,
        pg_message: str,
        dirty: bool,
        state_version: int,
    ) -> None:
        super().__init__(message)
        self.version = version
        self.name = name
        self.direction = direction
        self.file = file
        self.line = line
        self.column = column
        self.statement = statement
        self.pg_message = pg_message
        self.dirty = dirty
        self.state_version = state_version

    def __reduce__(self) -> tuple[object, ...]:
        """Picklable (Prefect may serialise a task's exception): rebuild from to_dict()."""
        return (_rebuild_failure, (self.to_dict(),))

    def with_message(self, message: str) -> MigrationFailedError:
        """The same failure (same class, same facts) told with another message."""
        return _rebuild_failure({**self.to_dict(), "error": message})

    def to_dict(self) -> dict[str, object]:
        return {
            "error": str(self),
            "version": self.version,
            "name": self.name,
            "direction": self.direction,
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "statement": self.statement,
            "pg_message": self.pg_message,
            "dirty": self.dirty,
            "state_version": self.state_version,
        }


class MigrationCancelledError(MigrationFailedError):
    """SIGTERM or SIGINT (a Prefect Cancel, a Ctrl-C) stopped a migration: its statement was cancelled
    on the server and rolled back (transactional file) or left the database dirty (non-transactional).

    The CLI exits 128 + the signal number: 143 for SIGTERM, 130 for SIGINT.
    """

    EXIT_CODES: ClassVar[dict[str, int]] = {"SIGTERM": 143, "SIGINT": 130}

    def __init__(self, message: str, *, signal_name: str, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.signal_name = signal_name
        self.exit_code = self.EXIT_CODES.get(signal_name, 143)

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "cancelled": True, "signal_name": self.signal_name}


def migration_failure(exc: BaseException | None) -> MigrationFailedError | None:
    """The MigrationFailedError behind ``exc``: itself, or the cause a host's cancel exception carries
    (the engine re-raises Prefect's TerminationSignal ``from`` its MigrationCancelledError)."""
    while exc is not None:
        if isinstance(exc, MigrationFailedError):
            return exc
        exc = exc.__cause__
    return None


def _rebuild_failure(d: dict[str, object]) -> MigrationFailedError:
    kwargs = {k: v for k, v in d.items() if k not in ("error", "cancelled")}
    if d.get("cancelled"):
        return MigrationCancelledError(str(d["error"]), **kwargs)  # type: ignore[arg-type]
    kwargs.pop("signal_name", None)
    return MigrationFailedError(str(d["error"]), **kwargs)  # type: ignore[arg-type]
