"""Remove credentials from anything that may be printed, logged, alerted or stored.

A password can reach output through a connection URL (``postgres://u:secret@h/db``), a libpq
key/value string (``password=secret``) or an error message that echoes either. ``redact`` knows the
secrets registered at start-up (the password of the configured URL, webhook secrets...) and also
masks any URL userinfo or ``password=`` pair it sees, so unknown secrets in the same shapes are
hidden too.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote

from migrator.urlparts import UrlError, has_scheme, password_candidates, split_url

MASK = "****"

_secrets: set[str] = set()

# scheme://user:password@host  -> scheme://user:****@host
# (the password may hold '#', '?', '/' or '@': everything up to the last '@' of the word is masked)
_URL_USERINFO = re.compile(
    r"(?P<prefix>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^\s\"'<>\\]*)(?P<at>@)"
)
# password=secret / password = 'se cret' (libpq conninfo) and PGPASSWORD=...
_KV_PASSWORD = re.compile(
    r"(?P<key>\b(?:password|passwd|pgpassword|secret|token|api[_-]?key)\s*[=:]\s*)(?P<val>'(?:[^'\\]|\\.)*'|\S+)",
    re.IGNORECASE,
)
_KV_WORDS = ("passw", "pgpassword", "secret", "token", "api")  # what _KV_PASSWORD cannot match without


def register_secret(secret: str | None) -> None:
    """Remember a secret value so that every later ``redact`` call masks it wherever it appears."""
    if secret and len(secret) >= 3:
        _secrets.add(secret)


def register_url(url: str | None) -> None:
    """Register every credential a connection URL or libpq key/value string may carry.

    The password is taken however the URL may be read (see ``urlparts.password_candidates``),
    raw and percent-decoded, plus any ``password=`` / ``sslpassword=`` value. A URL that cannot be
    split unambiguously is wholly secret: the whole string is registered.
    """
    if not url:
        return

    if has_scheme(url):
        for candidate in password_candidates(url):
            register_secret(candidate)
        try:
            split_url(url)
        except UrlError:
            register_secret(url.strip())
            register_secret(url.strip().split("://", 1)[1])
    elif not re.match(r"\s*[A-Za-z_]+\s*=", url):
        register_secret(url.strip())  # neither a URL nor key=value settings: all of it is secret
    for m in re.finditer(r"password\s*=\s*('(?:[^'\\]|\\.)*'|[^&\s]+)", url, re.IGNORECASE):
        value = m.group(1)
        register_secret(value.strip("'"))
        register_secret(unquote(value))


def redact(text: object) -> str:
    """Return ``text`` as a string with every known or recognisable credential replaced by ****."""
    s = str(text)
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in s:
            s = s.replace(secret, MASK)
    # each pattern only when its necessary text is there: a long report (validate's 2,000 lines) would
    # otherwise spend most of its output time in these two scans
    if "://" in s:
        s = _URL_USERINFO.sub(lambda m: m.group("prefix") + (MASK if m.group("pw") else "") + m.group("at"), s)
    low = s.lower()
    if any(word in low for word in _KV_WORDS):
        s = _KV_PASSWORD.sub(lambda m: m.group("key") + MASK, s)
    return s


def redact_url(url: str) -> str:
    """A connection URL safe to display: the password, if any, replaced by ****."""
    return redact(url)


class RedactingFilter(logging.Filter):
    """Logging filter that redacts the fully formatted message of every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a broken format string must not break logging
            msg = str(record.msg)
        record.msg = redact(msg)
        record.args = None
        return True


def install_logging_redaction(logger: logging.Logger | None = None) -> None:
    """Attach the redacting filter to ``logger`` (root by default) and to its handlers."""
    target = logger or logging.getLogger()
    flt = RedactingFilter()
    target.addFilter(flt)
    for handler in target.handlers:
        handler.addFilter(flt)
