"""The markdown table check the artifact tests rely on: it must catch what the UI shows as raw pipes."""

from __future__ import annotations

from markdown_check import field, table_problems


def test_a_sound_table_passes_and_broken_ones_are_named() -> None:
    good = "# t\n\n| a | b |\n|---|---|\n| 1 | x \\| y |\n"
    assert table_problems(good) == []
    assert field(good, "1") == "x \\| y"
    assert table_problems("| a | b |\n" + "|---|" * 2 + "\n| 1 | 2 |\n")  # the old |---||---| separator
    assert table_problems("| a | b |\n|---|---|\n| 1 | 2 | 3 |\n")  # a row with a cell too many
    assert table_problems("text\n| a |\n")  # a lone pipe line
    assert table_problems("```\n| not | a table |\n```\n") == []  # code is not a table


def test_the_incident_and_recovery_markdown_is_sound() -> None:
    from migrator.recover.actions import Incident, Option, RecoveryResult, StatementRow
    from migrator.recover.incident import incident_md, recovery_md

    inc = Incident(environment="prod", database="askfrank", version=3, dirty=True, previous_version=2,
                   migration="3_add_email", direction="up", file="migrations/000003_add_email.up.sql", line=4,
                   pg_error="column | oops", attempt_id=7,
                   statements=[StatementRow(1, 2, "ALTER TABLE a ADD COLUMN e text", "done"),
                               StatementRow(2, 4, "CREATE INDEX CONCURRENTLY i ON a (x|y)", "failed", "boom")],
                   options=[Option("resume", True, "runs 1 statement"), Option("revert", False, "", "unsafe")])
    results = [RecoveryResult("leave_dirty", "bob | ops", "left_dirty", "askfrank", "prod", 3, True, 3, True,
                              "left dirty by bob", comment="INC-1\nwaiting"),
               RecoveryResult("revert", "bob", "completed", "askfrank", "prod", 3, True, 2, False, "reverted")]
    md = incident_md(inc, run_url="http://x/runs/1", backup_url="s3://b/k") + recovery_md(results)
    assert table_problems(md) == []
    assert "| `leave_dirty` | bob \\| ops | INC-1 waiting | left dirty | 3 | yes |" in md
    assert "| `revert` | bob |  | recovered | 2 | no |" in md


def test_no_flow_parameter_description_holds_angle_brackets() -> None:
    """The UI renders a parameter's description as HTML-ish text: ``deployments/<environment>.yaml``
    showed as ``deployments/.yaml``."""
    import importlib
    import pkgutil

    from prefect import Flow
    from prefect.utilities.callables import parameter_schema

    import flows

    seen = 0
    for info in pkgutil.iter_modules(flows.__path__):
        module = importlib.import_module(f"flows.{info.name}")
        for obj in vars(module).values():
            if isinstance(obj, Flow) and obj.__module__ == module.__name__:
                for name, prop in parameter_schema(obj.fn).model_dump_for_openapi()["properties"].items():
                    seen += 1
                    assert "<" not in (prop.get("description") or ""), (obj.name, name, prop["description"])
    assert seen > 20
