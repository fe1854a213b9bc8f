"""`estafeta admin`: platform-operator credentials, the abuse desk, terminating an account, the audit log."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from estafeta.audit import AuditFilter, cli_actor
from estafeta.cli.common import (
    AccountArgument,
    ConfigOption,
    account,
    console,
    fail,
    json_text,
    open_core,
    run,
)
from estafeta.termination import TerminationError

app = typer.Typer(
    help="Platform-operator credentials, the abuse desk, terminating accounts, the audit log.",
    no_args_is_help=True,
)


@app.command("create-key")
def create_key(
    name: Annotated[str, typer.Option(help="A label for the key.")] = "",
    config: ConfigOption = None,
) -> None:
    """Create a platform-admin key (shown once) for `/v1/admin/…`, e.g. the global suppression list."""
    core = open_core(config)
    key = run(core.admin_keys.create(name, actor=cli_actor()))
    console.print(f"Admin key (shown once, keep it secret): [bold green]{key.token}[/]")


@app.command("list-keys")
def list_keys(config: ConfigOption = None) -> None:
    """List the platform-admin keys (never their secrets)."""
    core = open_core(config)
    table = Table("prefix", "name", "created", "revoked")
    for key in run(core.admin_keys.list()):
        revoked = key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else ""
        table.add_row(key.prefix, key.name, key.created_at.isoformat(timespec="seconds"), revoked)
    console.print(table)


@app.command("revoke-key")
def revoke_key(
    prefix: Annotated[str, typer.Argument(help="Its prefix (`estadm_<prefix>_…`; see `list-keys`).")],
    config: ConfigOption = None,
) -> None:
    """Revoke a platform-admin key; every node refuses it at once."""
    core = open_core(config)
    if not run(core.admin_keys.revoke(prefix, actor=cli_actor())):
        raise fail(f"no active admin key {prefix}")
    console.print(f"Admin key {prefix} revoked.")


@app.command("abuse")
def abuse(
    show: Annotated[int | None, typer.Argument(help="Show this report with the message as received.")] = None,
    inbox: Annotated[bool, typer.Option("--inbox", help="Only reports no account was matched to.")] = False,
    of: Annotated[str | None, typer.Option("--account", help="Only reports about this account.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    config: ConfigOption = None,
) -> None:
    """Reports mailed to abuse@ and postmaster@ the platform's domains, newest first."""
    core = open_core(config)
    if show is not None:
        found = run(core.abuse.report(show))
        if found is None:
            raise fail(f"no abuse report {show}")
        row, raw = found
        console.print_json(json_text(row))
        console.print(raw.decode("utf-8", "replace"), markup=False, highlight=False)
        return
    account_id = account(core, of).id if of else None
    rows = run(core.abuse.reports(matched=False if inbox else None, account_id=account_id, limit=limit))
    table = Table("id", "received", "category", "account", "matched by", "review", "reporter", "excerpt")
    for row in rows:
        table.add_row(
            str(row.id),
            row.received_at.isoformat(timespec="seconds"),
            row.category,
            str(row.account_id) if row.account_id is not None else "inbox",
            row.matched_by or "—",
            str(row.review_id or "—"),
            row.reporter or "—",
            row.excerpt[:80],
        )
    console.print(table)


@app.command("terminate")
def terminate(
    name: AccountArgument,
    reason: Annotated[str, typer.Option(help="Why; kept with the account and sent to its contact.")],
    config: ConfigOption = None,
) -> None:
    """Terminate an account: all its waiting mail cancelled, keys and logins revoked, campaigns cancelled."""
    if not reason.strip() or not reason.isprintable():
        raise fail("--reason must be one line of text")
    core = open_core(config)
    target = account(core, name)
    try:
        done = run(core.terminations.terminate(target.id, cli_actor(), reason))
    except TerminationError as exc:
        raise fail(str(exc)) from exc
    console.print(
        f"Account {target.id} ({target.name}) terminated: {done['cancelled']} waiting recipient(s) "
        f"cancelled, {done['api_keys_revoked']} API key(s) and {done['smtp_credentials_revoked']} SMTP "
        f"credential(s) revoked, {done['campaigns_cancelled']} campaign(s) cancelled."
    )


def _moment(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 date or time from the command line; without a zone it is UTC."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise fail(f"{option}: not an ISO 8601 date or time: {value!r} (e.g. 2026-12-01T09:30)") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@app.command("audit")
def audit(
    of: Annotated[
        str | None, typer.Option("--account", help="Only actions on this account (name or id).")
    ] = None,
    action: Annotated[
        str | None,
        typer.Option(help="An action (review.approve) or a group of them (review, api_key, domain…)."),
    ] = None,
    actor: Annotated[
        str | None,
        typer.Option(help="Exactly this actor: admin:<prefix>, api:<prefix>, user:<id>/<email>, cli:<user>."),
    ] = None,
    since: Annotated[str | None, typer.Option(help="At or after this UTC date or time (ISO 8601).")] = None,
    until: Annotated[str | None, typer.Option(help="Before this UTC date or time (ISO 8601).")] = None,
    before: Annotated[
        int | None, typer.Option(min=1, help="Only entries older than this id (the next page).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    config: ConfigOption = None,
) -> None:
    """The audit log, newest first: who did what to which account, when and from where.

    Operator and security-relevant actions are recorded whichever way they came in (API, dashboard,
    command line, the platform itself): reviews, stream states, accounts, plans, the global suppression
    list, admin and API keys, SMTP credentials, users, webhook endpoints, domains and DKIM keys.
    """
    core = open_core(config)
    where = AuditFilter(
        account_id=account(core, of).id if of else None,
        action=action,
        actor=actor,
        since=_moment(since, "--since"),
        until=_moment(until, "--until"),
    )
    rows = run(core.audit.entries(where, before_id=before, limit=limit + 1))
    more = len(rows) > limit
    rows = rows[:limit]
    next_before = rows[-1].id if more else None
    if as_json:
        typer.echo(json_text({"data": rows, "next_before": next_before}))
        return
    table = Table("id", "at", "actor", "origin", "account", "action", "target", "details")
    for row in rows:
        details = ", ".join(f"{k}={v}" for k, v in row.details.items() if v not in (None, "", []))
        table.add_row(
            str(row.id),
            row.at.isoformat(timespec="seconds"),
            escape(row.actor),
            row.origin,
            str(row.account_id) if row.account_id is not None else "—",
            row.action,
            escape(row.target),
            escape(details),
        )
    console.print(table)
    if next_before is not None:
        console.print(f"Older entries: --before {next_before}")
