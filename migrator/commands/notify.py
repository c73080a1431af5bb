"""``migrator notify test``: prove the alert path (URL, TLS, signature, format) before an incident needs it.

Exit codes: 0 delivered; 1 delivery failed (the reason is printed); 2 no webhook configured or a
malformed webhook setting (``error: ...`` names it).
"""

from __future__ import annotations

import argparse
from typing import Any

from migrator.commands import Context
from migrator.errors import ConfigError
from migrator.output import error, info, print_json


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``notify test`` to the CLI."""
    p = sub.add_parser("notify", help="alert webhook tools (notify test)")
    actions = p.add_subparsers(dest="notify_command", metavar="ACTION", required=True)
    t = actions.add_parser(
        "test",
        parents=[common],
        help="send a signed test event to the webhook and report the delivery",
        description="Send a 'test' event to WEBHOOK_URL / --webhook-url. Exit 0 delivered, 1 delivery "
        "failed, 2 no webhook configured or a bad webhook setting.",
    )
    t.set_defaults(func=run_test)


def run_test(ctx: Context, args: argparse.Namespace) -> int:
    """Send one test event; the exit code says whether on-call would have received it."""
    # lazy: `migrator --help` loads this module; migrator.alerts.notify would add 223 modules (httpx, rich, ...)
    from migrator.alerts import notify

    settings = ctx.settings
    notify.check_webhook(settings)  # bad WEBHOOK_* values: ConfigError, exit 2
    if not settings.webhook_url:
        raise ConfigError("no webhook configured: set WEBHOOK_URL or --webhook-url (and WEBHOOK_SECRET) to test alerts")
    result = notify.send_event(settings, notify.TEST_EVENT)
    if ctx.json:
        print_json(result.to_dict())
    elif result.delivered:
        signed = "signed" if result.signed else "UNSIGNED (set WEBHOOK_SECRET)"
        info(
            f"test event {result.id} delivered to {result.destination} as {result.format}, {signed}, "
            f"in {result.attempts} attempt(s), HTTP {result.status}"
        )
    if not result.delivered:
        if not ctx.json:
            error(
                f"test event not delivered to {result.destination} after {result.attempts} attempt(s): {result.error}"
            )
        return 1
    return 0
