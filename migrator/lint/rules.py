"""Safety rules for production PostgreSQL, run on libpg_query's JSON parse tree.

Locking and data-loss rules look at up files (what deploys run); down files get the rollback
rules (IF EXISTS, reverting what the up created). A table created earlier in the same file is
"new": indexing or constraining it cannot block anyone. ``LintState`` carries what earlier
migrations did (validated NOT NULL checks) so the usual multi-migration recipes pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migrator.lint.model import Finding, finding
from migrator.lint.parse import ParsedFile, Statement

VOLATILE_FUNCTIONS = frozenset(
    {
        "random",
        "gen_random_uuid",
        "uuid_generate_v1",
        "uuid_generate_v1mc",
        "uuid_generate_v4",
        "uuidv4",
        "uuidv7",
        "clock_timestamp",
        "timeofday",
        "nextval",
        "random_normal",
        "gen_random_bytes",
    }
)
SERIAL_TYPES = frozenset({"serial", "bigserial", "smallserial", "serial2", "serial4", "serial8"})

# DropStmt removeType -> (object kind for messages, kind key for down-revert matching)
DROP_KINDS = {
    "OBJECT_TABLE": "table",
    "OBJECT_INDEX": "index",
    "OBJECT_VIEW": "view",
    "OBJECT_MATVIEW": "materialized view",
    "OBJECT_SEQUENCE": "sequence",
    "OBJECT_TYPE": "type",
    "OBJECT_DOMAIN": "type",
    "OBJECT_FUNCTION": "function",
    "OBJECT_PROCEDURE": "function",
    "OBJECT_ROUTINE": "function",
    "OBJECT_SCHEMA": "schema",
    "OBJECT_TRIGGER": "trigger",
    "OBJECT_POLICY": "policy",
    "OBJECT_EXTENSION": "extension",
    "OBJECT_FOREIGN_TABLE": "table",
}


@dataclass
class LintState:
    """What earlier migrations of the folder established (carried in version order)."""

    validated_not_null: set[tuple[str, str]] = field(default_factory=set)  # (table, column)
    not_valid_checks: dict[str, tuple[str, str]] = field(default_factory=dict)  # constraint -> (table, column)
    known_constraints: set[str] = field(default_factory=set)  # every constraint name the folder added


def _strings(items: list[Any] | None) -> list[str]:
    out = []
    for it in items or ():
        if "String" in it:
            out.append(it["String"].get("sval", ""))
    return out


def _rel(rv: dict[str, Any] | None) -> str:
    return (rv or {}).get("relname", "").lower()


def _qual(rv: dict[str, Any] | None) -> str:
    rv = rv or {}
    return ".".join(p for p in (rv.get("schemaname"), rv.get("relname")) if p)


def _last(names: list[str]) -> str:
    return names[-1].lower() if names else ""


def _walk(node: Any) -> Any:
    """Yield every dict in a JSON parse tree."""
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, dict):
            yield n
            stack.extend(n.values())
        elif isinstance(n, list):
            stack.extend(n)


_STABLE: dict[str, list[tuple[int, int | None]]] | None = None
_VOLATILE_OVERLOADS: dict[str, list[tuple[int, int | None]]] = {}


def _stable_functions() -> dict[str, list[tuple[int, int | None]]]:
    """PostgreSQL's non-volatile built-ins: name -> argument-count ranges (read once, when first needed)."""
    global _STABLE
    if _STABLE is None:
        table: dict[str, list[tuple[int, int | None]]] = {}
        text = (Path(__file__).parent / "stable_functions.txt").read_text(encoding="utf-8")
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            name, *spans = line.split()
            ranges = []
            for span in spans:
                low, _, high = span.partition("-")
                ranges.append((int(low), None if high == "*" else int(high)))
            if name.startswith("!"):
                _VOLATILE_OVERLOADS[name[1:]] = ranges
            else:
                table[name] = ranges
        _STABLE = table
    return _STABLE


