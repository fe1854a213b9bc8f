"""`estafeta accounts`: create and list accounts, their API keys and SMTP relay credentials."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from estafeta.accounts import AccountError
from estafeta.audit import cli_actor
from estafeta.auth import Scope
from estafeta.cli.common import AccountArgument, ConfigOption, account, console, fail, open_core, run

app = typer.Typer(help="Create and list accounts and their API keys.", no_args_is_help=True)


@app.command("create")
def create(
    name: str,
    email: Annotated[
        str | None, typer.Option(help="contact address for reputation notices (warnings, pauses)")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Create an account and its first API key (shown once)."""
    core = open_core(config)
    try:
        row = run(core.accounts.create(name, email, actor=cli_actor()))
    except AccountError as exc:
        raise fail(str(exc)) from exc
    key = run(core.api_keys.create(row.id, "default", actor=cli_actor()))
    console.print(f"Account [bold]{row.name}[/] (id {row.id}) created.")
    console.print(f"API key (shown once, keep it secret): [bold green]{key.token}[/]")


@app.command("list")
def list_accounts(config: ConfigOption = None) -> None:
    """List accounts."""
    core = open_core(config)
    table = Table("id", "name", "status", "created")
    for row in run(core.accounts.list()):
        table.add_row(str(row.id), row.name, row.status, row.created_at.isoformat(timespec="seconds"))
    console.print(table)


keys_app = typer.Typer(
    help="An account's API keys: create (with a scope), list, revoke.", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")
ScopeOption = Annotated[
    Scope,
    typer.Option(help="send: send mail only; read: GET requests only; full: everything, keys included."),
]


@keys_app.command("create")
def create_key(
    name_or_id: AccountArgument,
    scope: ScopeOption = "full",
    name: Annotated[str, typer.Option(help="A label for the key.")] = "",
    config: ConfigOption = None,
) -> None:
    """Create an API key for an account (shown once)."""
    core = open_core(config)
    row = account(core, name_or_id)
    key = run(core.api_keys.create(row.id, name, scope, actor=cli_actor()))
    console.print(f"API key ({scope}) for {row.name} (shown once): [bold green]{key.token}[/]")


@keys_app.command("list")
def list_keys(name_or_id: AccountArgument, config: ConfigOption = None) -> None:
    """List an account's API keys (never their secrets)."""
    core = open_core(config)
    row = account(core, name_or_id)
    table = Table("prefix", "name", "scope", "created", "revoked")
    for key in run(core.api_keys.list(row.id)):
        revoked = key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else ""
        table.add_row(key.prefix, key.name, key.scope, key.created_at.isoformat(timespec="seconds"), revoked)
    console.print(table)


@keys_app.command("revoke")
def revoke_key(name_or_id: AccountArgument, prefix: str, config: ConfigOption = None) -> None:
    """Revoke an API key by its prefix (`est_<prefix>_…`); it stops working at once."""
    core = open_core(config)
    row = account(core, name_or_id)
    if not run(core.api_keys.revoke(row.id, prefix, actor=cli_actor())):
        raise fail(f"{row.name} has no active API key {prefix}")
    console.print(f"API key {prefix} of {row.name} revoked.")


@app.command("smtp-credentials")
def smtp_credentials(name_or_id: AccountArgument, config: ConfigOption = None) -> None:
    """Create a username and password for the SMTP relay (password shown once)."""
    core = open_core(config)
    row = account(core, name_or_id)
    credential = run(core.smtp_credentials.create(row.id, actor=cli_actor()))
    settings, smtp = core.settings, core.settings.smtp
    console.print(f"SMTP credential for {row.name} (password shown once, keep it secret):")
    console.print(f"  username: [bold]{credential.username}[/]")
    console.print(f"  password: [bold green]{credential.password}[/]")
    console.print(
        f"  server:   {settings.hostname}, port {smtp.starttls_port} (STARTTLS) or {smtp.implicit_tls_port} "
        "(SSL/TLS), authentication PLAIN or LOGIN"
    )
