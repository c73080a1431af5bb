"""A small read-only libpq client over ctypes, for ``migrator status`` (issue 23: status in <= 0.3 s).

``import psycopg`` costs ~0.2 s of CPU on our machines (asyncio, ssl, importlib.metadata, ~250
exception classes, the type adapters) while status needs one connection and two SELECTs. This
module loads the very libpq psycopg-binary ships (its ``psycopg_binary.libs`` folder, or the
machine's ``libpq.so.5``) through ctypes, in ~10 ms, so connection behaviour (URLs, sockets, SSL,
``.pgpass``, ``PG*`` variables, error texts) is libpq's own, as with psycopg. It only runs queries
with text parameters and text results, converting the few types status reads. Anything else
(and any failure to load libpq) is the caller's cue to use psycopg.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Sequence
from typing import Any

_OK_STATUSES = (1, 2)  # PGRES_COMMAND_OK, PGRES_TUPLES_OK
_CONNECTION_OK = 0
_INT_OIDS = (20, 21, 23, 26)  # int8, int2, int4, oid
_BOOL_OID = 16
_lib: Any = None


class Unavailable(Exception):
    """libpq could not be loaded, or a conninfo libpq cannot parse: use psycopg."""


class ConnectError(Exception):
    """The server could not be reached or refused the connection; the message is libpq's."""


class QueryError(Exception):
    """A query failed; ``sqlstate`` is the server's error code."""

    def __init__(self, message: str, sqlstate: str | None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def _candidates() -> list[str]:
    """psycopg-binary's own libpq first (what psycopg would use), then the machine's."""
    found: list[str] = []
    for entry in sys.path:  # where psycopg_binary is installed (importlib.util costs more than this)
        libs = os.path.join(entry or ".", "psycopg_binary.libs")
        if os.path.isdir(libs):
            found.extend(sorted(os.path.join(libs, n) for n in os.listdir(libs) if n.startswith("libpq")))
            break
    found.append("libpq.so.5")
    return found


def _load() -> Any:
    global _lib
    if _lib is not None:
        return _lib
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        vp, cp, ci = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
        sigs: dict[str, tuple[Any, list[Any]]] = {
            "PQconnectdbParams": (vp, [ctypes.POINTER(cp), ctypes.POINTER(cp), ci]),
            "PQconninfoParse": (vp, [cp, ctypes.POINTER(ctypes.c_void_p)]),
            "PQconninfoFree": (None, [vp]),
            "PQfreemem": (None, [vp]),
            "PQstatus": (ci, [vp]),
            "PQerrorMessage": (cp, [vp]),
            "PQfinish": (None, [vp]),
            "PQserverVersion": (ci, [vp]),
            "PQexecParams": (vp, [vp, cp, ci, vp, ctypes.POINTER(cp), vp, vp, ci]),
            "PQresultStatus": (ci, [vp]),
            "PQresultErrorMessage": (cp, [vp]),
            "PQresultErrorField": (cp, [vp, ci]),
            "PQntuples": (ci, [vp]),
            "PQnfields": (ci, [vp]),
            "PQftype": (ctypes.c_uint, [vp, ci]),
            "PQgetvalue": (ctypes.c_void_p, [vp, ci, ci]),
            "PQgetlength": (ci, [vp, ci, ci]),
            "PQgetisnull": (ci, [vp, ci, ci]),
            "PQclear": (None, [vp]),
        }
        try:
            for name, (restype, argtypes) in sigs.items():
                fn = getattr(lib, name)
                fn.restype, fn.argtypes = restype, argtypes
        except AttributeError:
            continue
        _lib = lib
        return lib
    raise Unavailable("libpq not found")


def _text(value: bytes | None) -> str:
    return (value or b"").decode("utf-8", "replace").strip()


class Connection:
    """One libpq connection (autocommit: each query is its own transaction)."""

    def __init__(self, conninfo: str, **options: str) -> None:
        lib = _load()
        err = ctypes.c_void_p()
        parsed = lib.PQconninfoParse(conninfo.encode(), ctypes.byref(err))
        if not parsed:  # psycopg reports these its own way: let it
            if err.value:
                lib.PQfreemem(err)
            raise Unavailable("conninfo not parsable by libpq")
        lib.PQconninfoFree(parsed)
        keys = ["dbname", *options]
        values = [conninfo, *options.values()]
        ckeys = (ctypes.c_char_p * (len(keys) + 1))(*[k.encode() for k in keys], None)
        cvalues = (ctypes.c_char_p * (len(values) + 1))(*[v.encode() for v in values], None)
        self._lib = lib
        self._conn = lib.PQconnectdbParams(ckeys, cvalues, 1)
        if not self._conn:
            raise ConnectError("out of memory")
        if lib.PQstatus(self._conn) != _CONNECTION_OK:
            message = _text(lib.PQerrorMessage(self._conn))
            self.close()
            raise ConnectError(message)

    @property
    def server_version(self) -> int:
        return int(self._lib.PQserverVersion(self._conn))

    def query(self, sql: str, params: Sequence[str | None] = ()) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` (placeholders ``$1``...); int and bool columns converted, the rest text."""
        lib = self._lib
        cparams = (ctypes.c_char_p * max(len(params), 1))(*[None if p is None else p.encode() for p in params])
        res = lib.PQexecParams(self._conn, sql.encode(), len(params), None, cparams, None, None, 0)
        if not res:
            raise QueryError(_text(lib.PQerrorMessage(self._conn)), None)
        try:
            if lib.PQresultStatus(res) not in _OK_STATUSES:
                state = lib.PQresultErrorField(res, ord("C"))
                primary = lib.PQresultErrorField(res, ord("M")) or lib.PQresultErrorMessage(res)
                raise QueryError(_text(primary), state.decode() if state else None)
            nfields = lib.PQnfields(res)
            types = [lib.PQftype(res, j) for j in range(nfields)]
            rows = []
            for i in range(lib.PQntuples(res)):
                row: list[Any] = []
                for j in range(nfields):
                    if lib.PQgetisnull(res, i, j):
                        row.append(None)
                        continue
                    raw = ctypes.string_at(lib.PQgetvalue(res, i, j), lib.PQgetlength(res, i, j)).decode("utf-8")
                    row.append(int(raw) if types[j] in _INT_OIDS else (raw == "t") if types[j] == _BOOL_OID else raw)
                rows.append(tuple(row))
            return rows
        finally:
            lib.PQclear(res)

    def close(self) -> None:
        if self._conn:
            self._lib.PQfinish(self._conn)
            self._conn = None

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
