"""Findings and the rule catalogue shared by every check, the reports and the docs.

Each rule has a stable id (``MIG###``), a squawk-like name, a default severity, what it catches,
why it matters and the safe alternative; findings carry the id so that CI annotations, SARIF and
``-- migrator:allow`` comments all speak the same language.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["error", "warning", "info"]
ERROR: Severity = "error"
WARNING: Severity = "warning"
INFO: Severity = "info"
SEVERITY_ORDER: dict[str, int] = {ERROR: 0, WARNING: 1, INFO: 2}


@dataclass(frozen=True)
class Rule:
    """A check: id, name, severity, and the text shown to people."""

    id: str
    name: str
    severity: Severity
    summary: str
    why: str = ""
    fix: str = ""
    silenceable: bool = True
    squawk: tuple[str, ...] = ()


@dataclass
class Finding:
    """One problem at one place; ``line``/``column`` are 1-based (None when the whole file)."""

    rule: str
    severity: Severity
    file: str
    message: str
    line: int | None = None
    column: int | None = None
    help: str = ""
    extra: dict[str, object] = field(default_factory=dict)
    offset: int | None = field(default=None, repr=False, compare=False)  # character offset, for allow comments

    @property
    def name(self) -> str:
        r = RULES.get(self.rule)
        return r.name if r else self.rule

    def location(self) -> str:
        if self.line is None:
            return self.file
        return f"{self.file}:{self.line}:{self.column or 1}"

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {
            "rule": self.rule,
            "name": self.name,
            "severity": self.severity,
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "message": self.message,
        }
        if self.help:
            d["help"] = self.help
        if self.extra:
            d.update(self.extra)
        return d


def sort_key(f: Finding) -> tuple[str, int, int, str]:
    return (f.file, f.line or 0, f.column or 0, f.rule)


def _r(*args: object, **kw: object) -> Rule:
    return Rule(*args, **kw)  # type: ignore[arg-type]


_CATALOGUE = [
    # --- parsing and structure
    _r("MIG000", "syntax-error", ERROR, "The file does not parse with PostgreSQL's parser.",
       "It would fail on the first database it touches, possibly after earlier statements ran.",
       "Fix the SQL at the reported line and column.", silenceable=False),
    _r("MIG100", "bad-file-name", ERROR, "A .sql file does not match {version}_{title}.{up|down}.sql.",
       "golang-migrate silently skips it, so the change never runs.", "Rename it, e.g. 000007_add_x.up.sql.",
       silenceable=False),
    _r("MIG101", "bad-extension", ERROR, "A migration file with another extension than .sql.", "Only SQL runs.",
       "Rename it to .sql.", silenceable=False),
    _r("MIG102", "bad-version", ERROR, "The version does not fit schema_migrations' bigint.", "It cannot be stored.",
       "Use a 6-digit sequence number.", silenceable=False),
    _r("MIG103", "unreadable", ERROR, "The file cannot be read.", "It cannot run.", "Fix its permissions.",
       silenceable=False),
    _r("MIG104", "encoding", ERROR, "The file is not UTF-8 or starts with a byte-order mark.",
       "PostgreSQL rejects it.", "Re-save it as UTF-8 without BOM.", silenceable=False),
    _r("MIG105", "empty-file", ERROR, "An up or down file has only whitespace or comments.",
       "An empty down silently does nothing on rollback; an empty up records a version that changed nothing.",
       "Write the SQL, or delete the pair.", silenceable=False),
    _r("MIG106", "duplicate-version", ERROR, "Two files share a version and direction.",
       "golang-migrate refuses the folder; two developers picked the same number.",
       "Renumber one to the next free number (suggested in the message).", silenceable=False),
    _r("MIG107", "name-mismatch", ERROR, "The up and down files of a version have different titles.",
       "They were probably paired by mistake.", "Give both the same title.", silenceable=False),
    _r("MIG108", "missing-up", ERROR, "A down file without its up file.", "The version can never be applied.",
       "Add the up file or delete the down file.", silenceable=False),
    _r("MIG109", "missing-down", ERROR, "An up file without its down file.",
       "The team's guide requires a rollback for every migration.", "Write the down file.", silenceable=False),
    _r("MIG110", "not-a-migration", WARNING, "A file in the migrations folder that is not a migration.",
       "It is ignored.", "Move it elsewhere.", silenceable=False),
    _r("MIG111", "version-gap", WARNING, "Versions are not consecutive (e.g. 3 then 5).",
       "Often a renumbering that went wrong or a migration lost in a merge.",
       "Check no migration is missing; renumber if needed.", silenceable=False),
    _r("MIG112", "name-not-descriptive", WARNING, "The title is not descriptive snake_case.",
       "The file name is the only summary people see in status output and alerts.",
       "Use e.g. add_patient_table, add_email_verification_index.", silenceable=False),
    _r("MIG113", "non-transactional", INFO, "The file cannot run inside a single transaction (reason given).",
       "migrator runs it without its wrapping transaction: a failure can leave part of it applied (dirty).",
       "Keep such statements alone in their own migration.", silenceable=False),
    _r("MIG114", "explicit-transaction", WARNING, "The file has its own BEGIN/COMMIT.",
       "migrator then cannot record the new version in the same transaction as the change.",
       "Remove BEGIN/COMMIT: migrator already wraps each file in one transaction.",
       squawk=("transaction-nesting",)),
    _r("MIG115", "uncommitted-transaction", ERROR, "BEGIN without a matching COMMIT (or COMMIT without BEGIN).",
       "The migration's changes are rolled back or left open when the session ends.",
       "Pair every BEGIN with a COMMIT in the same file, or remove both.", squawk=("ban-uncommitted-transaction",)),
    _r("MIG116", "concurrently-in-transaction", ERROR,
       "A statement that cannot run in a transaction block sits inside the file's own BEGIN ... COMMIT.",
       "PostgreSQL refuses it: the migration fails.", "Move it to a migration of its own, outside BEGIN/COMMIT.",
       squawk=("ban-concurrent-index-creation-in-transaction",)),
    _r("MIG117", "non-transactional-not-alone", WARNING,
       "A statement that cannot run in a transaction shares its file with other statements.",
       "golang-migrate sends a file as one multi-statement query, which PostgreSQL runs as one implicit "
       "transaction, so the statement fails there; and a failure half-way leaves the database dirty.",
       "Put the statement alone in a migration of its own."),
    # --- safety rules
    _r("MIG001", "adding-required-field", ERROR, "ADD COLUMN ... NOT NULL without a DEFAULT on an existing table.",
       "It fails on any table that already has rows (and breaks inserts from running code).",
       "Add the column nullable (or with a DEFAULT), backfill in batches, then add the constraint.",
       squawk=("adding-required-field", "adding-not-nullable-field")),
    _r("MIG002", "set-not-null-without-check", WARNING,
       "ALTER COLUMN ... SET NOT NULL without a validated CHECK (col IS NOT NULL) first.",
       "It scans the whole table under an ACCESS EXCLUSIVE lock, blocking reads and writes.",
       "ADD CONSTRAINT c CHECK (col IS NOT NULL) NOT VALID; VALIDATE CONSTRAINT c; then SET NOT NULL "
       "(PostgreSQL 12+ skips the scan) and drop the check.", squawk=("adding-not-nullable-field",)),
    _r("MIG003", "require-concurrent-index-creation", WARNING,
       "CREATE INDEX without CONCURRENTLY on a table the file did not create.",
       "A plain CREATE INDEX blocks all writes to the table until it finishes.",
       "CREATE INDEX CONCURRENTLY IF NOT EXISTS ..., alone in its own migration.",
       squawk=("require-concurrent-index-creation",)),
    _r("MIG004", "constraint-missing-not-valid", WARNING,
       "ADD CONSTRAINT ... FOREIGN KEY or CHECK without NOT VALID on an existing table; ADD COLUMN ... "
       "REFERENCES; or VALIDATE CONSTRAINT in the same transaction as its ADD ... NOT VALID.",
       "Validating every row holds a lock that blocks writes (both tables for a foreign key); in the same "
       "transaction the ADD's lock is still held while VALIDATE scans.",
       "ADD CONSTRAINT ... NOT VALID, then ALTER TABLE ... VALIDATE CONSTRAINT in a later migration.",
       squawk=("constraint-missing-not-valid", "adding-foreign-key-constraint")),
    _r("MIG005", "changing-column-type", WARNING, "ALTER COLUMN ... TYPE on an existing table.",
       "Most type changes rewrite the table and its indexes under an ACCESS EXCLUSIVE lock, and running "
       "code may not handle the new type.",
       "Add a new column, backfill, switch the code, then drop the old column.",
       squawk=("changing-column-type",)),
    _r("MIG006", "ban-drop-column", ERROR, "DROP COLUMN in an up migration.",
       "Data loss that no down file can undo, and running code that still selects the column breaks.",
       "Stop using the column in code first, back it up, then drop it; say why in a migrator:allow comment.",
       squawk=("ban-drop-column",)),
    _r("MIG007", "ban-drop-table", ERROR, "DROP TABLE in an up migration.",
       "Data loss that no down file can undo.",
       "Back the data up, make sure nothing uses the table, then drop it with a migrator:allow justification.",
       squawk=("ban-drop-table",)),
    _r("MIG008", "renaming-column", ERROR, "RENAME COLUMN.",
       "Application versions running during the deploy still use the old name and fail.",
       "Add the new column, write to both, backfill, switch reads, then drop the old one.",
       squawk=("renaming-column",)),
    _r("MIG009", "renaming-table", ERROR, "ALTER TABLE ... RENAME TO.",
       "Application versions running during the deploy still use the old name and fail.",
       "Create the new table (or an updatable view under the old name) and migrate in steps.",
       squawk=("renaming-table",)),
    _r("MIG010", "unbounded-update-or-delete", ERROR, "UPDATE or DELETE without WHERE.",
       "It touches every row (patient data included) in one long transaction holding row locks.",
       "Add a WHERE clause; backfill large tables in batches; if every row is truly meant, say so in a "
       "migrator:allow comment."),
    _r("MIG011", "down-without-if-exists", WARNING, "DROP without IF EXISTS in a down file.",
       "A rollback after a partly applied up fails on the object that was never created.",
       "DROP ... IF EXISTS.", squawk=("prefer-robust-stmts",)),
    _r("MIG012", "down-does-not-revert", ERROR, "The down file does not drop or revert something its up creates.",
       "Rolling back leaves the object behind, so the next up fails or the schema drifts.",
       "Drop (or revert) every table, column, index, type, function, view, sequence, trigger and schema "
       "the up file creates."),
    _r("MIG013", "adding-field-with-volatile-default", WARNING,
       "ADD COLUMN with a volatile DEFAULT (random(), gen_random_uuid(), clock_timestamp(), or any function "
       "not known to be a stable built-in: user-defined, from an extension, or with the wrong arguments) or a "
       "STORED generated column on an existing table.",
       "The table is rewritten under an ACCESS EXCLUSIVE lock.",
       "Add the column without a default, set the default, then backfill in batches.",
       squawk=("adding-field-with-default",)),
    _r("MIG014", "disallowed-unique-constraint", WARNING,
       "ADD UNIQUE or PRIMARY KEY constraint on an existing table without USING INDEX.",
       "Building the index blocks reads and writes.",
       "CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT ... USING INDEX.",
       squawk=("disallowed-unique-constraint", "adding-serial-primary-key-field")),
    _r("MIG015", "ban-drop-database", ERROR, "DROP DATABASE in a migration.", "Irreversible loss of everything.",
       "Never do this from a migration.", squawk=("ban-drop-database",)),
    _r("MIG016", "require-concurrent-index-deletion", WARNING,
       "DROP INDEX without CONCURRENTLY in an up file.", "It blocks reads and writes on the table.",
       "DROP INDEX CONCURRENTLY IF EXISTS ..., alone in its own migration.",
       squawk=("require-concurrent-index-deletion",)),
    _r("MIG017", "ban-truncate", ERROR, "TRUNCATE in an up migration.",
       "Data loss that no down file can undo (CASCADE empties other tables too).",
       "Delete the intended rows with a WHERE clause; justify with migrator:allow if truly needed.",
       squawk=("ban-truncate-cascade",)),
    _r("MIG018", "set-logged-rewrites", WARNING, "ALTER TABLE ... SET LOGGED or SET UNLOGGED on an existing table.",
       "Both rewrite the whole table and its indexes under an ACCESS EXCLUSIVE lock (SET LOGGED also writes "
       "all of it to the WAL).",
       "Do it in a maintenance window, or create the new table with the wanted persistence and copy in batches."),
    # --- HIPAA
    _r("MIG201", "sensitive-literal", ERROR,
       "A literal or comment that looks like an SSN, e-mail address, phone number, medical record number, "
       "password, key or token.",
       "Migration files live in git, CI logs and backups: real patient identifiers or secrets there are a "
       "HIPAA breach.",
       "Never put real data in migrations; use reserved test values (example.com, 555-01xx) or load data "
       "from a secure source at run time."),
    _r("MIG202", "missing-business-justification", ERROR,
       "The up file has no 'Business justification:' header comment (or it still says TODO).",
       "The team's HIPAA audit trail asks every migration to say why it exists.",
       "Add '-- Business justification: <ticket and reason>' before the first statement.",
       silenceable=False),
    # --- suppression comments
    _r("MIG900", "allow-without-justification", ERROR, "A migrator:allow comment gives no justification.",
       "Silencing a safety rule must leave a reason for reviewers and auditors.",
       "Write: -- migrator:allow MIG006 <why this is safe>", silenceable=False),
    _r("MIG901", "allow-unknown-rule", WARNING, "A migrator:allow comment names a rule that does not exist.",
       "A typo silently silences nothing.", "Use a rule id (MIG006) or name (ban-drop-column).",
       silenceable=False),
    _r("MIG902", "allow-unused", WARNING, "A migrator:allow comment silences nothing.",
       "Left-over comments hide future findings or mislead reviewers.", "Remove it.", silenceable=False),
    # --- drift (needs a database)
    _r("MIG301", "drift-changed-file", ERROR, "An applied migration's file changed since it was applied.",
       "Databases that already ran the old text differ from new ones built from the files.",
       "Restore the file and put the change in a new migration.", silenceable=False),
    _r("MIG302", "drift-missing-file", ERROR, "A version applied to the database has no file any more.",
       "It cannot be rolled back and new environments will not get it.",
       "Restore the file from git history.", silenceable=False),
    _r("MIG303", "drift-out-of-order", ERROR, "An unapplied migration is older than the database's version.",
       "golang-migrate never applies it: it was merged after a newer migration ran.",
       "Renumber it after the current version (next free number suggested).", silenceable=False),
    _r("MIG304", "drift-dirty", ERROR, "The database is marked dirty.", "A migration failed half-way.",
       "Inspect the schema, then `migrator force V`.", silenceable=False),
    # --- the committed schema file (no database: its header against the files)
    _r("MIG305", "schema-file-stale", ERROR, "migrations/schema.sql is not the schema of the current files.",
       "Review sees a schema the migrations no longer produce; the next `migrator up` rewrites it in someone "
       "else's change.", "Run `migrator up` on your development database (or `migrator schema dump --from-files`) "
       "and commit schema.sql.", silenceable=False),
]

RULES: dict[str, Rule] = {r.id: r for r in _CATALOGUE}
RULES_BY_NAME: dict[str, Rule] = {r.name: r for r in _CATALOGUE}


def finding(rule_id: str, file: str, message: str, line: int | None = None, column: int | None = None,
            *, severity: Severity | None = None, help: str | None = None, offset: int | None = None,
            **extra: object) -> Finding:
    """A Finding of ``rule_id`` with the rule's default severity and safe alternative."""
    rule = RULES[rule_id]
    return Finding(
        rule=rule_id,
        severity=severity or rule.severity,
        file=file,
        message=message,
        line=line,
        column=column,
        help=rule.fix if help is None else help,
        extra=dict(extra),
        offset=offset,
    )
