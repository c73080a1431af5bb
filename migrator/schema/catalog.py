"""One database's schema read from PostgreSQL's catalog, as plain data that compares and caches.

Catalog queries rather than ``pg_dump --schema-only`` text: each object comes back with its kind,
its name and the table it belongs to, so a difference is reported as one line naming the object
and the attribute that differs (``~ column users.phone type text != varchar(20)``), never as a hunk
of a text diff; it needs no pg_dump of the server's major version; and it reads a 500-table schema
in a fraction of a second over one connection. ``verify-roundtrip`` keeps pg_dump text, because
there a diff of the whole dump is what a person wants to read.

What is read (in the application's schemas: every schema but ``pg_catalog``, ``information_schema``,
``pg_toast`` and temporary ones; objects that belong to an extension are the extension's): schemas,
extensions, types (enum, domain, composite, range), tables (and their partitioning, inheritance,
row-level security), columns, constraints, indexes (with validity), sequences, views, materialized
views, functions and procedures, triggers, RLS policies and grants. Not compared: owners (a scratch
build is owned by whoever runs it), column order, comments, statistics and data (sequence values).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import psycopg

# Bump when what is captured changes: cached expected schemas of another format are rebuilt.
FORMAT = 3  # 3: grants name the object they belong to ("of")

# The order objects are reported in.
KINDS = (
    "schema", "extension", "type", "table", "foreign table", "column", "constraint", "index", "sequence",
    "view", "materialized view", "function", "procedure", "aggregate", "trigger", "policy", "grant",
)

Catalog = dict[str, dict[str, Any]]
"""``{"<kind> <name>": {"kind", "name", "table", "attrs": {attribute: text}}}``, JSON-ready."""

_RELKINDS = {"r": "table", "p": "table", "f": "foreign table", "v": "view", "m": "materialized view",
             "S": "sequence"}
_TYPE_ALIASES = (
    ("character varying", "varchar"), ("character", "char"), ("timestamp without time zone", "timestamp"),
    ("timestamp with time zone", "timestamptz"), ("time without time zone", "time"),
    ("time with time zone", "timetz"), ("double precision", "float8"), ("boolean", "bool"),
)
_TYPE_ALIAS_RE = re.compile(r"^(" + "|".join(re.escape(a) for a, _ in _TYPE_ALIASES) + r")(?=$|\(|\[)")


def short_type(name: str | None) -> str:
    """``character varying(20)`` -> ``varchar(20)``: the names people write in migrations."""
    if not name:
        return ""
    return _TYPE_ALIAS_RE.sub(lambda m: dict(_TYPE_ALIASES)[m.group(1)], name)


_NAMESPACES = r"""
SELECT n.oid, n.nspname FROM pg_namespace n
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)'
  AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_namespace'::regclass AND e.objid = n.oid
                  AND e.deptype = 'e')
"""

_SKIPPED = """
WITH t AS (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = %(schema)s AND c.relname = ANY(%(names)s) AND c.relkind IN ('r', 'p'))
SELECT oid FROM t
UNION SELECT d.objid FROM pg_depend d JOIN t ON t.oid = d.refobjid
      WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
"""

_RELATIONS = """
SELECT c.oid, n.nspname, c.relname, c.relkind, c.relpersistence, c.relrowsecurity, c.relforcerowsecurity,
       CASE WHEN c.relispartition THEN pg_get_expr(c.relpartbound, c.oid) END,
       CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END,
       CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END,
       (SELECT string_agg(pn.nspname || '.' || pc.relname, ', ' ORDER BY i.inhseqno)
          FROM pg_inherits i JOIN pg_class pc ON pc.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = pc.relnamespace
         WHERE i.inhrelid = c.oid),
       format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle,
       (SELECT d.deptype::text || ' ' || rn.nspname || '.' || rc.relname || '.' || a.attname
          FROM pg_depend d JOIN pg_class rc ON rc.oid = d.refobjid JOIN pg_namespace rn ON rn.oid = rc.relnamespace
          JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
         WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass
           AND d.deptype IN ('a', 'i') LIMIT 1)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_sequence s ON s.seqrelid = c.oid
