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
TX_RULES = {"MIG115", "MIG116", "MIG117"}

# Each row restates one of squawk's fixtures (its test name first) in AskFrank's own tables: the same
# statements and the same situation, so squawk's expectation applies unchanged.
# (squawk test, SQL (or several files, oldest first), squawk rules, squawk reports it, migrator rules)
F = "adding-field-with-default"
FK = "adding-foreign-key-constraint"
NV = "constraint-missing-not-valid"
NN = "adding-not-nullable-field"
RF = "adding-required-field"
CASES: list[tuple[str, str | list[str], tuple[str, ...], bool, set[str]]] = [
    # adding_field_with_default.rs
    ("docs_example_ok_post_pg_11", "ALTER TABLE patients ADD COLUMN visits integer DEFAULT 10;", (F,), False, set()),
    ("docs_example_ok", "ALTER TABLE patients ADD COLUMN visits integer;\n"
     "ALTER TABLE patients ALTER COLUMN visits SET DEFAULT 10;", (F,), False, set()),
    ("default_uuid_error_multi_stmt", "ALTER TABLE wards SET LOGGED, ADD COLUMN code integer DEFAULT uuid();",
     (F,), True, {"MIG013", "MIG018"}),
    ("default_uuid_error", "ALTER TABLE patients ADD COLUMN ref integer DEFAULT uuid();", (F,), True, {"MIG013"}),
    ("default_volatile_func_err", "ALTER TABLE patients ADD COLUMN sampled boolean DEFAULT random();",
     (F,), True, {"MIG013"}),
    ("default_bool_ok", "ALTER TABLE patients ADD COLUMN active boolean DEFAULT true;", (F,), False, set()),
    ("default_str_ok", "ALTER TABLE patients ADD COLUMN note text DEFAULT 'none';", (F,), False, set()),
    ("default_enum_ok", "ALTER TABLE patients ADD COLUMN triage triage_level DEFAULT 'routine';", (F,), False, set()),
    ("default_jsonb_ok", "ALTER TABLE patients ADD COLUMN prefs jsonb DEFAULT '{}'::jsonb;", (F,), False, set()),
    ("arbitrary_func_err", "ALTER TABLE patients ADD COLUMN prefs jsonb DEFAULT default_prefs();",
     (F,), True, {"MIG013"}),
    ("default_random_with_args_err", "ALTER TABLE patients ADD COLUMN seen_at timestamptz DEFAULT now(42);",
     (F,), True, {"MIG013"}),
    ("default_func_now_ok", "ALTER TABLE patients ADD COLUMN seen_at timestamptz DEFAULT now();", (F,), False, set()),
    ("add_numbers_ok", "ALTER TABLE patients ADD COLUMN score integer DEFAULT 3 + 4;", (F,), False, set()),
    ("generated_stored_err", "ALTER TABLE invoices ADD COLUMN total numeric GENERATED ALWAYS AS (net + tax) STORED;",
     (F,), True, {"MIG013"}),
    # adding_foreign_key_constraint.rs
    ("create_table_with_foreign_key_constraint", "BEGIN;\nCREATE TABLE referrals (id bigint GENERATED ALWAYS AS "
     "IDENTITY PRIMARY KEY, patient_id bigint, CONSTRAINT fk_referrals_patient FOREIGN KEY (patient_id) "
     "REFERENCES patients (id));\nCOMMIT;", (FK,), False, set()),
    ("create_table_with_column_references", "CREATE TABLE referrals (id bigserial NOT NULL, patient_id integer "
     "NOT NULL REFERENCES patients (id) ON DELETE CASCADE);", (FK,), False, set()),
    ("alter_table_foreign_key_assume_transaction", "CREATE TABLE referrals (id uuid NOT NULL, patient_id uuid NOT "
     "NULL);\nALTER TABLE referrals ADD CONSTRAINT fk_referrals_patient FOREIGN KEY (patient_id) REFERENCES "
     "patients (id);", (FK,), False, set()),
    ("alter_table_foreign_key_in_transaction", "BEGIN;\nCREATE TABLE referrals (id uuid NOT NULL, patient_id uuid "
     "NOT NULL);\nALTER TABLE referrals ADD CONSTRAINT fk_referrals_patient FOREIGN KEY (patient_id) REFERENCES "
     "patients (id);\nCOMMIT;", (FK,), False, set()),
    ("add_foreign_key_constraint_not_valid_validate", "BEGIN;\nALTER TABLE visits ADD COLUMN patient_id int;\n"
     "ALTER TABLE visits ADD CONSTRAINT fk_visits_patient FOREIGN KEY (patient_id) REFERENCES patients (id) NOT "
     "VALID;\nALTER TABLE visits VALIDATE CONSTRAINT fk_visits_patient;\nCOMMIT;", (FK, NV), True, {"MIG004"}),
    ("add_foreign_key_constraint_lock", "BEGIN;\nALTER TABLE visits ADD COLUMN patient_id int;\nALTER TABLE visits "
     "ADD CONSTRAINT fk_visits_patient FOREIGN KEY (patient_id) REFERENCES patients (id);\nCOMMIT;",
     (FK,), True, {"MIG004"}),
    ("add_column_references_lock", "BEGIN;\nALTER TABLE visits ADD COLUMN patient_id int REFERENCES patients (id);"
     "\nCOMMIT;", (FK,), True, {"MIG004"}),
    # constraint_missing_not_valid.rs
    ("not_valid_validate_transaction_err", "BEGIN;\nALTER TABLE visits ADD CONSTRAINT fk_visits_patient FOREIGN KEY "
     "(patient_id) REFERENCES patients (id) NOT VALID;\nALTER TABLE visits VALIDATE CONSTRAINT fk_visits_patient;\n"
     "COMMIT;", (NV,), True, {"MIG004"}),
    ("not_valid_validate_assume_transaction_err", "ALTER TABLE visits ADD CONSTRAINT fk_visits_patient FOREIGN KEY "
     "(patient_id) REFERENCES patients (id) NOT VALID;\nALTER TABLE visits VALIDATE CONSTRAINT fk_visits_patient;",
     (NV,), True, {"MIG004"}),
    ("not_valid_validate_with_assume_in_transaction_with_explicit_commit_err", "ALTER TABLE visits ADD CONSTRAINT "
     "fk_visits_patient FOREIGN KEY (patient_id) REFERENCES patients (id) NOT VALID;\nALTER TABLE visits VALIDATE "
     "CONSTRAINT fk_visits_patient;\nCOMMIT;", (NV,), True, {"MIG115"}),
    ("adding_fk_err", "ALTER TABLE clinics ADD CONSTRAINT fk_clinics_region FOREIGN KEY (region) REFERENCES "
     "regions (code);", (NV,), True, {"MIG004"}),
    ("adding_fk_not_valid_ok", "ALTER TABLE clinics ADD CONSTRAINT fk_clinics_region FOREIGN KEY (region) "
     "REFERENCES regions (code) NOT VALID;\nALTER TABLE clinics VALIDATE CONSTRAINT fk_clinics_region;",
     (NV,), False, {"MIG004"}),
    ("adding_using_index_ok", "ALTER TABLE invoices ADD CONSTRAINT invoices_pk PRIMARY KEY USING INDEX "
     "invoices_pk_idx;", (NV,), False, set()),
    ("adding_check_constraint_err", "ALTER TABLE invoices ADD CONSTRAINT invoices_total_positive CHECK (total >= 0);",
     (NV,), True, {"MIG004"}),
    ("adding_check_constraint_ok", "ALTER TABLE invoices ADD CONSTRAINT invoices_total_positive CHECK (total >= 0) "
     "NOT VALID;\nALTER TABLE invoices VALIDATE CONSTRAINT invoices_total_positive;", (NV,), False, {"MIG004"}),
    ("new_table_with_transaction_ok", "BEGIN;\nCREATE TABLE wards (id serial NOT NULL PRIMARY KEY, beds integer NOT "
     "NULL);\nALTER TABLE wards ADD CONSTRAINT wards_min_beds CHECK (beds >= 1);\nCOMMIT;", (NV,), False, set()),
    # adding_not_null_field.rs (PostgreSQL 12+ settings)
    ("set_not_null", "ALTER TABLE patients ALTER COLUMN mrn SET NOT NULL;", (NN,), True, {"MIG002"}),
    ("adding_field_that_is_not_nullable", "BEGIN;\nALTER TABLE patients ADD COLUMN visits integer DEFAULT 0 NOT "
     "NULL;\nALTER TABLE patients ALTER COLUMN visits DROP DEFAULT;\nCOMMIT;", (NN, RF), False, set()),
    ("adding_field_that_is_not_nullable_without_default", "ALTER TABLE patients ADD COLUMN visits integer NOT NULL;",
     (NN, RF), True, {"MIG001"}),
    ("regression_gh_issue_519", "BEGIN;\nALTER TABLE appointments ALTER COLUMN starts_at SET NOT NULL;\nCOMMIT;",
     (NN,), True, {"MIG002"}),
    ("regression_gh_issue_628_pg16_with_validated_check_ok", "BEGIN;\nALTER TABLE visits ADD COLUMN ward_id bigint;\n"
     "ALTER TABLE visits ADD CONSTRAINT ward_id_not_null CHECK (ward_id IS NOT NULL) NOT VALID;\nCOMMIT;\nBEGIN;\n"
     "ALTER TABLE visits VALIDATE CONSTRAINT ward_id_not_null;\nALTER TABLE visits ALTER COLUMN ward_id SET NOT NULL;\n"
     "ALTER TABLE visits DROP CONSTRAINT ward_id_not_null;\nCOMMIT;", (NN,), False, set()),
    ("pg12_without_validated_check_err", "ALTER TABLE visits ALTER COLUMN ward_id SET NOT NULL;",
     (NN,), True, {"MIG002"}),
    ("pg12_with_check_but_not_validated_err", "ALTER TABLE visits ADD CONSTRAINT ward_id_not_null CHECK (ward_id IS "
     "NOT NULL) NOT VALID;\nALTER TABLE visits ALTER COLUMN ward_id SET NOT NULL;", (NN,), True, {"MIG002"}),
    ("pg16_cross_migration_validate_then_set_not_null_ok", "ALTER TABLE visits VALIDATE CONSTRAINT "
     "visits_ward_id_not_null;\nALTER TABLE visits\nALTER COLUMN ward_id\nSET NOT NULL;\nALTER TABLE visits\n"
     "DROP CONSTRAINT visits_ward_id_not_null;", (NN,), False, set()),
    ("pg12_with_different_column_validated_err", "ALTER TABLE visits ADD CONSTRAINT room_not_null CHECK (room IS NOT "
     "NULL) NOT VALID;\nALTER TABLE visits VALIDATE CONSTRAINT room_not_null;\nALTER TABLE visits ALTER COLUMN "
     "ward_id SET NOT NULL;", (NN,), True, {"MIG002", "MIG004"}),
    # the same recipes across the folder's migrations (squawk sees one file at a time)
    ("(folder) check in an earlier migration, validate + set not null later",
     ["ALTER TABLE visits ADD CONSTRAINT ward_id_not_null CHECK (ward_id IS NOT NULL) NOT VALID;",
      "ALTER TABLE visits VALIDATE CONSTRAINT ward_id_not_null;\nALTER TABLE visits ALTER COLUMN ward_id SET NOT NULL;"],
     (NN,), False, set()),
    ("(folder) an earlier migration's check is on another column",
     ["ALTER TABLE visits ADD CONSTRAINT room_not_null CHECK (room IS NOT NULL) NOT VALID;",
      "ALTER TABLE visits VALIDATE CONSTRAINT room_not_null;\nALTER TABLE visits ALTER COLUMN ward_id SET NOT NULL;"],
     (NN,), True, {"MIG002"}),
    ("(folder) NOT VALID foreign key, validated in the next migration",
     ["ALTER TABLE visits ADD CONSTRAINT fk_visits_patient FOREIGN KEY (patient_id) REFERENCES patients (id) NOT "
      "VALID;", "ALTER TABLE visits VALIDATE CONSTRAINT fk_visits_patient;"], (NV,), False, set()),
    # adding_primary_key_constraint.rs
    ("serial_primary_key", "ALTER TABLE wards ADD COLUMN id serial PRIMARY KEY;",
     ("adding-serial-primary-key-field",), True, {"MIG013", "MIG014"}),
    ("plain_primary_key", "ALTER TABLE wards ADD PRIMARY KEY (id);", ("adding-serial-primary-key-field",),
     True, {"MIG014"}),
    ("okay_add_constraint", "ALTER TABLE wards ADD CONSTRAINT wards_pk PRIMARY KEY USING INDEX wards_pk_idx;",
     ("adding-serial-primary-key-field",), False, set()),
    # adding_required_field.rs
    ("nullable_ok", "ALTER TABLE patients ADD COLUMN nickname text;", (RF,), False, set()),
    ("not_null_with_default", "ALTER TABLE patients ADD COLUMN visits integer NOT NULL DEFAULT 0;", (RF,), False,
     set()),
    ("not_null_without_default", "ALTER TABLE patients ADD COLUMN visits integer NOT NULL;", (RF,), True,
     {"MIG001"}),
    ("generated_stored_not_null_ok", "ALTER TABLE invoices ADD COLUMN total numeric NOT NULL GENERATED ALWAYS AS "
     "(net + tax) STORED;", (RF,), False, {"MIG013"}),
    ("generated_stored_ok", "ALTER TABLE invoices ADD COLUMN total numeric GENERATED ALWAYS AS (net + tax) STORED;",
     (RF,), False, {"MIG013"}),
    # ban_concurrent_index_creation_in_transaction.rs
    ("ban_concurrent_index_creation_in_transaction_err", "BEGIN;\nCREATE INDEX CONCURRENTLY idx_visits_ward ON "
     "visits (ward_id);\nCOMMIT;", ("ban-concurrent-index-creation-in-transaction",), True, {"MIG116"}),
    ("ban_concurrent_index_creation_in_transaction_ok", "CREATE INDEX CONCURRENTLY idx_visits_ward ON visits "
     "(ward_id);", ("ban-concurrent-index-creation-in-transaction",), False, set()),
    ("assuming_in_transaction_err", "CREATE UNIQUE INDEX CONCURRENTLY idx_visits_ref ON visits (ref);\nALTER TABLE "
     "visits ADD CONSTRAINT visits_ref_key UNIQUE USING INDEX idx_visits_ref;",
     ("ban-concurrent-index-creation-in-transaction",), True, {"MIG117"}),
    ("assuming_in_transaction_ok", "CREATE UNIQUE INDEX CONCURRENTLY idx_visits_ref ON visits (ref);",
     ("ban-concurrent-index-creation-in-transaction",), False, set()),
    ("assuming_in_transaction_ok_also", "COMMIT;\nCREATE UNIQUE INDEX CONCURRENTLY idx_visits_ref ON visits (ref);\n"
     "BEGIN;\nALTER TABLE visits ADD CONSTRAINT visits_ref_key UNIQUE USING INDEX idx_visits_ref;",
     ("ban-concurrent-index-creation-in-transaction",), False, {"MIG115", "MIG117"}),
    ("squawk_disable_assume_in_transaction_overrides", "-- squawk-disable-assume-in-transaction\nCREATE INDEX "
     "CONCURRENTLY idx_visits_ref ON visits (ref);\nALTER TABLE visits ADD CONSTRAINT visits_ref_key UNIQUE USING "
     "INDEX idx_visits_ref;", ("ban-concurrent-index-creation-in-transaction",), False, {"MIG117"}),
    # ban_drop_column.rs, ban_drop_database.rs, ban_drop_table.rs, ban_truncate_cascade.rs
    ("ban_drop_column err", "ALTER TABLE patients DROP COLUMN nickname;", ("ban-drop-column",), True, {"MIG006"}),
    ("ban_drop_database", "DROP DATABASE legacy_billing;", ("ban-drop-database",), True, {"MIG015"}),
    ("ban_drop_table err", "DROP TABLE old_sessions;", ("ban-drop-table",), True, {"MIG007"}),
    ("ban_truncate_cascade err", "TRUNCATE visits CASCADE;", ("ban-truncate-cascade",), True, {"MIG017"}),
    ("ban_truncate_cascade_ok", "TRUNCATE report_cache, audit_scratch;\nTRUNCATE report_cache;",
     ("ban-truncate-cascade",), False, {"MIG017"}),
    # changing_column_type.rs
    ("changing_column_type err", "BEGIN;\nALTER TABLE patients ALTER COLUMN notes TYPE varchar(500);\nCOMMIT;",
     ("changing-column-type",), True, {"MIG005"}),
    ("changing_column_type another_err", "BEGIN;\nALTER TABLE patients ALTER COLUMN notes SET DATA TYPE text;\n"
     "COMMIT;", ("changing-column-type",), True, {"MIG005"}),
    # disallow_unique_constraint.rs
    ("adding_unique_constraint_err", "ALTER TABLE patients ADD CONSTRAINT patients_mrn_key UNIQUE (mrn);",
     ("disallowed-unique-constraint",), True, {"MIG014"}),
    ("disallow_unique ok", "CREATE UNIQUE INDEX CONCURRENTLY patients_mrn_idx ON patients (mrn);",
     ("disallowed-unique-constraint",), False, set()),
    ("disallow_unique also_ok", "CREATE UNIQUE INDEX CONCURRENTLY patients_mrn_idx ON patients (mrn);\nALTER TABLE "
     "patients ADD CONSTRAINT patients_mrn_key UNIQUE USING INDEX patients_mrn_idx;",
     ("disallowed-unique-constraint",), False, {"MIG117"}),
    ("unique_constraint_after_create_table", "BEGIN;\nCREATE TABLE wards (id int);\nALTER TABLE wards ADD "
     "CONSTRAINT wards_id_key UNIQUE (id);\nCOMMIT;", ("disallowed-unique-constraint",), False, set()),
    ("unique_constraint_after_create_table_with_assume_in_transaction", "CREATE TABLE wards (id int);\nALTER TABLE "
     "wards ADD CONSTRAINT wards_id_key UNIQUE (id);", ("disallowed-unique-constraint",), False, set()),
    ("unique_constraint_inline_add_column_err", "ALTER TABLE patients ADD COLUMN mrn text UNIQUE;",
     ("disallowed-unique-constraint",), True, {"MIG014"}),
    ("unique_constraint_inline_add_column_unique_err", "ALTER TABLE patients ADD COLUMN mrn text NOT NULL DEFAULT "
     "'' UNIQUE;", ("disallowed-unique-constraint",), True, {"MIG014"}),
    # renaming_column.rs, renaming_table.rs
    ("renaming_column err", "ALTER TABLE patients RENAME COLUMN dob TO date_of_birth;", ("renaming-column",), True,
     {"MIG008"}),
    ("renaming_table err", "ALTER TABLE invoices RENAME TO bills;", ("renaming-table",), True, {"MIG009"}),
    # require_concurrent_index_creation.rs
    ("adding_index_non_concurrently_err", "CREATE INDEX idx_visits_ward ON visits (ward_id);",
     ("require-concurrent-index-creation",), True, {"MIG003"}),
    ("adding_index_concurrently_ok", "CREATE INDEX CONCURRENTLY idx_visits_ward ON visits (ward_id);",
     ("require-concurrent-index-creation",), False, set()),
    ("new_table_ok", "BEGIN;\nCREATE TABLE wards (id int);\nCREATE INDEX idx_wards_id ON wards (id);\nCOMMIT;",
     ("require-concurrent-index-creation",), False, set()),
    ("new_table_in_assume_transaction_ok", "CREATE TABLE wards (id int);\nCREATE INDEX idx_wards_id ON wards (id);",
     ("require-concurrent-index-creation",), False, set()),
    # require_concurrent_index_deletion.rs
    ("drop_index_missing_concurrently_err", "DROP INDEX IF EXISTS idx_visits_ward;",
     ("require-concurrent-index-deletion",), True, {"MIG016"}),
    ("drop_index_multiple_indexes_err", "DROP INDEX IF EXISTS idx_visits_ward, idx_visits_room;",
     ("require-concurrent-index-deletion",), True, {"MIG016"}),
    ("drop_index_concurrently_ok", "DROP INDEX CONCURRENTLY IF EXISTS idx_visits_ward;",
     ("require-concurrent-index-deletion",), False, set()),
    ("regression_false_positive_drop_type_ok", "DROP TYPE IF EXISTS triage_level;",
     ("require-concurrent-index-deletion",), False, set()),
    ("regression_false_positive_drop_table_ok", "DROP TABLE IF EXISTS old_sessions;",
     ("require-concurrent-index-deletion",), False, {"MIG007"}),
    ("regression_false_positive_drop_trigger_ok", "DROP TRIGGER IF EXISTS trg_visits_touch ON visits;",
     ("require-concurrent-index-deletion",), False, set()),
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
    "assuming_in_transaction_ok_also":
        "golang-migrate sends a file as one multi-statement query, an implicit transaction, so a CONCURRENTLY "
        "statement sharing its file fails there whatever BEGIN/COMMIT it carries (MIG117; MIG115 for the lone "
        "COMMIT); migrator keeps files runnable by both tools",
    "squawk_disable_assume_in_transaction_overrides":
        "the same: squawk's in-file directive changes nothing for golang-migrate, which still runs the file as one "
        "implicit transaction (MIG117)",
    "ban_truncate_cascade_ok": "MIG017 flags every TRUNCATE in an up file (data no down can restore), not only CASCADE",
}

SQUAWK_TO_OURS = {name: {r.id for r in RULES.values() if name in r.squawk} for r0 in RULES.values()
                  for name in r0.squawk}
SQUAWK_TO_OURS["adding-field-with-default"] |= {"MIG018"}  # SET LOGGED rewrites like a volatile default
SQUAWK_TO_OURS["ban-concurrent-index-creation-in-transaction"] |= {"MIG117"}  # golang-migrate's implicit one


def _lint(tmp_path: Path, sql: str | list[str]) -> set[str]:
    folder = tmp_path / "migrations"
    folder.mkdir()
    files = [sql] if isinstance(sql, str) else sql
    for i, text in enumerate(files, start=1):
        (folder / f"{i:06d}_fixture.up.sql").write_text(HEADER + text + "\n")
        (folder / f"{i:06d}_fixture.down.sql").write_text("SELECT 1;\n")
    report = validate_folder(folder, base=folder)
    last = f"{len(files):06d}_fixture.up.sql"
    # the safety rules, and the transaction rules squawk also has (not MIG113's note, MIG114's style warning)
    return {f.rule for f in report.findings if f.file == last and (f.rule[3] == "0" or f.rule in TX_RULES)}


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