def _fits(ranges: list[tuple[int, int | None]], nargs: int) -> bool:
    return any(low <= nargs and (high is None or nargs <= high) for low, high in ranges)


def _volatile_call(expr: Any) -> tuple[str, bool] | None:
    """The first function call in ``expr`` not provably stable: (name, known volatile), else None.

    Stable means a built-in (pg_catalog) function whose every overload with that many arguments is
    IMMUTABLE or STABLE; an unknown, user-defined or extension function, or a built-in called with
    an argument count it does not take, counts as volatile (squawk's rule, and PostgreSQL's own:
    only a non-volatile default avoids the rewrite).
    """
    for d in _walk(expr):
        fc = d.get("FuncCall")
        if not fc:
            continue
        names = [n.lower() for n in _strings(fc.get("funcname"))]
        name = names[-1] if names else ""
        if name in VOLATILE_FUNCTIONS:
            return name, True
        nargs = len(fc.get("args") or ())
        stable = _stable_functions()
        builtin = len(names) == 1 or names[:-1] == ["pg_catalog"]
        if not (builtin and _fits(stable.get(name, []), nargs)) or _fits(_VOLATILE_OVERLOADS.get(name, []), nargs):
            return ".".join(names), False
    return None


def _not_null_check_column(expr: Any) -> str | None:
    """``col`` when ``expr`` is exactly ``col IS NOT NULL``."""
    nt = (expr or {}).get("NullTest")
    if not nt or nt.get("nulltesttype") != "IS_NOT_NULL":
        return None
    ref = (nt.get("arg") or {}).get("ColumnRef")
    if not ref:
        return None
    return _last(_strings(ref.get("fields")))


def _constraints(coldef: dict[str, Any]) -> list[dict[str, Any]]:
    return [c["Constraint"] for c in coldef.get("constraints") or () if "Constraint" in c]


def _f(rule: str, pf: ParsedFile, st: Statement, message: str) -> Finding:
    return finding(rule, pf.file, message, st.line, st.column, offset=st.start)


@dataclass
class _FileScope:
    """What one up file has done so far, for the rules that look back within the file."""

    pf: ParsedFile
    created: set[str] = field(default_factory=set)
    not_valid_here: dict[str, int] = field(default_factory=dict)  # constraint -> line, in the open transaction
    externally_validated: set[str] = field(default_factory=set)  # tables: VALIDATE of a constraint not seen
    _in_transaction: bool | None = None

    @property
    def in_transaction(self) -> bool:
        """Whether the statement being looked at shares a transaction with the ones before it."""
        if self._in_transaction is None:  # migrator wraps the file in one transaction unless it cannot
            self._in_transaction = not self.pf.non_transactional()
        return self._in_transaction

    def transaction_statement(self, node: dict[str, Any]) -> None:
        kind = node.get("kind", "")
        if kind in ("TRANS_STMT_BEGIN", "TRANS_STMT_START"):
            if not self.in_transaction:
                self.not_valid_here.clear()
            self._in_transaction = True
        elif kind in ("TRANS_STMT_COMMIT", "TRANS_STMT_ROLLBACK", "TRANS_STMT_COMMIT_PREPARED",
                      "TRANS_STMT_PREPARE"):
            self._in_transaction = False
            self.not_valid_here.clear()


