"""squawk's own rule fixtures (crates/squawk_linter/src/rules/*.rs, squawk 2.x), run through `validate`.

Each row: squawk's test name, its SQL, the squawk rule(s) the fixture is about, whether squawk
reports it (its expectation), and the migrator rules we report. A row where the two disagree must
be in SQUAWK_DIFFERENCES with the reason, and docs/validation.md lists the same differences.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from migrator.lint import validate_folder
from migrator.lint.model import RULES

HEADER = "-- Business justification: squawk parity fixture.\n"

# (squawk test, SQL (or several files, oldest first), squawk rules, squawk reports it, migrator rules)
CASES: list[tuple[str, str | list[str], tuple[str, ...], bool, set[str]]] = [
    # adding_field_with_default.rs
    ("docs_example_ok_post_pg_11", 'ALTER TABLE "core_recipe" ADD COLUMN "foo" integer DEFAULT 10;',
     ("adding-field-with-default",), False, set()),
    ("docs_example_ok", 'ALTER TABLE "core_recipe" ADD COLUMN "foo" integer;\n'
     'ALTER TABLE "core_recipe" ALTER COLUMN "foo" SET DEFAULT 10;', ("adding-field-with-default",), False, set()),
    ("default_uuid_error_multi_stmt", "alter table t set logged, add column c integer default uuid();",
     ("adding-field-with-default",), True, {"MIG013", "MIG018"}),
    ("default_uuid_error", 'ALTER TABLE "core_recipe" ADD COLUMN "foo" integer DEFAULT uuid();',
     ("adding-field-with-default",), True, {"MIG013"}),
    ("default_volatile_func_err", 'ALTER TABLE "core_recipe" ADD COLUMN "foo" boolean DEFAULT random();',
     ("adding-field-with-default",), True, {"MIG013"}),
    ("default_bool_ok", 'ALTER TABLE "core_recipe" ADD COLUMN "foo" boolean DEFAULT true;',
     ("adding-field-with-default",), False, set()),
    ("default_str_ok", "ALTER TABLE \"core_recipe\" ADD COLUMN \"foo\" text DEFAULT 'some-str';",
     ("adding-field-with-default",), False, set()),
    ("default_enum_ok", "ALTER TABLE \"core_recipe\" ADD COLUMN \"foo\" some_enum_type DEFAULT 'my-enum-variant';",
     ("adding-field-with-default",), False, set()),
    ("default_jsonb_ok", "ALTER TABLE \"core_recipe\" ADD COLUMN \"foo\" jsonb DEFAULT '{}'::jsonb;",
     ("adding-field-with-default",), False, set()),
    ("arbitrary_func_err", 'ALTER TABLE "core_recipe" ADD COLUMN "foo" jsonb DEFAULT myjsonb();',
     ("adding-field-with-default",), True, {"MIG013"}),
    ("default_random_with_args_err", 'ALTER TABLE "core_recipe" ADD COLUMN "foo" timestamptz DEFAULT now(123);',
     ("adding-field-with-default",), True, {"MIG013"}),
    ("default_func_now_ok", 'ALTER TABLE "core_recipe" ADD COLUMN "foo" timestamptz DEFAULT now();',
     ("adding-field-with-default",), False, set()),
    ("add_numbers_ok", "alter table account_metadata add column blah integer default 2 + 2;",
     ("adding-field-with-default",), False, set()),
    ("generated_stored_err", "ALTER TABLE foo\nADD COLUMN bar numeric GENERATED ALWAYS AS (bar + baz) STORED;",
     ("adding-field-with-default",), True, {"MIG013"}),
    # adding_foreign_key_constraint.rs
    ("create_table_with_foreign_key_constraint", "BEGIN;\nCREATE TABLE email (id BIGINT GENERATED ALWAYS AS "
     'IDENTITY, user_id BIGINT, email TEXT, PRIMARY KEY(id), CONSTRAINT fk_user FOREIGN KEY ("user_id") '
     'REFERENCES "user" ("id"));\nCOMMIT;', ("adding-foreign-key-constraint",), False, set()),
    ("create_table_with_column_references", "CREATE TABLE table_name (id BIGSERIAL NOT NULL, my_fk_id INTEGER "
     "NOT NULL REFERENCES other_table (id) ON DELETE CASCADE);", ("adding-foreign-key-constraint",), False, set()),
    ("alter_table_foreign_key_assume_transaction", 'CREATE TABLE "emails" ("id" UUID NOT NULL, "user_id" UUID NOT '
     'NULL);\nALTER TABLE "emails" ADD CONSTRAINT "fk_user" FOREIGN KEY ("user_id") REFERENCES "users" ("id");',
     ("adding-foreign-key-constraint",), False, set()),
    ("alter_table_foreign_key_in_transaction", 'BEGIN;\nCREATE TABLE "emails" ("id" UUID NOT NULL, "user_id" UUID '
     'NOT NULL);\nALTER TABLE "emails" ADD CONSTRAINT "fk_user" FOREIGN KEY ("user_id") REFERENCES "users" ("id");'
     "\nCOMMIT;", ("adding-foreign-key-constraint",), False, set()),
    ("add_foreign_key_constraint_not_valid_validate", 'BEGIN;\nALTER TABLE "email" ADD COLUMN "user_id" INT;\n'
     'ALTER TABLE "email" ADD CONSTRAINT "fk_user" FOREIGN KEY ("user_id") REFERENCES "user" ("id") NOT VALID;\n'
     'ALTER TABLE "email" VALIDATE CONSTRAINT "fk_user";\nCOMMIT;',
     ("adding-foreign-key-constraint", "constraint-missing-not-valid"), True, {"MIG004"}),
    ("add_foreign_key_constraint_lock", 'BEGIN;\nALTER TABLE "email" ADD COLUMN "user_id" INT;\nALTER TABLE "email" '
     'ADD CONSTRAINT "fk_user" FOREIGN KEY ("user_id") REFERENCES "user" ("id");\nCOMMIT;',
     ("adding-foreign-key-constraint",), True, {"MIG004"}),
    ("add_column_references_lock", 'BEGIN;\nALTER TABLE "emails" ADD COLUMN "user_id" INT REFERENCES "user" ("id");'
     "\nCOMMIT;", ("adding-foreign-key-constraint",), True, {"MIG004"}),
    # constraint_missing_not_valid.rs
    ("not_valid_validate_transaction_err", 'BEGIN;\nALTER TABLE "app_email" ADD CONSTRAINT "fk_user" FOREIGN KEY '
     '(user_id) REFERENCES "app_user" (id) NOT VALID;\nALTER TABLE "app_email" VALIDATE CONSTRAINT "fk_user";\n'
     "COMMIT;", ("constraint-missing-not-valid",), True, {"MIG004"}),
    ("not_valid_validate_assume_transaction_err", 'ALTER TABLE "app_email" ADD CONSTRAINT "fk_user" FOREIGN KEY '
     '(user_id) REFERENCES "app_user" (id) NOT VALID;\nALTER TABLE "app_email" VALIDATE CONSTRAINT "fk_user";',
     ("constraint-missing-not-valid",), True, {"MIG004"}),
    ("not_valid_validate_with_assume_in_transaction_with_explicit_commit_err", 'ALTER TABLE "app_email" ADD '
     'CONSTRAINT "fk_user" FOREIGN KEY (user_id) REFERENCES "app_user" (id) NOT VALID;\nALTER TABLE "app_email" '
     'VALIDATE CONSTRAINT "fk_user";\nCOMMIT;', ("constraint-missing-not-valid",), True, set()),
    ("adding_fk_err", "ALTER TABLE distributors ADD CONSTRAINT distfk FOREIGN KEY (address) REFERENCES addresses "
     "(address);", ("constraint-missing-not-valid",), True, {"MIG004"}),
    ("adding_fk_not_valid_ok", "ALTER TABLE distributors ADD CONSTRAINT distfk FOREIGN KEY (address) REFERENCES "
     "addresses (address) NOT VALID;\nALTER TABLE distributors VALIDATE CONSTRAINT distfk;",
     ("constraint-missing-not-valid",), False, {"MIG004"}),
    ("adding_using_index_ok", "ALTER TABLE account ADD CONSTRAINT account_pk PRIMARY KEY USING INDEX account_pk_idx;",
     ("constraint-missing-not-valid",), False, set()),
    ("adding_check_constraint_err", 'ALTER TABLE "accounts" ADD CONSTRAINT "positive_balance" CHECK ("balance" >= 0);',
     ("constraint-missing-not-valid",), True, {"MIG004"}),
    ("adding_check_constraint_ok", 'ALTER TABLE "accounts" ADD CONSTRAINT "positive_balance" CHECK ("balance" >= 0) '
     "NOT VALID;\nALTER TABLE accounts VALIDATE CONSTRAINT positive_balance;",
     ("constraint-missing-not-valid",), False, {"MIG004"}),
    ("new_table_with_transaction_ok", 'BEGIN;\nCREATE TABLE "core_foo" ("id" serial NOT NULL PRIMARY KEY, "age" '
     'integer NOT NULL);\nALTER TABLE "core_foo" ADD CONSTRAINT "age_restriction" CHECK ("age" >= 25);\nCOMMIT;',
     ("constraint-missing-not-valid",), False, set()),
    # adding_not_null_field.rs (PostgreSQL 12+ settings)
    ("set_not_null", 'ALTER TABLE "core_recipe" ALTER COLUMN "foo" SET NOT NULL;',
     ("adding-not-nullable-field",), True, {"MIG002"}),
    ("adding_field_that_is_not_nullable", 'BEGIN;\nALTER TABLE "core_recipe" ADD COLUMN "foo" integer DEFAULT 10 '
     'NOT NULL;\nALTER TABLE "core_recipe" ALTER COLUMN "foo" DROP DEFAULT;\nCOMMIT;',
     ("adding-not-nullable-field", "adding-required-field"), False, set()),
    ("adding_field_that_is_not_nullable_without_default", 'ALTER TABLE "core_recipe" ADD COLUMN "foo" integer NOT '
     "NULL;", ("adding-not-nullable-field", "adding-required-field"), True, {"MIG001"}),
    ("regression_gh_issue_519", "BEGIN;\nALTER TABLE my_table ALTER COLUMN my_column SET NOT NULL;\nCOMMIT;",
     ("adding-not-nullable-field",), True, {"MIG002"}),
    ("regression_gh_issue_628_pg16_with_validated_check_ok", "BEGIN;\nALTER TABLE foo ADD COLUMN bar BIGINT;\n"
     "ALTER TABLE foo ADD CONSTRAINT bar_not_null CHECK (bar IS NOT NULL) NOT VALID;\nCOMMIT;\nBEGIN;\n"
     "ALTER TABLE foo VALIDATE CONSTRAINT bar_not_null;\nALTER TABLE foo ALTER COLUMN bar SET NOT NULL;\n"
     "ALTER TABLE foo DROP CONSTRAINT bar_not_null;\nCOMMIT;", ("adding-not-nullable-field",), False, set()),
    ("pg12_without_validated_check_err", "ALTER TABLE foo ALTER COLUMN bar SET NOT NULL;",
     ("adding-not-nullable-field",), True, {"MIG002"}),
    ("pg12_with_check_but_not_validated_err", "ALTER TABLE foo ADD CONSTRAINT bar_not_null CHECK (bar IS NOT NULL) "
     "NOT VALID;\nALTER TABLE foo ALTER COLUMN bar SET NOT NULL;", ("adding-not-nullable-field",), True, {"MIG002"}),
    ("pg16_cross_migration_validate_then_set_not_null_ok", "ALTER TABLE foo VALIDATE CONSTRAINT foo_bar_not_null;\n"
     "ALTER TABLE foo\nALTER COLUMN bar\nSET NOT NULL;\nALTER TABLE foo\nDROP CONSTRAINT foo_bar_not_null;",
     ("adding-not-nullable-field",), False, set()),
    ("pg12_with_different_column_validated_err", "ALTER TABLE foo ADD CONSTRAINT baz_not_null CHECK (baz IS NOT "
     "NULL) NOT VALID;\nALTER TABLE foo VALIDATE CONSTRAINT baz_not_null;\nALTER TABLE foo ALTER COLUMN bar SET "
     "NOT NULL;", ("adding-not-nullable-field",), True, {"MIG002", "MIG004"}),
    # the same recipes across the folder's migrations (squawk sees one file at a time)
    ("(folder) check in an earlier migration, validate + set not null later",
     ["ALTER TABLE foo ADD CONSTRAINT bar_not_null CHECK (bar IS NOT NULL) NOT VALID;",
      "ALTER TABLE foo VALIDATE CONSTRAINT bar_not_null;\nALTER TABLE foo ALTER COLUMN bar SET NOT NULL;"],
     ("adding-not-nullable-field",), False, set()),
    ("(folder) an earlier migration's check is on another column",
     ["ALTER TABLE foo ADD CONSTRAINT baz_not_null CHECK (baz IS NOT NULL) NOT VALID;",
      "ALTER TABLE foo VALIDATE CONSTRAINT baz_not_null;\nALTER TABLE foo ALTER COLUMN bar SET NOT NULL;"],
     ("adding-not-nullable-field",), True, {"MIG002"}),
    ("(folder) NOT VALID foreign key, validated in the next migration",
     ['ALTER TABLE "email" ADD CONSTRAINT "fk_user" FOREIGN KEY ("user_id") REFERENCES "user" ("id") NOT VALID;',
      'ALTER TABLE "email" VALIDATE CONSTRAINT "fk_user";'], ("constraint-missing-not-valid",), False, set()),
]

# Rows where migrator and squawk disagree, and why (also in docs/validation.md, "Coverage of Squawk's rules").
SQUAWK_DIFFERENCES = {
    "not_valid_validate_with_assume_in_transaction_with_explicit_commit_err":
        "a file with its own COMMIT runs statement by statement in migrator (MIG115 flags the stray COMMIT), "
        "so VALIDATE does not share the ADD's transaction",
    "adding_fk_not_valid_ok":
        "squawk does not assume a transaction by default; migrator always wraps a file in one, so VALIDATE "
        "there holds the ADD's lock: it belongs in a later migration",
    "adding_check_constraint_ok": "the same: one transaction per file in migrator",
}

SQUAWK_TO_OURS = {name: {r.id for r in RULES.values() if name in r.squawk} for r0 in RULES.values()
                  for name in r0.squawk}
SQUAWK_TO_OURS["adding-field-with-default"] |= {"MIG018"}  # SET LOGGED rewrites like a volatile default


def _lint(tmp_path: Path, sql: str | list[str]) -> set[str]:
    folder = tmp_path / "migrations"
    folder.mkdir()
    files = [sql] if isinstance(sql, str) else sql
    for i, text in enumerate(files, start=1):
        (folder / f"{i:06d}_fixture.up.sql").write_text(HEADER + text + "\n")
        (folder / f"{i:06d}_fixture.down.sql").write_text("SELECT 1;\n")
    report = validate_folder(folder, base=folder)
    last = f"{len(files):06d}_fixture.up.sql"
    return {f.rule for f in report.findings if f.file == last and f.rule[3] == "0"}  # safety rules only


@pytest.mark.parametrize(("case", "sql", "squawk_rules", "squawk_reports", "ours"), CASES, ids=[c[0] for c in CASES])
def test_squawk_fixture(tmp_path: Path, case: str, sql: str | list[str], squawk_rules: tuple[str, ...],
                        squawk_reports: bool, ours: set[str]) -> None:
    got = _lint(tmp_path, sql)
    assert got == ours
    mapped = set().union(*(SQUAWK_TO_OURS[r] for r in squawk_rules))
    agrees = bool(got & mapped) == squawk_reports
    assert agrees == (case not in SQUAWK_DIFFERENCES), SQUAWK_DIFFERENCES.get(case, "squawk disagrees: explain why")


def test_every_listed_difference_is_in_the_docs() -> None:
    docs = (Path(__file__).resolve().parent.parent / "docs" / "validation.md").read_text()
    assert [c for c in SQUAWK_DIFFERENCES if f"`{c}`" not in docs] == []


# MIG013 beyond squawk's fixtures: what counts as provably stable
STABLE_DEFAULTS = [
    ("now()", False), ("pg_catalog.now()", False), ("public.now()", True), ("upper('x')", False),
    ("lower(now()::text)", False), ("CURRENT_TIMESTAMP", False), ("'now'::timestamptz", False),
    ("gen_random_uuid()", True), ("uuidv7()", True), ("nextval('s')", True), ("clock_timestamp()", True),
    ("uuid_generate_v4()", True), ("coalesce(NULL, 1)", False), ("upper()", True), ("concat('a', 'b', 'c')", False),
    ("to_char(now(), 'YYYY')", False), ("1 + random()::int", True),
]


@pytest.mark.parametrize(("default", "volatile"), STABLE_DEFAULTS)
def test_defaults_not_proven_stable_count_as_volatile(tmp_path: Path, default: str, volatile: bool) -> None:
    got = _lint(tmp_path, f"ALTER TABLE t ADD COLUMN c text DEFAULT {default};")
    assert ("MIG013" in got) == volatile


SECRETS = [  # (statement, flagged as a plaintext secret)
    ("INSERT INTO users (email, password) VALUES ('a@example.com', 'hunter2');", True),
    ("INSERT INTO users (email, api_token) VALUES ('a@example.com', 'abc123'::text);", True),
    ("INSERT INTO users (id, password_hash) VALUES (1, '$2b$12$" + "a" * 53 + "');", True),  # a hash is a hash
    ("INSERT INTO users (email, password_changed_at) VALUES ('a@example.com', '2024-01-01');", False),
    ("INSERT INTO users (email, token_type) VALUES ('a@example.com', 'bearer');", False),
    ("INSERT INTO users (email, password) VALUES ('a@example.com', NULL);", False),
    ("INSERT INTO users (email, password) VALUES ('a@example.com', crypt(current_setting('app.pw'), "
     "gen_salt('bf')));", False),
    ("INSERT INTO settings (k, client_secret) VALUES ('x', 'abcd') ON CONFLICT (k) DO UPDATE SET "
     "client_secret = 'abcd';", True),
    ("UPDATE users SET (email, password) = ('a@example.com', 'hunter2');", True),
    ("ALTER TABLE users ADD COLUMN pin text DEFAULT '1234';", True),
    ("CREATE TABLE creds (id int, secret text DEFAULT 'changeme');", True),
    ("ALTER TABLE users ALTER COLUMN password SET DEFAULT 'changeme';", True),
    ("INSERT INTO users (email, passphrase) VALUES ('a@example.com', '');", False),
]


@pytest.mark.parametrize(("sql", "flagged"), SECRETS)
def test_plaintext_secrets_to_secret_columns(tmp_path: Path, sql: str, flagged: bool) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "000001_fixture.up.sql").write_text(HEADER + sql + "\n")
    (folder / "000001_fixture.down.sql").write_text("SELECT 1;\n")
    found = [f for f in validate_folder(folder, base=folder).findings if f.rule == "MIG201"]
    assert bool(found) == flagged, found
    for f in found:  # the message names the kind and the line, never the value
        assert "hunter2" not in f.message and "abcd" not in f.message and "changeme" not in f.message
