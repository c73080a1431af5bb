"""Where backups go: an S3-compatible bucket (boto3) or a local folder, behind one small interface.

S3: the dump is streamed as a multipart upload, part by part (memory is bounded by a few parts); a
dump smaller than one part is a single PUT with its final metadata. Object metadata must be given
when an upload starts, but the sha256 and size are known only at the end, so the multipart upload
goes to a staging key (``<key>.incoming-<host>-<pid>-<time>-<rand>.partial``, never listed as a
backup; the tag says which process wrote it, see ``migrator.leftover``); once complete and
its size checked, it is copied server-side to the backup's key with the final metadata (sha256,
size) and the staging object is deleted. The backup's key therefore only ever holds a complete,
checksummed object: a kill at any point leaves at most a staging object or an unfinished multipart
upload, which ``backups prune`` removes after a grace period (see ``Store.leftovers``). Any failure
we see aborts the upload or deletes what was written.
Endpoint, region and credentials come only from boto3's own configuration (AWS_ENDPOINT_URL_S3,
AWS_DEFAULT_REGION, AWS_PROFILE, environment credentials, instance roles).

file://: the same key layout under a folder, written to ``.incoming-<host>-<pid>-<time>-<rand>.dump.partial``
at the folder's root, then its JSON metadata sidecar (``<key>.json``, sha256 included) is written and the
dump renamed to its key (atomic). A kill leaves a ``.partial`` file (or, between the two renames, a
sidecar without its dump): leftovers, removed by the next backup when their process is gone, and by
``backups prune``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from botocore.config import Config

from migrator import __version__
from migrator.backup.errors import BackupError, StorageError
from migrator.errors import ConfigError
from migrator.leftover import Maker, find_maker, maker_tag, random_suffix
from migrator.redact import redact

log = logging.getLogger(__name__)

MiB = 1024 * 1024
S3_MIN_PART = 5 * MiB
S3_MAX_PARTS = 10_000
DEFAULT_PART_SIZE = 8 * MiB
READ_CHUNK = 1 * MiB
_SIZE_RE = re.compile(r"^\s*(\d+)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib)?\s*$", re.IGNORECASE)


def parse_size(value: str, setting: str) -> int:
    """``8MiB``, ``16m``, ``5242880`` -> bytes (binary units)."""
    m = _SIZE_RE.match(value)
    if not m:
        raise ConfigError(f"{setting}={value!r} is not a size; use e.g. 8MiB or 16MiB")
    unit = (m.group(2) or "b").lower()[:1]
    return int(m.group(1)) * {"b": 1, "k": 1024, "m": MiB, "g": 1024 * MiB}[unit]


def part_size_from_env() -> int:
    """Part size of S3 uploads (env BACKUP_PART_SIZE, default 8 MiB, at least S3's 5 MiB)."""
    raw = os.environ.get("BACKUP_PART_SIZE")
    if not raw:
        return DEFAULT_PART_SIZE
    size = parse_size(raw, "BACKUP_PART_SIZE")
    if size < S3_MIN_PART:
        raise ConfigError(f"BACKUP_PART_SIZE={raw!r} is below S3's minimum part size of 5MiB; use 5MiB or more")
    if size > 512 * MiB:
        raise ConfigError(f"BACKUP_PART_SIZE={raw!r} is above 512MiB; memory use grows with it, use 8MiB-64MiB")
    return size


@dataclass
class StoredObject:
    """One backup as listed by a store: key, size, time and (when read) its metadata."""

    key: str
    size: int
    last_modified: datetime | None
    metadata: dict[str, str] | None = None


@dataclass
class Leftover:
    """What an interrupted backup left that is not a backup: an unfinished multipart upload, a staging
    object, a ``.partial`` file or a sidecar without its dump. ``backups prune`` removes old ones."""

    kind: str
    key: str
    size: int | None
    started_at: datetime | None
    upload_id: str | None = None
    reason: str | None = None  # why it may be removed, or why it stays (set by retention)

    @property
    def maker(self) -> Maker | None:
        """Who wrote it, from the tag in its name (None for names from before issue 19)."""
        return find_maker(self.key.rsplit("/", 1)[-1], "-")

    def age_seconds(self, now: datetime | None = None) -> float | None:
        if self.started_at is None:
            return None
        started = self.started_at if self.started_at.tzinfo else self.started_at.replace(tzinfo=UTC)
        return ((now or datetime.now(UTC)) - started).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        age = self.age_seconds()
        maker = self.maker
        return {
            "kind": self.kind,
            "key": self.key,
            "size": self.size,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "age_seconds": round(age, 1) if age is not None else None,
            "maker": maker.describe() if maker else None,
            "reason": self.reason,
        }


def incoming_tag() -> str:
    """``incoming-<host>-<pid>-<UTC time>-<rand>``: the name part of a backup being written."""
    return f"incoming-{maker_tag('-')}-{random_suffix()}"


STAGING_SUFFIX = ".partial"

Describe = Callable[[], tuple[str, dict[str, str]]]


class Upload:
    """A backup being written; ``write`` parts in order, then ``complete`` or ``abort``.

    The key and metadata come from ``describe`` (called once, when first needed): the dump starts
    streaming while the schema version, which is part of the key, is still being read.
    """

    def __init__(self, describe: Describe) -> None:
        self._describe = describe
        self._described: tuple[str, dict[str, str]] | None = None

    def described(self) -> tuple[str, dict[str, str]]:
        if self._described is None:
            self._described = self._describe()
        return self._described

    @property
    def key(self) -> str:
        return self.described()[0]

    def write(self, part: bytes) -> None:
        raise NotImplementedError

    def complete(self, extra: dict[str, str], size: int) -> dict[str, Any]:
        """Make the backup visible with its metadata plus ``extra`` (sha256, size); returns details."""
        raise NotImplementedError

    def abort(self) -> str | None:
        """Remove everything written; returns a warning when that was not fully possible."""
        raise NotImplementedError


class Store:
    """A backup destination; keys are relative to the bucket (S3) or to the folder (file://)."""

    url: str
    prefix: str

    def preflight(self) -> None:
        """Fail fast (before pg_dump starts) when the destination is obviously unusable."""

    def start_upload(self, describe: Describe) -> Upload:
        raise NotImplementedError

    def list(self, prefix: str) -> Iterator[StoredObject]:
        raise NotImplementedError

    def head(self, key: str) -> StoredObject:
        raise NotImplementedError

    def read(self, key: str, chunk_size: int = READ_CHUNK) -> Iterator[bytes]:
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def leftovers(self, prefix: str) -> Iterator[Leftover]:
        """Remains of interrupted backups under ``prefix`` (for the folder store: also its root)."""
        raise NotImplementedError

    def remove(self, leftover: Leftover) -> None:
        """Delete a leftover (abort the multipart upload, delete the object or file)."""
        raise NotImplementedError

    def url_for(self, key: str) -> str:
        raise NotImplementedError

    def join(self, *parts: str) -> str:
        """A key under this store's prefix."""
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p and p.strip("/"))