def lint_up(pf: ParsedFile, state: LintState) -> list[Finding]:
    """Locking and data-loss rules for an up file."""
    out: list[Finding] = []
    scope = _FileScope(pf)
    created = scope.created
    for st in pf.statements:
        kind, node = st.kind, st.node
        if kind == "TransactionStmt":
            scope.transaction_statement(node)
        elif kind == "CreateStmt":
            created.add(_rel(node.get("relation")))
        elif kind == "CreateTableAsStmt":
            created.add(_rel((node.get("into") or {}).get("rel")))
        elif kind == "AlterTableStmt" and node.get("objtype", "OBJECT_TABLE") == "OBJECT_TABLE":
            out.extend(_alter_table(pf, st, node, scope, state))
        elif kind == "IndexStmt":
            table = _rel(node.get("relation"))
            if not node.get("concurrent") and table not in created:
                idx = node.get("idxname") or "(unnamed)"
                out.append(
                    _f("MIG003", pf, st, f"CREATE INDEX {idx} on existing table {_qual(node.get('relation'))} "
                       "without CONCURRENTLY blocks writes to the table until the index is built")
                )
        elif kind == "DropStmt":
            rt = node.get("removeType")
            names = _drop_names(node)
            if rt == "OBJECT_TABLE":
                lost = [n for n in names if n.split(".")[-1] not in created]
                if lost:
                    out.append(_f("MIG007", pf, st, f"DROP TABLE {', '.join(lost)} deletes its data for good"))
            elif rt == "OBJECT_INDEX" and not node.get("concurrent"):
                out.append(
                    _f("MIG016", pf, st, f"DROP INDEX {', '.join(names)} without CONCURRENTLY blocks reads and "
                       "writes on its table")
                )
        elif kind == "RenameStmt":
            rt = node.get("renameType")
            rel = _qual(node.get("relation"))
            if rt == "OBJECT_COLUMN" and node.get("relationType") in (None, "OBJECT_TABLE"):
                out.append(
                    _f("MIG008", pf, st, f"renaming column {rel}.{node.get('subname')} to {node.get('newname')} "
                       "breaks application versions still running with the old name")
                )
            elif rt == "OBJECT_TABLE":
                out.append(
                    _f("MIG009", pf, st, f"renaming table {rel} to {node.get('newname')} breaks application "
                       "versions still running with the old name")
                )
        elif kind in ("UpdateStmt", "DeleteStmt"):
            table = _rel(node.get("relation"))
            if "whereClause" not in node and table not in created:
                verb = "UPDATE" if kind == "UpdateStmt" else "DELETE"
                out.append(
                    _f("MIG010", pf, st, f"{verb} on {_qual(node.get('relation'))} without WHERE changes every "
                       "row in one transaction")
                )
        elif kind == "TruncateStmt":
            rels = [_qual(r.get("RangeVar")) for r in node.get("relations") or ()]
            lost = [r for r in rels if r.split(".")[-1].lower() not in created]
            if lost:
                cascade = " CASCADE (also empties every table referencing it)" if node.get("behavior") == \
                    "DROP_CASCADE" else ""
                out.append(_f("MIG017", pf, st, f"TRUNCATE {', '.join(lost)}{cascade} deletes its data for good"))
        elif kind == "DropdbStmt":
            out.append(_f("MIG015", pf, st, f"DROP DATABASE {node.get('dbname')} in a migration"))
    return out


