"""golang-migrate's own expectations, run against migrator: URL options, file names, IPv6 hosts.

Each table row is (input, what golang-migrate v4.19 does, read from its source) and the test checks
that migrator does the same; the few deliberate differences are listed in docs/golang-migrate.md.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from conftest import write_migration
from migrator.config import TableName, go_parse_bool, prepare_url
from migrator.errors import ConfigError
from migrator.files import FILE_RE, load

REFUSED = "refused"

# Go's strconv.ParseBool (strconv/atob.go), which golang-migrate uses for every boolean x- option.
GO_PARSE_BOOL = [
    ("1", True), ("t", True), ("T", True), ("TRUE", True), ("true", True), ("True", True),
    ("0", False), ("f", False), ("F", False), ("FALSE", False), ("false", False), ("False", False),
    ("yes", REFUSED), ("no", REFUSED), ("on", REFUSED), ("tRuE", REFUSED), ("2", REFUSED),
    (" true", REFUSED), ("true ", REFUSED), ("y", REFUSED),
]


@pytest.mark.parametrize(("value", "golang_migrate"), GO_PARSE_BOOL)
def test_boolean_grammar_is_gos_parse_bool(value: str, golang_migrate: object) -> None:
    assert go_parse_bool(value) == (None if golang_migrate == REFUSED else golang_migrate)


@pytest.mark.parametrize("option", ["x-migrations-table-quoted", "x-multi-statement"])
@pytest.mark.parametrize(("value", "golang_migrate"), GO_PARSE_BOOL)
def test_every_boolean_option_accepts_and_refuses_what_golang_migrate_does(
        option: str, value: str, golang_migrate: object) -> None:
    table = "&x-migrations-table=%22migrate%22.%22schema_migrations%22" if option == "x-migrations-table-quoted" else ""
    url = f"postgresql://u@h/db?{option}={value.replace(' ', '%20')}{table}"
    if golang_migrate == REFUSED:
        with pytest.raises(ConfigError) as exc:
            prepare_url(url)
        assert option in str(exc.value) and "true or false" in str(exc.value)
    else:
        prepare_url(url)


# (query, golang-migrate's state table as (schema or None = CURRENT_SCHEMA(), table), or refused)
QUOTED_TABLE = [
    ('x-migrations-table="migrate"."schema_migrations"&x-migrations-table-quoted=t',
     ("migrate", "schema_migrations")),
    ('x-migrations-table="migrate"."schema_migrations"&x-migrations-table-quoted=1',
     ("migrate", "schema_migrations")),
    ('x-migrations-table="migrate"."schema_migrations"&x-migrations-table-quoted=True',
     ("migrate", "schema_migrations")),
    ('x-migrations-table="migrate"."schema_migrations"&x-migrations-table-quoted=f',
     (None, '"migrate"."schema_migrations"')),
    ('x-migrations-table="migrate"."schema_migrations"', (None, '"migrate"."schema_migrations"')),
    ('x-migrations-table="only_table"&x-migrations-table-quoted=true', (None, "only_table")),
    ('x-migrations-table="migrate"."schema_migrations"&x-migrations-table-quoted=yes', REFUSED),
    ("x-migrations-table=migrate.schema_migrations&x-migrations-table-quoted=1", REFUSED),
    ('x-migrations-table="migrate".schema_migrations&x-migrations-table-quoted=1', REFUSED),
    ("x-migrations-table=schema_migrations&x-migrations-table-quoted=true", REFUSED),
    ("x-migrations-table-quoted=true", REFUSED),  # golang-migrate panics (no quoted name to read)
    ('x-migrations-table="a"."b"."c"&x-migrations-table-quoted=true', REFUSED),  # "too many dot characters"
    ("x-migrations-table=plain_name&x-migrations-table-quoted=", (None, "plain_name")),  # empty = unset
    # url.Values.Get: the first of repeated keys
    ("x-migrations-table=first&x-migrations-table=second", (None, "first")),
    ("x-multi-statement-max-size=abc", REFUSED),
    ("x-multi-statement-max-size=1048576", (None, None)),
]


@pytest.mark.parametrize(("query", "golang_migrate"), QUOTED_TABLE)
def test_state_table_from_url_options_as_golang_migrate(query: str, golang_migrate: object) -> None:
    url = "postgresql://u@h/db?" + query.replace('"', "%22")
    if golang_migrate == REFUSED:
        with pytest.raises(ConfigError) as exc:
            prepare_url(url)
        assert "x-" in str(exc.value) and "golang-migrate" in str(exc.value)
        return
    schema, table = golang_migrate  # type: ignore[misc]
    got = prepare_url(url).table
    assert got == (TableName(table=table, schema=schema) if table else None)


def test_quoted_t_uses_the_table_golang_migrate_uses(cli, db_url: str, migrations_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """The issue's case: quoted=t was read as false, so a new table "migrate"."schema_migrations"
    appeared in public and every migration ran again."""
    write_migration(migrations_dir, 1, "create_notes", "CREATE TABLE notes (id int);", "DROP TABLE notes;")
    with psycopg.connect(db_url, autocommit=True) as conn:  # what golang-migrate left: version 1 applied
        conn.execute("CREATE SCHEMA migrate; CREATE TABLE notes (id int)")
        conn.execute('CREATE TABLE "migrate"."schema_migrations" (version bigint not null primary key, '
                     "dirty boolean not null)")
        conn.execute('INSERT INTO "migrate"."schema_migrations" VALUES (1, false)')
    url = db_url + "?x-migrations-table=%22migrate%22.%22schema_migrations%22&x-migrations-table-quoted=t"
    r = cli("up", "--path", str(migrations_dir), "--database-url", url)
    assert r.code == 0 and "no change" in r.err, r.err
    with psycopg.connect(db_url) as conn:
        tables = conn.execute("SELECT schemaname, tablename FROM pg_tables WHERE tablename LIKE "
                              "'%schema_migrations%' AND schemaname <> 'migrate'").fetchall()
    assert tables == []


@pytest.mark.parametrize("query", [
    "x-migrations-table-quoted=yes&x-migrations-table=%22migrate%22.%22schema_migrations%22",
    "x-migrations-table-quoted=1&x-migrations-table=migrate.schema_migrations",
    "x-multi-statement=on",
])
def test_refused_options_are_one_line_exit_2(cli, db_url: str, migrations_dir: Path, query: str) -> None:  # type: ignore[no-untyped-def]
    r = cli("status", "--path", str(migrations_dir), "--database-url", f"{db_url}?{query}")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and r.err.startswith("error: "), r.err


# Where migrator deliberately does not do what golang-migrate does: (case, input, golang-migrate's outcome,
# ours, the phrase of docs/golang-migrate.md that says why). The tests run ours; the docs must give the why.
GO_DIFFERENCES = [
    ("quoted without a table", "x-migrations-table-quoted=true", "panics (nil quoted name)", REFUSED,
     "quoted true without\n  `x-migrations-table` is refused"),
    ("doubled quote", 'x-migrations-table="a""b"&x-migrations-table-quoted=true', 'schema "a", table "b"',
     (None, 'a"b'), 'with a doubled quote (`"a""b"`) is one identifier'),
    ("negative timeout", "x-statement-timeout=-5", "accepted (every statement then fails)", REFUSED,
     "`x-statement-timeout` must be 0..2147483647"),
    ("signed timeout", "x-statement-timeout=+5", "accepted as 5", REFUSED, "`x-statement-timeout` must be 0..2147483647"),
    ("unmatched .sql name", "file:1-foobar.up.sql", "skipped silently", "error (bad-name)",
     "a `.sql` file that does not match is an error"),
    ("other extension", "file:1_foobar.up.txt", "a migration", "error (bad-extension)", "only `.sql`\n  is accepted"),
    ("no down file", "file:1_foobar.up.sql", "a migration", "error (missing down)", "a missing down file is an error"),
]


@pytest.mark.parametrize(("case", "given", "golang_migrate", "ours", "why"), GO_DIFFERENCES,
                         ids=[d[0] for d in GO_DIFFERENCES])
def test_differences_from_golang_migrate_are_ours_and_documented(
        tmp_path: Path, case: str, given: str, golang_migrate: str, ours: object, why: str) -> None:
    docs = (Path(__file__).resolve().parent.parent / "docs" / "golang-migrate.md").read_text()
    assert why in docs, f"docs/golang-migrate.md does not say why: {case}"
    if given.startswith("file:"):
        d = tmp_path / "m"
        d.mkdir()
        (d / given.removeprefix("file:")).write_text("CREATE TABLE x (id int);")
        codes = {(p.severity, p.code) for p in load(d).problems}
        expected = {"error (bad-name)": "bad-name", "error (bad-extension)": "bad-extension",
                    "error (missing down)": "missing-down"}[str(ours)]
        assert ("error", expected) in codes, codes
        return
    url = "postgresql://u@h/db?" + given.replace('"', "%22").replace("+", "%2B")
    if ours == REFUSED:
        with pytest.raises(ConfigError):
            prepare_url(url)
    else:
        schema, table = ours  # type: ignore[misc]
        assert prepare_url(url).table == TableName(table=table, schema=schema)


# golang-migrate's source/parse_test.go (TestParse, v4), plus the trailing newline:
# (file name, golang-migrate's (version, identifier, direction) or None for ErrParse)
GO_PARSE_TABLE = [
    ("1_foobar.up.sql", (1, "foobar", "up")),
    ("1_foobar.down.sql", (1, "foobar", "down")),
    ("1_f-o_ob+ar.up.sql", (1, "f-o_ob+ar", "up")),
    ("1485385885_foobar.up.sql", (1485385885, "foobar", "up")),
    ("20170412214116_date_foobar.up.sql", (20170412214116, "date_foobar", "up")),
    ("-1_foobar.up.sql", None),
    ("foobar.up.sql", None),
    ("1.up.sql", None),
    ("1_foobar.sql", None),
    ("1_foobar.up", None),
    ("1_foobar.down", None),
    ("1_foobar.up.sql\n", None),  # Go's $ is the end of the text; Python's also matches before a final \n
    ("1_foo\nbar.up.sql", None),  # . never matches a newline in either
    ("001_foobar.up.sql", (1, "foobar", "up")),  # leading zeros: ParseUint
]


@pytest.mark.parametrize(("name", "golang_migrate"), GO_PARSE_TABLE)
def test_file_name_grammar_is_golang_migrates(name: str, golang_migrate: tuple[int, str, str] | None) -> None:
    m = FILE_RE.match(name)
    ours = (int(m.group(1)), m.group(2), m.group(3)) if m else None
    assert ours == golang_migrate


def test_a_file_name_ending_in_a_newline_is_not_a_migration(tmp_path: Path) -> None:
    d = tmp_path / "m"
    d.mkdir()
    (d / "1_foobar.up.sql\n").write_text("CREATE TABLE x (id int);")
    mset = load(d)
    assert mset.migrations == []
    (problem,) = mset.problems
    assert problem.severity == "warning" and "\n" not in problem.file and "newline" in problem.message


# IPv6 hosts, in brackets as every URL writes them
IPV6 = [
    ("postgresql://u@[::1]:5432/db", "::1", "5432"),
    ("postgres://u:pw@[::1]/db", "::1", None),
    ("postgresql://u@[2001:db8::7]:6543/db?sslmode=disable", "2001:db8::7", "6543"),
    ("pgx://u@[::1]:5432/db?x-migrations-table=sm", "::1", "5432"),
]


@pytest.mark.parametrize(("url", "host", "port"), IPV6)
def test_ipv6_hosts_reach_libpq_intact(url: str, host: str, port: str | None) -> None:
    params = conninfo_to_dict(prepare_url(url).conninfo)
    assert params["host"] == host and params.get("port") == port and params["dbname"] == "db"


@pytest.mark.parametrize(("url", "well_formed"), [
    ("postgresql://postgres@[::1]:1/db", True),  # nothing listens there: cannot connect, one line
    ("postgresql://u@[::1:5432/db", False),  # unclosed bracket
    ("postgresql://u@::1:5432/db", False),  # no brackets
    ("postgresql://u@[::1]x/db", False),
])
def test_ipv6_urls_never_an_internal_error(cli, migrations_dir: Path, url: str, well_formed: bool) -> None:  # type: ignore[no-untyped-def]
    for args in (["status"], ["backups", "list"], ["up"]):
        r = cli(*args, "--path", str(migrations_dir), "--database-url", url, env={"BACKUP_URL": "file://./b"})
        if well_formed and args == ["backups", "list"]:  # lists the store; needs no connection
            assert r.code == 0 and "no backups found" in r.err, r.err
            continue
        assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and "internal error" not in r.err, r.err
        assert ("cannot connect" if well_formed else "IPv6") in r.err, r.err