def open_store(url: str) -> Store:
    """The store for a destination URL: ``s3://bucket/prefix`` or ``file:///dir`` (``file://./dir`` relative)."""
    url = url.strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    scheme = parts.scheme.lower() if parts else ""
    if parts and scheme == "s3":
        if not parts.netloc:
            raise ConfigError(f"BACKUP_URL / --to {redact(url)!r} has no bucket; use s3://bucket/prefix")
        if parts.username or parts.password:
            raise ConfigError(
                "BACKUP_URL / --to must not contain credentials; boto3 reads them from AWS_ACCESS_KEY_ID/"
                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the instance role"
            )
        return S3Store(parts.netloc, parts.path.strip("/"))
    if parts and scheme == "file":
        if parts.netloc in ("", "localhost"):
            path = Path(unquote(parts.path))
        else:  # file://./backups or file://backups: relative to the working directory
            path = Path(unquote(parts.netloc + parts.path))
        if not str(path):
            raise ConfigError(f"BACKUP_URL / --to {url!r} has no folder; use file:///var/backups or file://./backups")
        return FileStore(path)
    raise ConfigError(
        f"BACKUP_URL / --to {redact(url)!r} is not a backup destination; use s3://bucket/prefix or file:///dir"
    )


# --------------------------------------------------------------------------------------------- S3