def _alter_table(
    pf: ParsedFile, st: Statement, node: dict[str, Any], scope: _FileScope, state: LintState
) -> list[Finding]:
    out: list[Finding] = []
    table = _rel(node.get("relation"))
    qual = _qual(node.get("relation"))
    existing = table not in scope.created
    for c in node.get("cmds") or ():
        cmd = c.get("AlterTableCmd", {})
        sub = cmd.get("subtype")
        d = cmd.get("def") or {}
        if sub == "AT_AddColumn" and "ColumnDef" in d and existing:
            out.extend(_add_column(pf, st, qual, d["ColumnDef"]))
        elif sub in ("AT_SetLogged", "AT_SetUnLogged") and existing:
            what = "LOGGED" if sub == "AT_SetLogged" else "UNLOGGED"
            out.append(
                _f("MIG018", pf, st, f"SET {what} on {qual} rewrites the whole table (and its indexes) under an "
                   "ACCESS EXCLUSIVE lock, blocking reads and writes")
            )
        elif sub == "AT_SetNotNull" and existing:
            cname = (cmd.get("name") or "").lower()
            if (table, cname) not in state.validated_not_null and table not in scope.externally_validated:
                out.append(
                    _f("MIG002", pf, st, f"SET NOT NULL on {qual}.{cname} scans the whole table under an ACCESS "
                       f"EXCLUSIVE lock; no validated CHECK ({cname} IS NOT NULL) precedes it")
                )
        elif sub == "AT_AlterColumnType" and existing:
            out.append(
                _f("MIG005", pf, st, f"changing the type of {qual}.{cmd.get('name')} can rewrite the table and its "
                   "indexes under an ACCESS EXCLUSIVE lock")
            )
        elif sub == "AT_DropColumn":
            out.append(
                _f("MIG006", pf, st, f"DROP COLUMN {qual}.{cmd.get('name')} deletes its data for good and breaks "
                   "code still reading it")
            )
        elif sub == "AT_AddConstraint" and "Constraint" in d:
            con = d["Constraint"]
            out.extend(_add_constraint(pf, st, table, qual, con, existing, state))
            if con.get("skip_validation") and con.get("conname") and existing:
                scope.not_valid_here[con["conname"]] = st.line
        elif sub == "AT_ValidateConstraint":
            name = cmd.get("name") or ""
            checked = state.not_valid_checks.get(name)
            if checked and checked[0] == table:
                state.validated_not_null.add(checked)
            elif name not in state.known_constraints:
                # added outside the folder (squawk's cross-migration case): trust the recipe on this table
                scope.externally_validated.add(table)
            if name in scope.not_valid_here and scope.in_transaction:
                out.append(
                    _f("MIG004", pf, st, f"VALIDATE CONSTRAINT {name} in the same transaction as its ADD ... NOT "
                       f"VALID (line {scope.not_valid_here[name]}) keeps that lock while every row is checked, "
                       "blocking writes (reads too for a CHECK); validate it in a later migration")
                )
    return out


def _add_column(pf: ParsedFile, st: Statement, qual: str, col: dict[str, Any]) -> list[Finding]:
    """ALTER TABLE ... ADD COLUMN on an existing table: NOT NULL without default, rewrites, index builds."""
    out: list[Finding] = []
    cname = col.get("colname")
    cons = _constraints(col)
    types = {x.get("contype") for x in cons}
    default = next((x for x in cons if x.get("contype") == "CONSTR_DEFAULT"), None)
    type_name = _last(_strings((col.get("typeName") or {}).get("names")))
    generated = types & {"CONSTR_GENERATED", "CONSTR_IDENTITY"}
    if types & {"CONSTR_NOTNULL", "CONSTR_PRIMARY"} and default is None and not generated \
            and type_name not in SERIAL_TYPES:
        out.append(
            _f("MIG001", pf, st, f"adding NOT NULL column {qual}.{cname} without a DEFAULT fails on a "
               "table with rows")
        )
    volatile = _volatile_call(default.get("raw_expr")) if default else None
    if volatile:
        fname, known = volatile
        what = f"the volatile default {fname}()" if known else (
            f"a default calling {fname}(), which is not a built-in function known to be stable with those "
            "arguments, so it counts as volatile")
        out.append(
            _f("MIG013", pf, st, f"column {qual}.{cname} gets {what}: the table is rewritten under an ACCESS "
               "EXCLUSIVE lock (if the function is IMMUTABLE or STABLE, say so in a migrator:allow comment)")
        )
    elif "CONSTR_GENERATED" in types or "CONSTR_IDENTITY" in types or type_name in SERIAL_TYPES:
        what = "an identity/serial" if "CONSTR_GENERATED" not in types else "a stored generated"
        out.append(
            _f("MIG013", pf, st, f"column {qual}.{cname} is {what} column: filling it rewrites the table "
               "under an ACCESS EXCLUSIVE lock")
        )
    if types & {"CONSTR_UNIQUE", "CONSTR_PRIMARY"}:
        out.append(
            _f("MIG014", pf, st, f"column {qual}.{cname} with UNIQUE/PRIMARY KEY builds an index that "
               "blocks reads and writes")
        )
    for fk in (x for x in cons if x.get("contype") == "CONSTR_FOREIGN"):
        out.append(
            _f("MIG004", pf, st, f"ADD COLUMN {qual}.{cname} REFERENCES {_qual(fk.get('pktable'))} locks both "
               "tables (SHARE ROW EXCLUSIVE on the referenced one) and cannot be NOT VALID; add the column "
               "plain, then ADD CONSTRAINT ... FOREIGN KEY ... NOT VALID, and VALIDATE it in a later migration")
        )
    return out


