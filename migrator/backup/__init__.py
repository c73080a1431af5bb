"""Backups: ``pg_dump --format=custom`` streamed into S3 (multipart, encrypted) or a folder, verified,
restorable and pruned by a retention policy.

Only stdlib modules are imported here; boto3 is imported by the S3 store when it is first used, so
that registering the CLI commands costs nothing.
"""

from __future__ import annotations

from migrator.backup.core import (
    BackupInfo,
    BackupResult,
    PruneResult,
    RestoreResult,
    VerifyResult,
    create_backup,
    list_backups,
    prune_backups,
    restore_backup,
    verify_backup,
)
from migrator.backup.errors import BackupError, BackupIntegrityError, StorageError

__all__ = [
    "BackupError",
    "BackupInfo",
    "BackupIntegrityError",
    "BackupResult",
    "PruneResult",
    "RestoreResult",
    "StorageError",
    "VerifyResult",
    "create_backup",
    "list_backups",
    "prune_backups",
    "restore_backup",
    "verify_backup",
]
