"""Who made a scratch database or a half-written backup, and whether its maker is gone (issue 19).

A ``kill -9`` runs no clean-up, so what a killed rehearsal, drill or backup was writing stays: a
full-size scratch database, a ``.partial`` dump, a staging object. Each of them carries a tag in its
name saying who made it and when: ``<host>_<pid>_<yyyymmddhhmmss>`` (``-`` between the fields in
file and object names), where ``<host>`` is a short hash of the host name and its PID namespace
(two containers sharing a host name but not their PIDs are two hosts). The next run on the same
host can then tell a leftover of a dead process from one of a process still running:

- made on THIS host and its process is gone (``kill(pid, 0)`` fails, or the PID now belongs to a
  process started after the tag was made): removable at once;
- older than the age limit (24 h by default) whoever made it: removable;
- otherwise, and always when its process is alive on this host: kept.

Plain functions, no I/O but ``/proc`` and ``os.kill``: the scratch and backup code decide what to
list and remove, this module only says whose it is.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

DEFAULT_MAX_AGE_HOURS = 24.0  # longer than any rehearsal or backup runs (their Prefect tasks stop at 4 h)
_STAMP = "%Y%m%d%H%M%S"
_TAG_RE = r"(?P<host>[0-9a-f]{{8}}){sep}(?P<pid>\d{{1,10}}){sep}(?P<ts>\d{{14}})"


def host_tag() -> str:
    """8 hex digits naming this host and PID namespace (the PIDs a tag's PID is compared with)."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return hashlib.sha256(f"{socket.gethostname()}\0{namespace}".encode()).hexdigest()[:8]


def maker_tag(sep: str = "_", now: datetime | None = None) -> str:
    """``<host><sep><pid><sep><UTC yyyymmddhhmmss>`` of the calling process."""
    when = (now or datetime.now(UTC)).astimezone(UTC)
    return sep.join((host_tag(), str(os.getpid()), when.strftime(_STAMP)))


def random_suffix() -> str:
    """4 hex digits: two names made by one process in the same second still differ."""
    return secrets.token_hex(2)


@dataclass(frozen=True)
class Maker:
    """The host, process and UTC time a leftover's name records."""

    host: str
    pid: int
    created_at: datetime

    @property
    def here(self) -> bool:
        return self.host == host_tag()

    def describe(self) -> str:
        where = "this host" if self.here else f"host {self.host}"
        return f"process {self.pid} on {where}, {self.created_at:%Y-%m-%d %H:%M:%S} UTC"


def find_maker(name: str, sep: str = "_") -> Maker | None:
    """The maker tag inside ``name`` (the last one, if several), or None for a name without one."""
    pattern = re.compile(_TAG_RE.format(sep=re.escape(sep)))
    matches = list(pattern.finditer(name))
    if not matches:
        return None
    found = matches[-1]
    try:
        created = datetime.strptime(found.group("ts"), _STAMP).replace(tzinfo=UTC)
    except ValueError:
        return None
    return Maker(found.group("host"), int(found.group("pid")), created)


def process_alive(pid: int, made_at: datetime | None = None) -> bool:
    """Whether ``pid`` runs on this host and could be the process that made a tag at ``made_at``.

    A PID the kernel gave to a process started after the tag was made (PIDs are reused) is not its
    maker. Unknown (no permission to signal it) counts as alive: never remove what may be in use.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    if made_at is not None:
        started = _process_started(pid)
        # a minute of slack: tags are whole seconds, and the wall clock may have been stepped since
        if started is not None and started > made_at + timedelta(seconds=60):
            return False
    return True


def _process_started(pid: int) -> datetime | None:
    """When ``pid`` started (Linux ``/proc``), or None when that cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 (starttime, clock ticks after boot), counted after "pid (comm)"
        with open("/proc/uptime", encoding="ascii") as f:
            uptime = float(f.read().split()[0])
        boot = time.time() - uptime  # boot time on today's wall clock (btime is the clock of boot day)
        return datetime.fromtimestamp(boot + ticks / os.sysconf("SC_CLK_TCK"), UTC)
    except (OSError, ValueError, IndexError):
        return None


def removable(maker: Maker | None, made_at: datetime | None, *, max_age_hours: float = DEFAULT_MAX_AGE_HOURS,
              now: datetime | None = None) -> tuple[bool, str]:
    """(may it be removed, why): its process is gone, it is older than ``max_age_hours``, or why it stays.

    ``made_at`` is the leftover's own time (the tag's, else the file's or upload's) for the age rule.
    """
    now = now or datetime.now(UTC)
    when = maker.created_at if maker is not None else made_at
    age_hours = (now - when).total_seconds() / 3600 if when is not None else None
    if maker is not None and maker.here:
        if process_alive(maker.pid, maker.created_at):
            return False, f"its process {maker.pid} is still running"
        return True, f"of a process that is gone (pid {maker.pid} on this host)"
    if age_hours is not None and age_hours >= max_age_hours:
        return True, f"older than {max_age_hours:g} h ({age_hours:.0f} h old)"
    if age_hours is None:
        return False, "its name does not say who made it and its age is unknown"
    if maker is None:
        return False, f"younger than {max_age_hours:g} h and its name does not say who made it"
    return False, f"made on another host ({maker.host}) less than {max_age_hours:g} h ago"


def human_size(n: int | None) -> str:
    """1024-based sizes as the rest of the output prints them (16.5 MB)."""
    if n is None:
        return "size unknown"
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


@dataclass
class Removed:
    """One leftover that was removed: its name, size and why it could go."""

    name: str
    size: int | None
    reason: str


def summary(singular: str, plural: str, removed: list[Removed]) -> str | None:
    """One line: "removed 1 leftover scratch database (NAME, 16.5 MB) of a process that is gone";
    None when nothing was removed."""
    if not removed:
        return None
    if len(removed) == 1:
        r = removed[0]
        return f"removed 1 {singular} ({r.name}, {human_size(r.size)}) {r.reason}"
    total = sum(r.size or 0 for r in removed)
    items = "; ".join(f"{r.name} ({human_size(r.size)}, {r.reason})" for r in removed)
    return f"removed {len(removed)} {plural}, {human_size(total)} freed: {items}"