def _add_constraint(pf: ParsedFile, st: Statement, table: str, qual: str, con: dict[str, Any], existing: bool,
                    state: LintState) -> list[Finding]:
    """ALTER TABLE ... ADD CONSTRAINT: remembers NOT NULL checks; on an existing table, validation and index builds."""
    ctype = con.get("contype")
    name = con.get("conname") or "(unnamed)"
    if con.get("conname"):
        state.known_constraints.add(con["conname"])
    if ctype == "CONSTR_CHECK":
        col = _not_null_check_column(con.get("raw_expr"))
        if col:
            if con.get("skip_validation"):
                state.not_valid_checks[name] = (table, col)
            else:
                state.validated_not_null.add((table, col))
    if not existing:
        return []
    if ctype in ("CONSTR_FOREIGN", "CONSTR_CHECK") and not con.get("skip_validation"):
        what = "FOREIGN KEY" if ctype == "CONSTR_FOREIGN" else "CHECK"
        return [
            _f("MIG004", pf, st, f"adding {what} constraint {name} on {qual} without NOT VALID checks "
               "every row while blocking writes")
        ]
    if ctype in ("CONSTR_UNIQUE", "CONSTR_PRIMARY") and not con.get("indexname"):
        what = "UNIQUE" if ctype == "CONSTR_UNIQUE" else "PRIMARY KEY"
        return [
            _f("MIG014", pf, st, f"adding {what} constraint {name} on {qual} builds an index that blocks "
               "reads and writes")
        ]
    return []


def _drop_names(node: dict[str, Any]) -> list[str]:
    """Dotted names of a DropStmt's objects (functions without arguments, triggers as table.trigger)."""
    names = []
    for obj in node.get("objects") or ():
        if "List" in obj:
            names.append(".".join(_strings(obj["List"].get("items"))))
        elif "ObjectWithArgs" in obj:
            names.append(".".join(_strings(obj["ObjectWithArgs"].get("objname"))))
        elif "TypeName" in obj:
            names.append(".".join(_strings(obj["TypeName"].get("names"))))
        elif "String" in obj:
            names.append(obj["String"].get("sval", ""))
    return names


# ---- down files


@dataclass
class Created:
    """An object an up file creates, to be found again in its down file."""

    kind: str
    name: str
    table: str = ""
    line: int = 0
    columns: frozenset[str] = frozenset()  # for constraints: the columns they involve