WHERE c.relnamespace = ANY(%(ns)s) AND c.relkind IN ('r', 'p', 'f', 'v', 'm', 'S') AND NOT (c.oid = ANY(%(skip)s))
  AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_class'::regclass AND e.objid = c.oid
                  AND e.deptype = 'e')
"""

_COLUMNS = """
SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid),
       a.attidentity, a.attgenerated, CASE WHEN a.attcollation <> t.typcollation THEN co.collname END
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
LEFT JOIN pg_collation co ON co.oid = a.attcollation
WHERE a.attrelid = ANY(%(tables)s) AND a.attnum > 0 AND NOT a.attisdropped
"""

_CONSTRAINTS = """
SELECT k.conrelid, k.conname, k.contype, pg_get_constraintdef(k.oid), k.convalidated
FROM pg_constraint k WHERE k.conrelid = ANY(%(tables)s)
"""

_INDEXES = """
SELECT i.indrelid, n.nspname, c.relname, pg_get_indexdef(i.indexrelid), i.indisvalid, i.indisready
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE i.indrelid = ANY(%(rels)s)
  AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid
                  AND k.contype IN ('p', 'u', 'x'))
"""

_FUNCTIONS = """
SELECT p.oid, n.nspname, p.proname, pg_get_function_identity_arguments(p.oid), p.prokind,
       CASE WHEN p.prokind <> 'a' THEN pg_get_functiondef(p.oid) END, pg_get_function_result(p.oid)
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE p.pronamespace = ANY(%(ns)s)
  AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_proc'::regclass AND e.objid = p.oid
                  AND e.deptype = 'e')
"""

_TRIGGERS = """
SELECT t.tgrelid, t.tgname, pg_get_triggerdef(t.oid), t.tgenabled
FROM pg_trigger t WHERE t.tgrelid = ANY(%(rels)s) AND NOT t.tgisinternal
"""

_POLICIES = """
SELECT p.polrelid, p.polname, p.polcmd, p.polpermissive,
       (SELECT string_agg(CASE WHEN r = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(r) END, ', ' ORDER BY 1)
          FROM unnest(p.polroles) r),
       pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)
FROM pg_policy p WHERE p.polrelid = ANY(%(tables)s)
"""

_EXTENSIONS = """
SELECT e.extname, e.extversion, n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
"""

_TYPES = """
SELECT n.nspname, t.typname, t.typtype,
       (SELECT string_agg(quote_literal(enumlabel), ', ' ORDER BY enumsortorder) FROM pg_enum WHERE enumtypid = t.oid),
       CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) END, t.typnotnull, t.typdefault,
       (SELECT string_agg(k.conname || ' ' || pg_get_constraintdef(k.oid), '; ' ORDER BY k.conname)
          FROM pg_constraint k WHERE k.contypid = t.oid),
       (SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod), ', ' ORDER BY a.attnum)
          FROM pg_attribute a WHERE t.typtype = 'c' AND a.attrelid = t.typrelid AND a.attnum > 0
           AND NOT a.attisdropped),
       (SELECT format_type(r.rngsubtype, NULL) FROM pg_range r WHERE r.rngtypid = t.oid)
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE t.typnamespace = ANY(%(ns)s) AND t.typtype IN ('e', 'd', 'c', 'r')
  AND (t.typtype <> 'c' OR (SELECT c.relkind FROM pg_class c WHERE c.oid = t.typrelid) = 'c')
  AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_type'::regclass AND e.objid = t.oid
                  AND e.deptype = 'e')
"""

# Grants, NULL ACLs read as their defaults (acldefault) so that a REVOKE of a default shows.
_GRANTS = """
SELECT CASE c.relkind WHEN 'S' THEN 'sequence' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
                      WHEN 'f' THEN 'foreign table' ELSE 'table' END,
       n.nspname || '.' || c.relname, a.grantee, a.privilege_type, a.is_grantable
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
     aclexplode(coalesce(c.relacl, acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::"char", c.relowner))) a
