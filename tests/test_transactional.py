"""non_transactional_reason / split_statements / line_col: the scanner-based helpers the engine uses."""

from __future__ import annotations

import pytest

from migrator.sql import Statement, classify, line_col, non_transactional_reason, split_statements

SEED_BEGIN_COMMIT = """BEGIN;

-- Multiple related changes
ALTER TABLE tbl_user ADD COLUMN phone VARCHAR(20);
CREATE INDEX idx_user_phone ON tbl_user(phone);
UPDATE tbl_user SET phone = '' WHERE phone IS NULL;
ALTER TABLE tbl_user ALTER COLUMN phone SET NOT NULL;

COMMIT;
"""

DO_BLOCK = """CREATE TABLE t (a int);
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'reader') THEN
        CREATE ROLE reader;
    END IF;
    COMMIT;
END
$$;
"""

PLPGSQL_FUNCTION = """CREATE OR REPLACE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
    NEW.updated_at := now(); -- a ; inside
    RETURN NEW;
END;
$body$;
"""

ATOMIC_FUNCTION = """CREATE FUNCTION add(a int, b int) RETURNS int LANGUAGE sql
BEGIN ATOMIC
    SELECT CASE WHEN a IS NULL THEN 0 ELSE a END + b;
END;
SELECT 1;
"""


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TABLE t (a int); CREATE INDEX i ON t (a);",
        DO_BLOCK,
        PLPGSQL_FUNCTION,
        ATOMIC_FUNCTION,
        "INSERT INTO notes (body) VALUES ('BEGIN; VACUUM; COMMIT;');",
        "INSERT INTO notes (body) VALUES ($$BEGIN;$$), ($x$ CREATE INDEX CONCURRENTLY i ON t(a) $x$);",
        "/* outer /* BEGIN; */ VACUUM; */ SELECT 1;",
        "-- BEGIN;\n-- VACUUM;\nSELECT 1;",
        'CREATE TABLE "BEGIN" ("VACUUM" int);',
        "SELECT E'it''s \\' BEGIN;';",
        "CREATE INDEX IF NOT EXISTS concurrently ON t (a);",  # an index NAMED concurrently
        "REINDEX TABLE t;",
        "ANALYZE t;",
        "SAVEPOINT s; RELEASE SAVEPOINT s;",
        "",
        "-- only a comment",
    ],
)
def test_transactional_sql_is_not_flagged(sql: str) -> None:
    assert non_transactional_reason(sql) is None


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (SEED_BEGIN_COMMIT, "explicit transaction control (BEGIN at line 1)"),
        ("SELECT 1;\n\n  begin transaction;\nSELECT 2;\nCOMMIT;", "explicit transaction control (BEGIN at line 3)"),
        ("START TRANSACTION; SELECT 1; END;", "explicit transaction control (START TRANSACTION at line 1)"),
        ("SELECT 1;\nCOMMIT;", "explicit transaction control (COMMIT at line 2)"),
        ("SELECT 1;\nROLLBACK;", "explicit transaction control (ROLLBACK at line 2)"),
        (
            "-- comment\nCREATE INDEX CONCURRENTLY idx ON t (a);",
            "CREATE INDEX CONCURRENTLY at line 2 cannot run inside a transaction block",
        ),
        (
            "SELECT 1;\n\n\n\n\n\ncreate unique index concurrently if not exists idx on t (a);",
            "CREATE INDEX CONCURRENTLY at line 7 cannot run inside a transaction block",
        ),
        ("DROP INDEX CONCURRENTLY IF EXISTS idx;", "DROP INDEX CONCURRENTLY at line 1 cannot run"),
        ("REINDEX INDEX CONCURRENTLY idx;", "REINDEX CONCURRENTLY at line 1"),
        ("REINDEX (VERBOSE) DATABASE app;", "REINDEX DATABASE at line 1"),
        ("VACUUM (ANALYZE) t;", "VACUUM at line 1"),
        ("CREATE DATABASE x;", "CREATE DATABASE at line 1"),
        ("DROP DATABASE IF EXISTS x;", "DROP DATABASE at line 1"),
        ("ALTER SYSTEM SET work_mem = '64MB';", "ALTER SYSTEM at line 1"),
        ("CREATE TABLESPACE fast LOCATION '/ssd';", "CREATE TABLESPACE at line 1"),
        ("DROP TABLESPACE fast;", "DROP TABLESPACE at line 1"),
        ("ALTER DATABASE app SET TABLESPACE fast;", "ALTER DATABASE ... SET TABLESPACE at line 1"),
        ("ALTER TABLE m DETACH PARTITION m_2020 CONCURRENTLY;", "DETACH PARTITION ... CONCURRENTLY at line 1"),
        # the tricky neighbours come first and must not count
        (DO_BLOCK + "VACUUM t;", "VACUUM at line 10"),
        (ATOMIC_FUNCTION + "CREATE INDEX CONCURRENTLY i ON t (a);", "CREATE INDEX CONCURRENTLY at line 6"),
        ("/* /* nested */ still comment */\nVACUUM;", "VACUUM at line 2"),
        ("SELECT 'BEGIN;';\r\nSELECT 1;\r\nVACUUM;", "VACUUM at line 3"),
    ],
)
def test_non_transactional_reason(sql: str, expected: str) -> None:
    reason = non_transactional_reason(sql)
    assert reason is not None and reason.startswith(expected), reason