def created_objects(pf: ParsedFile) -> list[Created]:
    """Tables, columns, indexes, constraints, types, views, functions, sequences, schemas, triggers."""
    out: list[Created] = []
    for st in pf.statements:
        kind, node = st.kind, st.node
        if kind == "CreateStmt":
            out.append(Created("table", _rel(node.get("relation")), line=st.line))
        elif kind == "CreateTableAsStmt":
            into = (node.get("into") or {}).get("rel")
            k = "materialized view" if node.get("objtype") == "OBJECT_MATVIEW" else "table"
            out.append(Created(k, _rel(into), line=st.line))
        elif kind == "ViewStmt":
            if not node.get("replace"):
                out.append(Created("view", _rel(node.get("view")), line=st.line))
        elif kind == "IndexStmt" and node.get("idxname"):
            out.append(Created("index", node["idxname"].lower(), table=_rel(node.get("relation")), line=st.line))
        elif kind in ("CreateEnumStmt", "CreateRangeStmt"):
            out.append(Created("type", _last(_strings(node.get("typeName"))), line=st.line))
        elif kind == "CompositeTypeStmt":
            out.append(Created("type", _rel(node.get("typevar")), line=st.line))
        elif kind == "CreateDomainStmt":
            out.append(Created("type", _last(_strings(node.get("domainname"))), line=st.line))
        elif kind == "CreateFunctionStmt" and not node.get("replace"):
            out.append(Created("function", _last(_strings(node.get("funcname"))), line=st.line))
        elif kind == "CreateSeqStmt":
            out.append(Created("sequence", _rel(node.get("sequence")), line=st.line))
        elif kind == "CreateSchemaStmt":
            out.append(Created("schema", (node.get("schemaname") or "").lower(), line=st.line))
        elif kind == "CreateTrigStmt" and not node.get("replace"):
            out.append(
                Created("trigger", (node.get("trigname") or "").lower(), table=_rel(node.get("relation")),
                        line=st.line)
            )
        elif kind == "CreatePolicyStmt":
            out.append(
                Created("policy", (node.get("policy_name") or "").lower(), table=_rel(node.get("table")),
                        line=st.line)
            )
        elif kind == "DropStmt":  # created and dropped again in the same up file: nothing to revert
            key = DROP_KINDS.get(node.get("removeType", ""), "")
            gone = {n.split(".")[-1].lower() for n in _drop_names(node)}
            out = [o for o in out if not ((o.kind == key and o.name in gone) or (key == "table" and o.table in gone))]
        elif kind == "AlterTableStmt" and node.get("objtype", "OBJECT_TABLE") == "OBJECT_TABLE":
            table = _rel(node.get("relation"))
            for c in node.get("cmds") or ():
                cmd = c.get("AlterTableCmd", {})
                d = cmd.get("def") or {}
                if cmd.get("subtype") in ("AT_DropColumn", "AT_DropConstraint"):
                    what = "column" if cmd.get("subtype") == "AT_DropColumn" else "constraint"
                    name = (cmd.get("name") or "").lower()
                    out = [o for o in out if not (o.kind == what and o.table == table and o.name == name)]
                elif cmd.get("subtype") == "AT_AddColumn" and "ColumnDef" in d:
                    out.append(Created("column", (d["ColumnDef"].get("colname") or "").lower(), table, st.line))
                elif cmd.get("subtype") == "AT_AddConstraint" and "Constraint" in d and d["Constraint"].get("conname"):
                    con = d["Constraint"]
                    out.append(Created("constraint", con["conname"].lower(), table, st.line, _constraint_columns(con)))
    return out


def _constraint_columns(con: dict[str, Any]) -> frozenset[str]:
    cols = set(_strings(con.get("keys"))) | set(_strings(con.get("fk_attrs")))
    for d in _walk(con.get("raw_expr")):
        ref = d.get("ColumnRef")
        if ref:
            cols.add(_last(_strings(ref.get("fields"))))
    return frozenset(c.lower() for c in cols)


@dataclass
class _DownDrops:
    """What a down file drops (or recreates), to check the up's objects against."""

    dropped: dict[str, set[str]] = field(default_factory=dict)  # kind -> bare names
    columns: set[tuple[str, str]] = field(default_factory=set)  # (table, column)
    constraints: set[tuple[str, str]] = field(default_factory=set)  # (table, constraint)
    recreated_functions: set[str] = field(default_factory=set)
    cascaded_schemas: set[str] = field(default_factory=set)


