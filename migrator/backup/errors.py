"""Backup error types; each message is one redacted line that says why and what to do."""

from __future__ import annotations

from migrator.errors import MigratorError


class BackupError(MigratorError):
    """pg_dump / pg_restore failed, or a backup cannot be made or restored as asked."""


class StorageError(BackupError):
    """The destination (S3 bucket or folder) refused or could not be reached."""


class BackupIntegrityError(BackupError):
    """A stored backup does not match its recorded sha256/size, or pg_restore cannot read it."""
