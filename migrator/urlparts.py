"""Split a connection URL the way a person meant it, even when its password is not percent-encoded.

``urllib.parse`` cuts ``postgres://u:S3cr#t@host/db`` at the ``#`` and libpq cuts
``postgres://u:p@ss@host/db`` at the first ``@``; either way part of the password ends up in the
host or port and then in an error message. Here the user information runs to the LAST ``@``
before the path (so ``#``, ``?`` and ``@`` in a password work, as golang-migrate accepts ``@`` and
psql accepts ``#`` and ``?``). What cannot be told apart from a host or path (a ``/`` in the
password, a port that is not a number, a ``#`` after the host) raises ``UrlError`` and the caller
treats the whole URL as secret. Only the standard library: ``redact`` uses it at start-up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.DOTALL)


class UrlError(ValueError):
    """The URL cannot be split unambiguously; the message never contains any part of it."""


@dataclass(frozen=True)
class UrlParts:
    """``scheme://[user[:password]@]hosts[/path][?query]``; user and password percent-decoded."""

    scheme: str
    user: str | None
    password: str | None
    hosts: str
    path: str
    query: str


def has_scheme(url: str) -> bool:
    return bool(_SCHEME_RE.match(url.strip()))


def split_url(url: str) -> UrlParts:
    """Split ``url``; raise UrlError (naming only the kind of problem) when it is ambiguous."""
    m = _SCHEME_RE.match(url.strip())
    if not m:
        raise UrlError("it is not of the form scheme://...")
    scheme, rest = m.group(1), m.group(2)
    head = rest.split("/", 1)[0]
    at = head.rfind("@")
    user = password = None
    if at >= 0:
        userinfo, rest = head[:at], rest[at + 1 :]
        raw_user, colon, raw_password = userinfo.partition(":")
        user = unquote(raw_user)
        password = unquote(raw_password) if colon else None
    hosts_end = len(rest)
    for ch in "/?#":
        i = rest.find(ch)
        if i >= 0:
            hosts_end = min(hosts_end, i)
    hosts, tail = rest[:hosts_end], rest[hosts_end:]
    if "#" in tail:
        raise UrlError("it has a '#' after the host; write a '#' in a password or value as %23")
    path, _, query = tail.partition("?")
    if "@" in path:
        raise UrlError("an '@' follows a '/' (a '/' in the user or password must be written %2F)")
    for field in filter(None, query.split("&")):
        if "=" not in field:
            raise UrlError("a query parameter has no '=' (a '?' or '&' in the password must be written %3F / %26)")
    for host in hosts.split(","):
        _check_ipv6(host)
        port = host.rsplit("]", 1)[-1].rpartition(":")[2] if ":" in host.rsplit("]", 1)[-1] else ""
        if port and not port.isdigit():
            raise UrlError(
                "a port is not a number (if that was user:password, it must be followed by @host; "
                "a '/' in a password must be written %2F)"
            )
    return UrlParts(scheme, user, password, hosts, path, query)


def _check_ipv6(host: str) -> None:
    """An IPv6 address needs brackets (``[::1]:5432``), as in every URL; anything else is ambiguous."""
    if "[" in host or "]" in host:
        if not re.fullmatch(r"\[[0-9A-Fa-f:.]+(%[^\]]+)?\](:[0-9]*)?", host):
            raise UrlError("an IPv6 host must be one bracketed address with an optional port, e.g. [::1]:5432")
    elif host.count(":") > 1:
        raise UrlError(
            "a host has more than one ':' (an IPv6 host is written in brackets, e.g. postgresql://user@[::1]:5432/db; "
            "a user:password must be followed by @host)"
        )


def password_candidates(url: str) -> set[str]:
    """Every string that could be the password of ``url`` however it is (mis)parsed, for redaction.

    The user information may end at the first ``@`` (libpq), the last ``@`` before the first ``/``
    (this module) or the last ``@`` anywhere (a ``/`` in the password); each reading's password is
    included with its percent-decoded form and its beginnings up to each ``# ? / @`` (what a
    parser that cut the URL there would take as the password, or echo as a port).
    """
    m = _SCHEME_RE.match(url.strip())
    if not m:
        return set()
    rest = m.group(2)
    head = rest.split("/", 1)[0]
    ends = {rest.find("@"), head.rfind("@"), rest.rfind("@")}
    found: set[str] = set()
    for end in ends:
        if end < 0:
            continue
        _, colon, pw = rest[:end].partition(":")
        if not colon or not pw:
            continue
        for value in (pw, unquote(pw)):
            found.add(value)
            found.update(value[:i] for i, ch in enumerate(value) if ch in "#?/@" and i)
    return found