WHERE c.oid = ANY(%(rels)s) AND a.grantee <> c.relowner
UNION ALL
SELECT 'column', n.nspname || '.' || c.relname || '.' || at.attname, a.grantee, a.privilege_type, a.is_grantable
FROM pg_attribute at JOIN pg_class c ON c.oid = at.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace,
     aclexplode(at.attacl) a
WHERE at.attrelid = ANY(%(tables)s) AND at.attacl IS NOT NULL AND a.grantee <> c.relowner
UNION ALL
SELECT CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' ELSE 'function' END,
       n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
       a.grantee, a.privilege_type, a.is_grantable
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace,
     aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
WHERE p.oid = ANY(%(procs)s) AND a.grantee <> p.proowner
UNION ALL
SELECT 'schema', n.nspname, a.grantee, a.privilege_type, a.is_grantable
FROM pg_namespace n, aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
WHERE n.oid = ANY(%(ns)s) AND a.grantee <> n.nspowner
"""


_PUBLIC_RE = re.compile(r"(?:^|(?<=[ (,]))public\.")


def display(name: str) -> str:
    """The name as reported: ``public.`` is left out (``users.phone``), other schemas are kept."""
    return _PUBLIC_RE.sub("", name)


def _add(out: Catalog, kind: str, name: str, attrs: dict[str, Any], table: str | None = None,
         of: str | None = None) -> None:
    """One object under its key ``kind name``; ``of`` is the key of the object it belongs to (a grant's)."""
    clean = {k: _text(v) for k, v in attrs.items() if v is not None and v != ""}
    out[f"{kind} {name}"] = {"kind": kind, "name": name, "table": table, "attrs": clean}
    if of:
        out[f"{kind} {name}"]["of"] = of


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "\n".join(line.rstrip() for line in str(value).strip().splitlines())


def capture(conn: psycopg.Connection, exclude: Iterable[tuple[str, str]] = ()) -> Catalog:
    """The schema of the database ``conn`` is connected to; ``exclude`` names (schema, table) pairs left
    out with everything that belongs to them (the migrator's own state, history and alerts tables)."""
    out: Catalog = {}
    namespaces = conn.execute(_NAMESPACES).fetchall()
    ns = [oid for oid, _ in namespaces]
    for _, name in namespaces:
        _add(out, "schema", name, {})
    skip: list[int] = []
    for schema, names in _group(exclude).items():
        skip += [r[0] for r in conn.execute(_SKIPPED, {"schema": schema, "names": names}).fetchall()]
    rels: dict[int, str] = {}
    tables: list[int] = []
    for (oid, nsp, rel, relkind, persistence, rls, force_rls, bound, partkey, viewdef, parents, seqtype, start,
         increment, minv, maxv, cache, cycle, owned) in conn.execute(_RELATIONS, {"ns": ns, "skip": skip}):
        name = f"{nsp}.{rel}"
        kind = _RELKINDS[relkind]
        if kind == "sequence":
            if owned and owned.startswith("i "):
                continue  # an identity column's sequence: the column's identity says it
            _add(out, kind, name, {"type": short_type(seqtype), "start": start, "increment": increment, "min": minv,
                                   "max": maxv, "cache": cache, "cycle": cycle,
                                   "owned by": display(owned[2:]) if owned else None})
            rels[oid] = name
            continue
        rels[oid] = name
        if kind in ("view", "materialized view"):
            _add(out, kind, name, {"definition": viewdef})
            continue
        tables.append(oid)
        partition_of = f"{display(parents)} {bound}" if bound else None  # a partition's parent and its bounds
        _add(out, kind, name, {"unlogged": persistence == "u" or None, "partition of": partition_of,
                               "partitioned by": partkey, "inherits": None if bound else parents,
                               "row level security": rls or None, "forced row level security": force_rls or None})
    params = {"ns": ns, "rels": list(rels), "tables": tables}
    for relid, col, typ, notnull, default, identity, generated, collation in conn.execute(_COLUMNS, params):
        table = rels[relid]
        attrs: dict[str, Any] = {"type": short_type(typ), "not null": notnull or None, "collation": collation}
        if generated:
            attrs["generated"] = default
        else:
            attrs["default"] = default
        attrs["identity"] = {"a": "always", "d": "by default"}.get(identity or "")
        _add(out, "column", f"{table}.{col}", attrs, table)
    for relid, conname, _contype, definition, validated in conn.execute(_CONSTRAINTS, params):
        table = rels[relid]
        _add(out, "constraint", f"{table}.{conname}", {"definition": definition, "validated": validated}, table)
    for relid, nsp, index, definition, valid, ready in conn.execute(_INDEXES, params):
        table = rels[relid]
        _add(out, "index", f"{nsp}.{index}", {"definition": _index_definition(definition, index),
                                              "valid": valid and ready}, table)
    procs: list[int] = []
    for oid, nsp, proname, args, prokind, definition, result in conn.execute(_FUNCTIONS, params):
        procs.append(oid)
        kind = {"p": "procedure", "a": "aggregate"}.get(prokind, "function")
        _add(out, kind, f"{nsp}.{proname}({args})", {"definition": definition or f"returns {result}"})
    for relid, tgname, definition, enabled in conn.execute(_TRIGGERS, params):
        table = rels[relid]
        _add(out, "trigger", f"{table}.{tgname}", {
            "definition": definition, "enabled": {"O": None, "D": "disabled", "R": "replica", "A": "always"}[enabled]
        }, table)
    commands = {"r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE", "*": "ALL"}
    for relid, polname, cmd, permissive, roles, qual, check in conn.execute(_POLICIES, params):
        table = rels[relid]
        _add(out, "policy", f"{table}.{polname}", {
            "command": commands.get(cmd, cmd), "permissive": "yes" if permissive else "restrictive", "to": roles,
            "using": qual, "with check": check}, table)
    for extname, version, nsp in conn.execute(_EXTENSIONS):
        _add(out, "extension", extname, {"version": version, "schema": nsp})
    for nsp, typname, typtype, labels, base, notnull, default, checks, fields, subtype in conn.execute(_TYPES, params):
        what = {"e": "enum", "d": "domain", "c": "composite", "r": "range"}[typtype]
        _add(out, "type", f"{nsp}.{typname}", {
            "kind": what, "labels": labels, "base": short_type(base), "not null": notnull or None, "default": default,
            "checks": checks, "fields": fields, "subtype": subtype})
    _grants(out, conn, {**params, "procs": procs})
    return out


def _group(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for schema, table in pairs:
        grouped.setdefault(schema, []).append(table)
    return grouped


def _index_definition(definition: str, name: str) -> str:
    """``CREATE UNIQUE INDEX x ON public.t USING btree (a)`` -> ``UNIQUE ON public.t USING btree (a)``."""
    m = re.match(r"CREATE (UNIQUE )?INDEX (\S+) (ON .*)$", definition, re.S)
    return f"{m.group(1) or ''}{m.group(3)}" if m else definition


def _grants(out: Catalog, conn: psycopg.Connection, params: dict[str, Any]) -> None:
    """One ``grant`` object per (object, grantee), its privileges sorted (``*`` = WITH GRANT OPTION)."""
    roles: dict[int, str] = dict(conn.execute("SELECT oid, rolname FROM pg_roles").fetchall())
    held: dict[tuple[str, str, str], list[str]] = {}
    for kind, name, grantee, privilege, grantable in conn.execute(_GRANTS, params):
        who = "PUBLIC" if grantee == 0 else str(roles.get(grantee, grantee))
        held.setdefault((kind, name, who), []).append(privilege + ("*" if grantable else ""))
    for (kind, name, who), privileges in held.items():
        table = name if kind in ("table", "view", "materialized view", "foreign table") else None
        if kind == "column":
            table = name.rsplit(".", 1)[0]
        _add(out, "grant", f"on {kind} {name} to {who}", {"privileges": ", ".join(sorted(privileges))}, table,
             of=f"{kind} {name}")