def _meta_encode(metadata: dict[str, str]) -> dict[str, str]:
    # S3 user metadata travels in HTTP headers: ASCII only.
    return {k: quote(str(v), safe=" !#$&'()*+,-./:;=?@[]^_`{|}~") for k, v in metadata.items()}


def _meta_decode(metadata: dict[str, str]) -> dict[str, str]:
    return {k: unquote(v) for k, v in metadata.items()}


def sse_args() -> dict[str, str]:
    """Server-side encryption: AES256 by default, aws:kms with BACKUP_KMS_KEY_ID, none if BACKUP_SSE=none."""
    kms_key = os.environ.get("BACKUP_KMS_KEY_ID") or None
    mode = (os.environ.get("BACKUP_SSE") or ("aws:kms" if kms_key else "AES256")).strip()
    if mode.lower() == "none":
        log.warning("BACKUP_SSE=none: backups are stored without server-side encryption")
        return {}
    if mode == "AES256":
        return {"ServerSideEncryption": "AES256"}
    if mode == "aws:kms":
        args = {"ServerSideEncryption": "aws:kms"}
        if kms_key:
            args["SSEKMSKeyId"] = kms_key
        return args
    raise ConfigError(f"BACKUP_SSE={mode!r} is not supported; use AES256 (default), aws:kms or none")


