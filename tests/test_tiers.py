"""The test tiers (tests/conftest.py, docs/testing.md): every test ends with exactly one of unit, db,
prefect, e2e, browser; a marker lighter than the test's fixtures, or two tiers, stops the run at
collection; a ``unit`` test that reaches PostgreSQL fails. Checked on small suites written here and
run by a real pytest with this conftest."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, TIERS, fixture_tier


def run_suite(tmp_path: Path, source: str, *args: str) -> subprocess.CompletedProcess[str]:
    """pytest on one test file beside a copy of this conftest (and the module it imports); -rA lists
    every outcome. Its basetemp is under ``tmp_path``: a pytest session that starts in the default one
    takes group and other permissions off /tmp/pytest-of-<user>, which the embedded server's own user
    must traverse while another worker's test starts it there ("pg_ctl: could not access directory
    ...: Permission denied", seen in a clean-clone CI run while another pytest session started)."""
    for name in ("conftest.py", "prefect_templates.py"):
        shutil.copy(ROOT / "tests" / name, tmp_path / name)
    (tmp_path / "test_sample.py").write_text(source)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA",
                           "-o", "addopts=", "--basetemp", str(tmp_path / "basetemp"), *args,
                           str(tmp_path / "test_sample.py")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)


def test_the_heaviest_fixture_decides_the_tier() -> None:
    assert fixture_tier([]) == "unit"
    assert fixture_tier(["tmp_path", "monkeypatch"]) == "unit"
    assert fixture_tier(["tmp_path", "db_url"]) == "db"
    assert fixture_tier(["db_url", "prefect_harness"]) == "prefect"
    assert fixture_tier(["prefect_harness", "prefect_server", "db_url"]) == "e2e"
    assert TIERS == ("unit", "db", "prefect", "e2e", "browser")


def test_unmarked_tests_get_their_fixtures_tier_and_explicit_heavier_marks_stand(tmp_path: Path) -> None:
    r = run_suite(tmp_path, """
import pytest

def test_plain(tmp_path): pass

@pytest.fixture
def made(pg_server): return pg_server

def test_through_a_fixture(made): pass

@pytest.mark.e2e
def test_marked_heavier(tmp_path): pass
""", "--collect-only", "-m", "unit")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "test_plain" in r.stdout and "test_through_a_fixture" not in r.stdout and "test_marked_heavier" not in r.stdout
    r = run_suite(tmp_path, (tmp_path / "test_sample.py").read_text(), "--collect-only", "-m", "db")
    assert "test_through_a_fixture" in r.stdout and "test_plain" not in r.stdout
    r = run_suite(tmp_path, (tmp_path / "test_sample.py").read_text(), "--collect-only", "-m", "e2e")
    assert "test_marked_heavier" in r.stdout and "test_plain" not in r.stdout


@pytest.mark.parametrize(("source", "problem"), [
    ("import pytest\n\n@pytest.mark.unit\ndef test_x(db_url): pass\n", "marked unit but its fixtures need db"),
    ("import pytest\n\n@pytest.mark.db\ndef test_x(prefect_harness): pass\n", "marked db but its fixtures need prefect"),
    ("import pytest\n\n@pytest.mark.unit\n@pytest.mark.db\ndef test_x(): pass\n", "tier markers ['unit', 'db']"),
], ids=["unit-with-db_url", "db-with-harness", "two-tiers"])
def test_a_wrong_or_double_tier_stops_the_run_naming_the_test(tmp_path: Path, source: str, problem: str) -> None:
    r = run_suite(tmp_path, source, "--collect-only")
    assert r.returncode == 4, r.stdout + r.stderr  # pytest's usage error: nothing ran
    assert f"test_sample.py::test_x: {problem}" in r.stdout + r.stderr


@pytest.mark.db  # the sample suite's test connects to the machine's PostgreSQL
def test_a_unit_test_that_reaches_postgresql_fails(tmp_path: Path) -> None:
    r = run_suite(tmp_path, """
import psycopg
from conftest import SERVER_URL

def test_sneaky():
    with psycopg.connect(SERVER_URL) as conn:
        conn.execute("SELECT 1")

def test_refused_connection_is_not_a_database_use():
    try:
        psycopg.connect("postgresql://postgres@127.0.0.1:1/postgres", connect_timeout=2)
    except psycopg.OperationalError:
        pass
""")
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "test_sample.py::test_sneaky is marked unit but connected to PostgreSQL: mark it db" in out
    assert "PASSED test_sample.py::test_refused_connection_is_not_a_database_use" in out


def test_tests_sharing_a_module_fixture_run_on_one_xdist_worker(tmp_path: Path) -> None:
    """``--dist loadgroup`` keeps a module's tests on one worker when they share a module-scoped
    fixture (a server, a large source database): its set-up runs once. pytest 9.2 with pytest-xdist 3.8
    dropped every group without a word (pytest-xdist#1386), and each worker started its own server."""
    setups = tmp_path / "setups.txt"
    r = run_suite(tmp_path, f"""
import os
import pytest

@pytest.fixture(scope="module")
def costly():
    with open({str(setups)!r}, "a") as f:
        f.write(os.environ.get("PYTEST_XDIST_WORKER", "-") + "\\n")

@pytest.mark.parametrize("i", range(6))
def test_shares(costly, i): pass

@pytest.mark.parametrize("i", range(6))
def test_alone(i): pass
""", "-n", "2", "--dist", "loadgroup")
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(setups.read_text().split()) == 1, f"the module fixture was set up on: {setups.read_text().split()}"
