"""`estafeta webhooks`: endpoints, their delivery log and replays (a running platform sends them)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from estafeta.audit import cli_actor
from estafeta.cli.common import AccountArgument, ConfigOption, account, console, fail, open_core, run
from estafeta.webhook_endpoints import WebhookError

app = typer.Typer(
    help="Webhook endpoints, their delivery log and replays (a running platform sends them).",
    no_args_is_help=True,
)
EndpointArgument = Annotated[int, typer.Argument(help="Endpoint id.")]


@app.command("list")
def list_endpoints(
    account_name: Annotated[
        str | None, typer.Option("--account", help="Only this account (name or id).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """List webhook endpoints."""
    core = open_core(config)
    account_id = account(core, account_name).id if account_name else None
    table = Table("id", "account", "url", "events", "enabled", "description")
    for row in run(core.webhooks.list(account_id)):
        events = ", ".join(row.event_types) or "all"
        table.add_row(
            str(row.id), str(row.account_id), row.url, events, "yes" if row.enabled else "no", row.description
        )
    console.print(table)


@app.command("add")
def add(
    name_or_id: AccountArgument,
    url: Annotated[str, typer.Argument(help="http(s) URL that receives the events.")],
    event: Annotated[
        list[str] | None,
        typer.Option("--event", "-e", help="An event type to send (repeatable; default all)."),
    ] = None,
    description: Annotated[str, typer.Option(help="A label.")] = "",
    config: ConfigOption = None,
) -> None:
    """Add an endpoint and print its signing secret."""
    core = open_core(config)
    row = account(core, name_or_id)
    try:
        created = run(core.webhooks.create(row.id, url, event or [], description, actor=cli_actor()))
    except WebhookError as exc:
        raise fail(exc.reason) from exc
    console.print(f"Endpoint [bold]{created.id}[/] for {row.name}: {created.url}")
    console.print(f"Signing secret (verify webhook-signature with it): [bold green]{created.secret}[/]")


@app.command("remove")
def remove(endpoint: EndpointArgument, config: ConfigOption = None) -> None:
    """Remove an endpoint and its delivery log."""
    core = open_core(config)
    try:
        run(core.webhooks.remove(None, endpoint, actor=cli_actor()))
    except WebhookError as exc:
        raise fail(exc.reason) from exc
    console.print(f"Endpoint {endpoint} removed.")


@app.command("log")
def log(
    endpoint: EndpointArgument,
    state: Annotated[str | None, typer.Option(help="pending, delivered or failed.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    config: ConfigOption = None,
) -> None:
    """Show an endpoint's deliveries, newest first."""
    core = open_core(config)
    try:
        rows = run(core.webhooks.deliveries(None, endpoint, state=state, limit=limit))
    except WebhookError as exc:
        raise fail(exc.reason) from exc
    table = Table("id", "event", "type", "message", "state", "attempts", "status", "error", "last attempt")
    for d in rows:
        table.add_row(
            str(d.id),
            str(d.event_id or ""),
            d.event_type,
            d.message_id or "",
            d.state,
            str(d.attempts),
            str(d.last_status or ""),
            d.last_error or "",
            d.last_attempt_at.isoformat(timespec="seconds") if d.last_attempt_at else "",
        )
    console.print(table)


@app.command("replay")
def replay(
    endpoint: EndpointArgument,
    delivery: Annotated[list[int] | None, typer.Argument(help="Delivery ids (see `webhooks log`).")] = None,
    failed: Annotated[bool, typer.Option("--failed", help="Replay every failed delivery.")] = False,
    config: ConfigOption = None,
) -> None:
    """Send deliveries again (same body and webhook-id), with a fresh retry period."""
    core = open_core(config)
    try:
        replayed, missing = run(core.webhooks.replay_many(None, endpoint, delivery or [], failed=failed))
    except WebhookError as exc:
        raise fail(exc.reason) from exc
    if not replayed and not missing:
        raise fail("name delivery ids or pass --failed")
    console.print(f"{len(replayed)} deliveries queued again.")
    if missing:
        raise fail(f"not replayed (unknown, or being sent right now): {', '.join(map(str, missing))}")