def s3_error(exc: BaseException, action: str, bucket: str, key: str | None = None, endpoint: str = "") -> BackupError:
    """A one-line, secret-free explanation of a boto3/botocore failure."""
    # lazy: boto3/botocore cost ~0.3 s; only S3 stores need them (backup/__init__ imports this module)
    from botocore import exceptions as bx

    where = f"s3://{bucket}/{key}" if key else f"s3://{bucket}"
    at = f" at {endpoint}" if endpoint else ""
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return StorageError(
            f"no usable S3 credentials while {action}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "AWS_PROFILE, or run with an instance/task role"
        )
    if isinstance(
        exc,
        bx.EndpointConnectionError
        | bx.ConnectTimeoutError
        | bx.ReadTimeoutError
        | bx.ConnectionClosedError
        | bx.ProxyConnectionError,
    ):
        return StorageError(
            f"cannot reach the S3 endpoint{at} while {action} ({type(exc).__name__}); check AWS_ENDPOINT_URL_S3 / "
            "AWS_ENDPOINT_URL, AWS_DEFAULT_REGION and the network"
        )
    if isinstance(exc, bx.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = redact(str(err.get("Message", "")).strip())
        if code == "NoSuchBucket" or (status == 404 and action.startswith("checking bucket")):
            return StorageError(f"S3 bucket {bucket!r} does not exist{at}; create it or fix BACKUP_URL / --to")
        if code in ("NoSuchKey", "NotFound", "404") or status == 404:
            return StorageError(f"backup {where} not found; see `migrator backups list`")
        if code in (
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "ExpiredToken",
            "InvalidToken",
            "TokenRefreshRequired",
            "AuthorizationHeaderMalformed",
        ):
            return StorageError(
                f"S3 rejected the credentials while {action} ({code}); check AWS_ACCESS_KEY_ID/"
                "AWS_SECRET_ACCESS_KEY or AWS_PROFILE and the region (AWS_DEFAULT_REGION)"
            )
        if code.startswith("KMS") or "kms" in message.lower():
            return StorageError(
                f"S3 could not use the KMS key while {action} ({code}: {message}); check BACKUP_KMS_KEY_ID"
            )
        if code in ("AccessDenied", "Forbidden", "403") or status == 403:
            return StorageError(
                f"S3 denied access to {where} while {action} ({code or status}); the credentials lack the "
                "permission (s3:PutObject/GetObject/ListBucket/DeleteObject/AbortMultipartUpload)"
            )
        return StorageError(f"S3 error while {action} {where}: {code or status}: {message}")
    if isinstance(exc, bx.BotoCoreError):
        return StorageError(f"S3 error while {action} {where}: {redact(exc)}")
    return StorageError(f"S3 error while {action} {where}: {type(exc).__name__}: {redact(exc)}")


def _s3_client() -> Any:
    """A client configured only by boto3's own settings (endpoint, region, credentials chain)."""
    # lazy: boto3/botocore cost ~0.3 s; only S3 stores need them (backup/__init__ imports this module)
    import boto3

    config = Config(
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=10,
        read_timeout=120,
        user_agent_extra=f"askfrank-migrator/{__version__}",
    )
    return boto3.session.Session().client("s3", config=config)


class S3Upload(Upload):
    """Multipart upload fed one part at a time; the first part waits until we know it is not the only one."""

    def __init__(self, store: S3Store, describe: Describe) -> None:
        super().__init__(describe)
        self.store = store
        self.sse = sse_args()
        self.pending: bytes | None = None
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []
        self.staging: str | None = None  # the multipart upload's key until it is copied to the final key
        self.staged = False  # the staging object exists (multipart upload completed)
        self.completed = False  # the final key holds an object we wrote

    def _call(self, action: str, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except Exception as exc:
            raise self.store.error(exc, action, kwargs.get("Key")) from None

    def _send(self, data: bytes) -> None:
        c = self.store.client
        if self.upload_id is None:
            key, metadata = self.described()
            self.staging = f"{key}.{incoming_tag()}{STAGING_SUFFIX}"
            r = self._call(
                "starting the multipart upload",
                c.create_multipart_upload,
                Bucket=self.store.bucket,
                Key=self.staging,
                ContentType="application/octet-stream",
                Metadata=_meta_encode({**metadata, "final-key": key}),
                **self.sse,
            )
            self.upload_id = r["UploadId"]
        n = len(self.parts) + 1
        r = self._call(
            f"uploading part {n}",
            c.upload_part,
            Bucket=self.store.bucket,
            Key=self.staging,
            UploadId=self.upload_id,
            PartNumber=n,
            Body=data,
        )
        self.parts.append({"ETag": r["ETag"], "PartNumber": n})

    def write(self, part: bytes) -> None:
        # Only the first part is held back: if it is also the last, the dump is a single PUT.
        if self.upload_id is None and self.pending is None:
            self.pending = part
            return
        if self.pending is not None:
            self._send(self.pending)
            self.pending = None
        self._send(part)

    def complete(self, extra: dict[str, str], size: int) -> dict[str, Any]:
        meta = _meta_encode({**self.described()[1], **extra})
        if self.upload_id is None:  # smaller than one part: one PUT, final metadata included
            self._call(
                "uploading the backup",
                self.store.client.put_object,
                Bucket=self.store.bucket,
                Key=self.key,
                Body=self.pending or b"",
                ContentType="application/octet-stream",
                Metadata=meta,
                **self.sse,
            )
            self.completed = True
        else:
            self._finish_staging(size)
            self._publish(meta)
        self.pending = None
        self._check_size(self.key, size, extra.get("sha256"))
        if self.staging is not None:  # the backup is final: its staging copy is now only a leftover
            with contextlib.suppress(BackupError):
                self._call(
                    "deleting the staging object",
                    self.store.client.delete_object,
                    Bucket=self.store.bucket,
                    Key=self.staging,
                )
        return {"parts": max(1, len(self.parts)), "encryption": self.sse.get("ServerSideEncryption", "none")}

    def _finish_staging(self, size: int) -> None:
        """Send the last part, complete the multipart upload (staging key) and check its size."""
        assert self.staging is not None
        if self.pending is not None:
            self._send(self.pending)
        self.pending = None
        self._call(
            "completing the multipart upload",
            self.store.client.complete_multipart_upload,
            Bucket=self.store.bucket,
            Key=self.staging,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": self.parts},
        )
        self.staged = True
        self._check_size(self.staging, size)

    def _check_size(self, key: str, size: int, sha256: str | None = None) -> None:
        """The stored object has ``size`` bytes (and, for the final key, our sha256 in its metadata)."""
        head = self.store.head(key)
        if head.size != size:
            raise BackupError(
                f"the stored object s3://{self.store.bucket}/{key} has {head.size} bytes, pg_dump wrote {size}; "
                "the upload was corrupted and has been removed"
            )
        if sha256 is not None and (head.metadata or {}).get("sha256") != sha256:
            raise BackupError(
                f"the store did not keep the metadata of s3://{self.store.bucket}/{key} (no sha256 after the copy); "
                "the object has been removed: the store must support CopyObject with MetadataDirective=REPLACE"
            )

    def _publish(self, meta: dict[str, str]) -> None:
        """Copy the staging object (server-side) to the backup's key with the final metadata (sha256, size):
        the key appears only now, complete. Above 5 GiB boto3 copies in parts; the key still appears only
        when that copy completes (its metadata is given when it starts)."""
        # lazy: boto3/botocore cost ~0.3 s; only S3 stores need them (backup/__init__ imports this module)
        from boto3.s3.transfer import TransferConfig

        extra = {"Metadata": meta, "MetadataDirective": "REPLACE", "ContentType": "application/octet-stream"}
        extra.update(self.sse)
        config = TransferConfig(multipart_threshold=5 * 1024 * MiB, multipart_chunksize=512 * MiB, max_concurrency=4)
        self.completed = True  # from here on, a failure must also remove whatever reached the final key
        self._call(
            "recording the backup's sha256 in its metadata",
            self.store.client.copy,
            CopySource={"Bucket": self.store.bucket, "Key": self.staging},
            Bucket=self.store.bucket,
            Key=self.key,
            ExtraArgs=extra,
            Config=config,
        )

    def abort(self) -> str | None:
        self.pending = None
        if self.upload_id is None and not self.completed:
            return None  # nothing was sent
        c = self.store.client
        done: list[str] = []
        try:
            if self.completed:
                c.delete_object(Bucket=self.store.bucket, Key=self.key)
                log.info("deleted the incomplete backup s3://%s/%s", self.store.bucket, self.key)
            done.append("final")
            if self.staged:
                c.delete_object(Bucket=self.store.bucket, Key=self.staging)
            elif self.upload_id is not None:
                c.abort_multipart_upload(Bucket=self.store.bucket, Key=self.staging, UploadId=self.upload_id)
                log.info("aborted multipart upload %s of s3://%s/%s", self.upload_id, self.store.bucket, self.staging)
        except Exception as exc:
            if not done:
                msg = f"could not delete the incomplete object s3://{self.store.bucket}/{self.key}; delete it by hand"
            elif self.staged:
                msg = (
                    f"could not delete the staging object s3://{self.store.bucket}/{self.staging} "
                    f"({type(exc).__name__}); it is not a backup, `migrator backups prune` removes it"
                )
            else:
                msg = (
                    f"could not abort multipart upload {self.upload_id} ({type(exc).__name__}); no backup object "
                    "exists under that key, and `migrator backups prune` removes what was uploaded once it is "
                    "older than the grace period (as does a lifecycle rule AbortIncompleteMultipartUpload)"
                )
            log.warning("%s", msg)
            return msg
        return None


class S3Store(Store):
    """An S3-compatible bucket and key prefix."""

    def __init__(self, bucket: str, prefix: str) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.url = f"s3://{bucket}/{prefix}".rstrip("/")
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                self._client = _s3_client()
            except Exception as exc:
                raise s3_error(exc, "creating the S3 client", self.bucket) from None
        return self._client

    @property
    def endpoint(self) -> str:
        try:
            return str(self.client.meta.endpoint_url)
        except BackupError:
            return ""

    def error(self, exc: BaseException, action: str, key: str | None = None) -> BackupError:
        return s3_error(exc, action, self.bucket, key, self.endpoint)

    def preflight(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            # lazy: boto3/botocore cost ~0.3 s; only S3 stores need them (backup/__init__ imports this module)
            from botocore.exceptions import ClientError

            status = (
                exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") if isinstance(exc, ClientError) else None
            )
            if status == 403:  # a PutObject-only role may not be allowed HeadBucket: let the upload decide
                log.debug("HeadBucket denied on %s; continuing", self.bucket)
                return
            raise self.error(exc, "checking bucket") from None

    def start_upload(self, describe: Describe) -> Upload:
        return S3Upload(self, describe)

    def list(self, prefix: str) -> Iterator[StoredObject]:
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                for obj in page.get("Contents", []):
                    if obj["Key"].endswith(".dump"):
                        yield StoredObject(obj["Key"], int(obj["Size"]), obj.get("LastModified"))
        except BackupError:
            raise
        except Exception as exc:
            raise self.error(exc, "listing backups", prefix) from None

    def head(self, key: str) -> StoredObject:
        try:
            r = self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            raise self.error(exc, "reading the backup's metadata", key) from None
        meta = _meta_decode(r.get("Metadata", {}))
        if r.get("ServerSideEncryption"):
            meta.setdefault("encryption", str(r["ServerSideEncryption"]))
        return StoredObject(key, int(r["ContentLength"]), r.get("LastModified"), meta)

    def read(self, key: str, chunk_size: int = READ_CHUNK) -> Iterator[bytes]:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            with contextlib.closing(body):
                yield from body.iter_chunks(chunk_size)
        except BackupError:
            raise
        except Exception as exc:
            raise self.error(exc, "downloading the backup", key) from None

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            raise self.error(exc, "deleting the backup", key) from None

    def leftovers(self, prefix: str) -> Iterator[Leftover]:
        try:
            for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=prefix):
                for up in page.get("Uploads", []):
                    yield Leftover(
                        "unfinished multipart upload",
                        up["Key"],
                        self._parts_size(up),
                        up.get("Initiated"),
                        up["UploadId"],
                    )
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    if obj["Key"].endswith(STAGING_SUFFIX):
                        yield Leftover("staging object", obj["Key"], int(obj["Size"]), obj.get("LastModified"))
        except BackupError:
            raise
        except Exception as exc:
            raise self.error(exc, "listing unfinished uploads", prefix) from None

    def _parts_size(self, upload: dict[str, Any]) -> int | None:
        try:
            pages = self.client.get_paginator("list_parts").paginate(
                Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
            return sum(int(p["Size"]) for page in pages for p in page.get("Parts", []))
        except Exception:  # the size is only informative
            return None

    def remove(self, leftover: Leftover) -> None:
        try:
            if leftover.upload_id:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=leftover.key, UploadId=leftover.upload_id)
            else:
                self.client.delete_object(Bucket=self.bucket, Key=leftover.key)
        except Exception as exc:
            raise self.error(exc, f"removing the {leftover.kind}", leftover.key) from None

    def url_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


# ------------------------------------------------------------------------------------------- file


class FileUpload(Upload):
    """Parts go to a hidden ``*.partial`` file in the folder; ``complete`` writes the sidecar, then
    renames the dump to its key (atomic: a reader never sees half a backup)."""

    def __init__(self, store: FileStore, describe: Describe) -> None:
        super().__init__(describe)
        self.store = store
        self.partial = store.root / f".{incoming_tag()}.dump.partial"
        self.sidecar: Path | None = None
        self.path: Path | None = None
        try:
            store.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise StorageError(
                f"cannot write backups in {store.root}: {exc.strerror}; check BACKUP_URL / --to"
            ) from None
        self.file = os.fdopen(fd, "wb")

    def write(self, part: bytes) -> None:
        try:
            self.file.write(part)
        except OSError as exc:
            raise StorageError(f"cannot write {self.partial}: {exc.strerror}") from None

    def complete(self, extra: dict[str, str], size: int) -> dict[str, Any]:
        key, metadata = self.described()
        path = self.store.path_for(key)
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            actual = self.partial.stat().st_size
            if actual != size:
                raise BackupError(f"{self.partial} has {actual} bytes, pg_dump wrote {size}; the disk may be full")
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.sidecar = self.store.sidecar(path)
            tmp = self.sidecar.with_name(self.sidecar.name + ".partial")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({**metadata, **extra}, f, indent=2, sort_keys=True)
                f.write("\n")
            os.replace(tmp, self.sidecar)
            os.replace(self.partial, path)
            self.path = path
        except OSError as exc:
            raise StorageError(f"cannot finish the backup {path}: {exc.strerror}") from None
        return {"parts": 1, "encryption": "none"}

    def abort(self) -> str | None:
        with contextlib.suppress(OSError):
            self.file.close()
        leftovers = [self.partial]
        if self.sidecar is not None:
            leftovers += [self.sidecar, self.sidecar.with_name(self.sidecar.name + ".partial")]
        if self.path is not None:
            leftovers.append(self.path)
        for p in leftovers:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        return None


class FileStore(Store):
    """A local folder with the same key layout as S3 and a ``.json`` metadata sidecar per dump."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.prefix = ""
        self.url = f"file://{root.expanduser().resolve()}"

    def path_for(self, key: str) -> Path:
        if ".." in Path(key).parts or key.startswith("/"):
            raise ConfigError(f"backup key {key!r} must be relative to {self.url} and must not contain '..'")
        return self.root / key

    @staticmethod
    def sidecar(path: Path) -> Path:
        return path.with_name(path.name + ".json")

    def preflight(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise StorageError(f"backup folder {self.root} is a file; fix BACKUP_URL / --to")

    def start_upload(self, describe: Describe) -> Upload:
        return FileUpload(self, describe)

    def list(self, prefix: str) -> Iterator[StoredObject]:
        base = self.root / prefix if prefix else self.root
        if not base.is_dir():
            return
        for p in base.rglob("*.dump"):
            st = p.stat()
            key = p.relative_to(self.root).as_posix()
            yield StoredObject(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def head(self, key: str) -> StoredObject:
        path = self.path_for(key)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise StorageError(f"backup {self.url_for(key)} not found; see `migrator backups list`") from None
        meta: dict[str, str] | None = None
        sidecar = self.sidecar(path)
        if sidecar.exists():
            try:
                meta = {k: str(v) for k, v in json.loads(sidecar.read_text(encoding="utf-8")).items()}
            except (OSError, ValueError) as exc:
                raise BackupError(f"metadata sidecar {sidecar} is unreadable ({exc}); cannot check it") from None
        return StoredObject(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC), meta)

    def read(self, key: str, chunk_size: int = READ_CHUNK) -> Iterator[bytes]:
        path = self.path_for(key)
        try:
            with open(path, "rb") as f:
                while chunk := f.read(chunk_size):
                    yield chunk
        except FileNotFoundError:
            raise StorageError(f"backup {self.url_for(key)} not found; see `migrator backups list`") from None

    def delete(self, key: str) -> None:
        path = self.path_for(key)
        for p in (path, self.sidecar(path)):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    def leftovers(self, prefix: str) -> Iterator[Leftover]:
        base = self.root / prefix if prefix else self.root
        found: set[Path] = set()
        if self.root.is_dir():
            found.update(self.root.glob(".incoming-*.partial"))  # in-flight dumps live at the root
        if base.is_dir():
            found.update(base.rglob("*.partial"))
            found.update(p for p in base.rglob("*.dump.json") if not p.with_name(p.name[: -len(".json")]).exists())
        for p in sorted(found):
            try:
                st = p.stat()
            except FileNotFoundError:
                continue  # finished (renamed) meanwhile
            kind = "metadata without its dump" if p.name.endswith(".dump.json") else "partial file"
            yield Leftover(
                kind, p.relative_to(self.root).as_posix(), st.st_size, datetime.fromtimestamp(st.st_mtime, UTC)
            )

    def remove(self, leftover: Leftover) -> None:
        try:
            self.path_for(leftover.key).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StorageError(f"cannot remove {self.url_for(leftover.key)}: {exc.strerror}") from None

    def url_for(self, key: str) -> str:
        return f"{self.url}/{key}"