def lint_down(down: ParsedFile, up: ParsedFile | None) -> list[Finding]:
    """Rollback rules: IF EXISTS on drops, and every object the up creates is dropped again."""
    out: list[Finding] = []
    drops = _scan_down(down, out)
    if up is None or up.error is not None or down.error is not None or not down.statements:
        return out  # nothing to compare with (an empty down is reported as such)
    for obj in created_objects(up):
        if drops.cascaded_schemas:
            break  # DROP SCHEMA ... CASCADE takes everything with it
        if not _undone(obj, drops):
            where = f" on {obj.table}" if obj.table else ""
            out.append(
                finding(
                    "MIG012",
                    down.file,
                    f"does not drop {obj.kind} {obj.name}{where} created at line {obj.line} of {Path(up.file).name}",
                )
            )
    return out


def _scan_down(down: ParsedFile, out: list[Finding]) -> _DownDrops:
    """Collect the down's drops, and report drops without IF EXISTS and whole-table data changes."""
    drops = _DownDrops()
    for st in down.statements:
        kind, node = st.kind, st.node
        if kind == "DropStmt":
            rt = node.get("removeType", "")
            names = _drop_names(node)
            key = DROP_KINDS.get(rt, rt)
            for n in names:
                drops.dropped.setdefault(key, set()).add(n.split(".")[-1].lower())
                if key == "schema" and node.get("behavior") == "DROP_CASCADE":
                    drops.cascaded_schemas.add(n.lower())
            if not node.get("missing_ok"):
                what = rt.removeprefix("OBJECT_").replace("_", " ")
                out.append(
                    _f("MIG011", down, st, f"DROP {what} {', '.join(names)} without IF EXISTS fails the rollback "
                       "when the up file stopped before creating it")
                )
        elif kind == "AlterTableStmt":
            table = _rel(node.get("relation"))
            for c in node.get("cmds") or ():
                cmd = c.get("AlterTableCmd", {})
                sub = cmd.get("subtype")
                name = (cmd.get("name") or "").lower()
                if sub == "AT_DropColumn":
                    drops.columns.add((table, name))
                elif sub == "AT_DropConstraint":
                    drops.constraints.add((table, name))
                else:
                    continue
                if not cmd.get("missing_ok"):
                    what = "COLUMN" if sub == "AT_DropColumn" else "CONSTRAINT"
                    out.append(
                        _f("MIG011", down, st, f"DROP {what} {name} on {_qual(node.get('relation'))} without IF "
                           "EXISTS fails the rollback when the up file stopped before creating it")
                    )
        elif kind == "CreateFunctionStmt":
            drops.recreated_functions.add(_last(_strings(node.get("funcname"))))
        elif kind in ("UpdateStmt", "DeleteStmt") and "whereClause" not in node:
            verb = "UPDATE" if kind == "UpdateStmt" else "DELETE"
            out.append(_f("MIG010", down, st, f"{verb} on {_qual(node.get('relation'))} without WHERE changes "
                          "every row in one transaction"))
        elif kind == "DropdbStmt":
            out.append(_f("MIG015", down, st, f"DROP DATABASE {node.get('dbname')} in a migration"))
    return drops


def _undone(obj: Created, drops: _DownDrops) -> bool:
    """Whether the down drops ``obj`` (directly, with its table or column, or by recreating a function)."""
    dropped = drops.dropped
    if obj.kind in ("column", "constraint", "index", "trigger", "policy"):
        ok = obj.table in dropped.get("table", set())
        if obj.kind == "column":
            return ok or (obj.table, obj.name) in drops.columns
        if obj.kind == "constraint":
            return ok or (obj.table, obj.name) in drops.constraints or any(
                (obj.table, c) in drops.columns for c in obj.columns
            )
        if obj.kind == "index":
            return ok or obj.name in dropped.get("index", set())
        return ok or obj.name in dropped.get(obj.kind, set())
    if obj.kind == "function":
        return obj.name in dropped.get("function", set()) or obj.name in drops.recreated_functions
    if obj.kind == "materialized view":
        return obj.name in dropped.get("materialized view", set())
    return obj.name in dropped.get(obj.kind, set())
