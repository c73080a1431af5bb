"""Backups: ``pg_dump --format=custom`` streamed into S3 (multipart, encrypted) or a folder, verified,
restorable and pruned by a retention policy.

One concern a module: ``create`` (dump and upload), ``verify``, ``restore``, ``catalog`` (listing,
completeness, ``latest``), ``retention`` (prune, leftovers of interrupted uploads), ``keys`` (key
layout), ``stores`` (S3 and folder), ``pgtools`` (choosing and running pg_dump/pg_restore),
``archive`` (reading a dump's header). Import the API from here.

Only stdlib modules are imported by this package's modules at import time; boto3 is imported by the
S3 store when it is first used, so that registering the CLI commands costs nothing.
"""

from __future__ import annotations

from migrator.backup.catalog import BackupInfo, list_backups
from migrator.backup.create import BackupResult, create_backup, create_verified_backup
from migrator.backup.errors import BackupError, BackupIntegrityError, StorageError
from migrator.backup.keys import make_key, parse_key
from migrator.backup.restore import RestoreResult, restore_backup
from migrator.backup.retention import DEFAULT_ORPHAN_GRACE_HOURS, PruneResult, find_leftovers, prune_backups
from migrator.backup.stores import Leftover
from migrator.backup.verify import VerifyResult, verify_backup

__all__ = [
    "DEFAULT_ORPHAN_GRACE_HOURS",
    "BackupError",
    "BackupInfo",
    "BackupIntegrityError",
    "BackupResult",
    "Leftover",
    "PruneResult",
    "RestoreResult",
    "StorageError",
    "VerifyResult",
    "create_backup",
    "create_verified_backup",
    "find_leftovers",
    "list_backups",
    "make_key",
    "parse_key",
    "prune_backups",
    "restore_backup",
    "verify_backup",
]
