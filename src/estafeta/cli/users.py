"""`estafeta users`: dashboard users — the first operator, account owners, invitations, passwords."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from estafeta.audit import cli_actor
from estafeta.cli.common import AccountArgument, ConfigOption, account, console, fail, open_core, run
from estafeta.core import Core
from estafeta.users import ROLES, UserError

app = typer.Typer(
    help="Dashboard users: create the first operator and account owners, invite, reset passwords.",
    no_args_is_help=True,
)
PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from standard input (for scripts).")
]


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return str(typer.prompt("Password (at least 10 characters)", hide_input=True, confirmation_prompt=True))


def _dashboard(core: Core) -> str:
    api = core.settings.api
    return f"{core.settings.public_url or f'http://{api.host}:{api.port}'}/app/"


@app.command("create")
def create(
    email: Annotated[str, typer.Argument(help="The user's email, used to sign in.")],
    operator: Annotated[bool, typer.Option("--operator", help="A platform operator.")] = False,
    account_name: Annotated[
        str | None, typer.Option("--account", help="Make the user a member of this account (name or id).")
    ] = None,
    role: Annotated[str, typer.Option(help=f"Role in --account: {', '.join(ROLES)}.")] = "owner",
    name: Annotated[str, typer.Option(help="The user's name.")] = "",
    password_stdin: PasswordStdin = False,
    config: ConfigOption = None,
) -> None:
    """Create a user who signs in to the dashboard at /app (e.g. the first operator, an account's owner)."""
    if not operator and account_name is None:
        raise fail("give --operator or --account NAME (a user must see something)")
    core = open_core(config)
    account_id = account(core, account_name).id if account_name is not None else None
    try:
        user = run(
            core.users.create(
                email,
                _password(password_stdin),
                name=name,
                operator=operator,
                account_id=account_id,
                role=role if account_id is not None else None,
                actor=cli_actor(),
            )
        )
    except UserError as exc:
        raise fail(str(exc)) from exc
    what = [*(["operator"] if operator else []), *([f"{role} of {account_name}"] if account_name else [])]
    console.print(f"User [bold]{user.email}[/] ({' and '.join(what)}) created; sign in at {_dashboard(core)}")


@app.command("list")
def list_users(config: ConfigOption = None) -> None:
    """Users, whether they are operators, and their accounts and roles."""
    core = open_core(config)
    table = Table("id", "email", "name", "operator", "accounts")
    for user, accounts in run(core.users.everyone()):
        table.add_row(
            str(user.id),
            user.email,
            user.name,
            "yes" if user.operator else "",
            ", ".join(f"{m.account_name} ({m.role})" for m in accounts),
        )
    console.print(table)


@app.command("invite")
def invite(
    account_name: AccountArgument,
    email: Annotated[str, typer.Argument(help="Who is invited.")],
    role: Annotated[str, typer.Option(help=f"{', '.join(ROLES)}.")] = "developer",
    config: ConfigOption = None,
) -> None:
    """Print an invitation link (valid 7 days, works once) to join an account with a role."""
    core = open_core(config)
    row = account(core, account_name)
    try:
        _, token = run(core.users.invite(row.id, email, role, None, actor=cli_actor()))
    except UserError as exc:
        raise fail(str(exc)) from exc
    console.print(f"Invitation link for {email} ({role} of {row.name}), shown once:")
    console.print(f"{_dashboard(core)}invite/{token}", soft_wrap=True)


@app.command("set-password")
def set_password(
    email: Annotated[str, typer.Argument(help="The user's email.")],
    password_stdin: PasswordStdin = False,
    config: ConfigOption = None,
) -> None:
    """Give a user a new password; their sessions end."""
    core = open_core(config)
    user = run(core.users.find(email))
    if user is None:
        raise fail(f"no user {email}")
    try:
        run(core.users.set_password(user.id, _password(password_stdin), actor=cli_actor()))
    except UserError as exc:
        raise fail(str(exc)) from exc
    console.print(f"Password of {user.email} changed; their sessions ended.")
