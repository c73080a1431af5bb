"""Reading the header of a ``pg_dump --format=custom`` archive: which PostgreSQL it was dumped from.

The header (``PGDMP``, format version, integer size, compression, creation time, database name,
server version, pg_dump version) is a few hundred bytes at the start of the file, written by
``WriteHead`` and read by ``ReadHead`` in PostgreSQL's ``pg_backup_archiver.c``; reading it needs no
pg_restore of the right version, so a restore can say what is wrong before it touches the target.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class ArchiveHeader:
    """What a custom-format archive says about itself."""

    format_version: tuple[int, int, int]
    database: str | None
    server_version: str | None  # e.g. "18.1" (None in archives older than format 1.10)
    pg_dump_version: str | None

    @property
    def server_major(self) -> int | None:
        return major_of(self.server_version)


def major_of(version: str | None) -> int | None:
    """18 for "18.1" or "18beta2", 9 for "9.6.3"; None when it is not a version."""
    m = re.match(r"\s*(\d+)", version or "")
    return int(m.group(1)) if m else None


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.int_size = 4

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise ValueError("archive header is truncated")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def int(self) -> int:
        sign = self.byte()
        value = 0
        for shift in range(self.int_size):
            value |= self.byte() << (8 * shift)
        return -value if sign else value

    def str(self) -> str | None:
        length = self.int()
        if length < 0:
            return None
        if self.pos + length > len(self.data):
            raise ValueError("archive header is truncated")
        text = self.data[self.pos : self.pos + length].decode("utf-8", "replace")
        self.pos += length
        return text


def read_header(data: bytes) -> ArchiveHeader | None:
    """The header of a custom-format archive from its first bytes (4 KiB is plenty); None when ``data``
    is not one (another format, or too short)."""
    if not data.startswith(b"PGDMP"):
        return None
    r = _Reader(data)
    r.pos = 5
    try:
        vmaj, vmin = r.byte(), r.byte()
        vrev = r.byte() if (vmaj, vmin) > (1, 0) else 0
        version = (vmaj, vmin, vrev)
        if version < (1, 4, 0):
            return ArchiveHeader(version, None, None, None)
        r.int_size = r.byte()
        if version >= (1, 7, 0):
            r.byte()  # offset size
        r.byte()  # format (custom, tar, directory)
        if version >= (1, 15, 0):
            r.byte()  # compression algorithm
        else:
            r.int()  # compression level
        for _ in range(7):  # creation time: sec, min, hour, mday, mon, year, isdst
            r.int()
        database = r.str()
        if version < (1, 10, 0):
            return ArchiveHeader(version, database, None, None)
        return ArchiveHeader(version, database, r.str(), r.str())
    except ValueError:
        return None