def test_first_reason_wins_and_classify_lists_all() -> None:
    sql = "VACUUM;\nBEGIN;\nCREATE INDEX CONCURRENTLY i ON t (a);\nCOMMIT;"
    assert non_transactional_reason(sql) == "VACUUM at line 1 cannot run inside a transaction block"
    assert [(h.keyword, h.line) for h in classify(sql)] == [
        ("VACUUM", 1),
        ("BEGIN", 2),
        ("CREATE INDEX CONCURRENTLY", 3),
        ("COMMIT", 4),
    ]


def test_unscannable_sql_returns_none() -> None:
    assert non_transactional_reason("VACUUM; SELECT 'unterminated") is None


def test_split_dollar_quotes_comments_and_atomic_bodies() -> None:
    sql = PLPGSQL_FUNCTION + "/* a; /* b; */ c; */\n" + ATOMIC_FUNCTION + "INSERT INTO t VALUES ('x;y');"
    parts = split_statements(sql)
    texts = [p.text for p in parts]
    assert len(texts) == 4
    assert texts[0].startswith("CREATE OR REPLACE FUNCTION touch()") and texts[0].endswith("$body$")
    assert texts[1].startswith("CREATE FUNCTION add") and texts[1].endswith("END")
    assert texts[2] == "SELECT 1"
    assert texts[3] == "INSERT INTO t VALUES ('x;y')"
    for p in parts:
        assert sql[p.start : p.end] == p.text


def test_split_seed_begin_commit() -> None:
    texts = [s.text for s in split_statements(SEED_BEGIN_COMMIT)]
    assert texts[0] == "BEGIN"
    assert texts[-1] == "COMMIT"
    assert len(texts) == 6


def test_split_falls_back_when_sql_does_not_parse() -> None:
    sql = "CREATE TABLE a (x int);\nfoo bar baz;\nSELECT '$$;';\nCREATE TABEL b();"
    texts = [s.text for s in split_statements(sql)]
    assert texts == ["CREATE TABLE a (x int)", "foo bar baz", "SELECT '$$;'", "CREATE TABEL b()"]


def test_split_unscannable_is_one_statement() -> None:
    assert split_statements("  SELECT 'open; \n") == [Statement(2, 15, "SELECT 'open;", 1)]
    assert split_statements("   \n") == []


def test_split_non_ascii_offsets_are_characters() -> None:
    sql = "INSERT INTO t VALUES ('é€');\nSELECT 2;"
    parts = split_statements(sql)
    assert [sql[p.start : p.end] for p in parts] == ["INSERT INTO t VALUES ('é€')", "SELECT 2"]


@pytest.mark.parametrize(
    ("sql", "pos", "expected"),
    [
        ("abc", 0, (1, 1)),
        ("abc", 2, (1, 3)),
        ("a\nbc", 2, (2, 1)),
        ("a\r\nbc", 3, (2, 1)),
        ("a\r\nb\r\nc", 6, (3, 1)),
        ("a\r\nb\r\ncd", 7, (3, 2)),
        ("é\nxé", 3, (2, 2)),
        ("ab", 99, (1, 3)),
    ],
)
def test_line_col(sql: str, pos: int, expected: tuple[int, int]) -> None:
    assert line_col(sql, pos) == expected
