"""The approval gate (flows/approval.py) under prefect_test_harness, with real PostgreSQL, S3 and
webhook receiver: a form that can't be answered by accident, the migrations named in the form and
the alert, and a rejection that alerts ``approval.rejected`` instead of paging a failure."""

from __future__ import annotations

import json
import threading
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.flow_runs import resume_flow_run
from prefect.input.actions import read_flow_run_input
from prefect.input.run_input import keyset_from_paused_state
from test_flows import _has_table, _paused_run_id, db_state, env, events, hook, s3  # noqa: F401

from conftest import write_migration

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_form_schema_requires_a_decision_without_default() -> None:
    from flows.approval import Approval

    schema = Approval.with_initial_data(description="plan").model_json_schema()
    assert set(schema["required"]) == {"decision", "approver"}
    decision = schema["properties"]["decision"]
    assert "default" not in decision and decision["enum"] == ["approve", "reject"]
    assert schema["properties"]["approver"]["minLength"] == 1 and "default" not in schema["properties"]["approver"]
    with pytest.raises(ValueError):
        Approval(approver="alice")  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        Approval(decision="approve", approver="   ")


def _start(kwargs: dict[str, Any]) -> tuple[threading.Thread, list[Any]]:
    from flows.migrate import migrate

    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(migrate(return_state=True, **kwargs)))
    t.start()
    return t, out


def _paused_form(run_id: UUID) -> tuple[dict[str, Any], str]:
    """The schema and description the UI's resume form is built from, as stored on the server."""
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run_id).state
    assert state is not None
    keyset = keyset_from_paused_state(state)
    schema = read_flow_run_input(keyset["schema"], flow_run_id=run_id)
    description = read_flow_run_input(keyset["description"], flow_run_id=run_id)
    return (json.loads(schema) if isinstance(schema, str) else schema), str(description)


def test_rejection_alerts_approval_rejected_not_a_failure(env: dict[str, Any]) -> None:  # noqa: F811
    write_migration(env["dir"], 3, "require_n",
                    "-- Business justification: test\nALTER TABLE a ADD COLUMN n text;\n"
                    "ALTER TABLE a ALTER COLUMN n SET NOT NULL;",
                    "-- Business justification: test\nALTER TABLE a DROP COLUMN IF EXISTS n;")
    t, out = _start({"environment": "test", "require_approval": True})
    run_id = _paused_run_id()
    schema, description = _paused_form(run_id)
    assert "decision" in schema["required"] and "default" not in schema["properties"]["decision"]
    # the migrations, by name and in order, with the lint warning under the one it concerns, first
    names = [description.index(n) for n in ("000001_create_a", "000002_create_b", "000003_require_n")]
    assert names == sorted(names)
    assert description.index("MIG002") > names[2] and description.index("MIG002") < description.index("Database")
    (requested,) = events(env["hook"])
    assert requested["event"] == "approval.requested"
    assert "000001_create_a, 000002_create_b, 000003_require_n" in requested["message"]

    with pytest.raises(RuntimeError, match="decision"):  # the server refuses an answer without a decision
        resume_flow_run(run_id, run_input={"approver": "bob"})
    resume_flow_run(run_id, run_input={"decision": "reject", "approver": "bob", "comment": "CHG-7 not ready"})
    t.join(120)
    state = out[0]
    assert state.is_failed()
    assert "rejected by bob (CHG-7 not ready): 000001_create_a" in state.message
    kinds = [e["event"] for e in events(env["hook"])]
    assert kinds == ["approval.requested", "approval.rejected"]
    rejected = events(env["hook"])[-1]
    assert "bob" in rejected["message"] and "000003_require_n" in rejected["message"]
    assert rejected["details"]["approver"] == "bob"
    assert not _has_table(env["db_url"]) or db_state(env["db_url"]) == []


def test_plan_shows_the_preface_first_then_each_migration_by_name() -> None:
    from flows.approval import plan_markdown
    from migrator.engine import Plan, PlanItem
    from migrator.lint import Finding, ValidationReport
    from tasks.environment import load_environment

    plan = Plan(database="askfrank", version=4, dirty=False, target=6, steps=[
        PlanItem(version=5, name="add_phone", direction="up", to_version=5, transactional=True,
                 why_not_transactional=None, file="migrations/000005_add_phone.up.sql", checksum="a5"),
        PlanItem(version=6, name="index_phone", direction="up", to_version=6, transactional=False,
                 why_not_transactional="CREATE INDEX CONCURRENTLY", file="migrations/000006_index_phone.up.sql",
                 checksum="a6")])
    report = ValidationReport(directory="migrations", findings=[
        Finding(file="migrations/000006_index_phone.up.sql", line=1, severity="warning", rule="MIG010",
                message="index build"),
        Finding(file="migrations/000002_old.up.sql", line=3, severity="warning", rule="MIG002", message="old")])
    md = plan_markdown(load_environment("local"), plan, report, "s3://b/k.dump", preface_md="## Rehearsal: passed")
    assert md.startswith("## Rehearsal: passed\n\n# 2 migrations for `local`: version 4 → 6\n\n1. **000005_add_phone**")
    pos = [md.index(s) for s in ("000005_add_phone", "000006_index_phone", "MIG010", "Database `askfrank`",
                                 "Other lint findings", "MIG002")]
    assert pos == sorted(pos)
    assert "**not in a transaction** (CREATE INDEX CONCURRENTLY)" in md
