"""`estafeta users` and `estafeta plans`: dashboard users (the first operator and owners) and plans."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from estafeta import admin, plans
from estafeta.clock import SystemClock
from estafeta.config import load_settings
from estafeta.store import plans as plan_store
from estafeta.store import users as user_store
from estafeta.store.db import Database
from estafeta.users import ROLES, UserError, Users, dashboard_secret

users_app = typer.Typer(
    help="Dashboard users: create the first operator and account owners, invite, reset passwords.",
    no_args_is_help=True,
)
plans_app = typer.Typer(help="Volume plans: create them and put accounts on them.", no_args_is_help=True)
console = Console()
ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML settings file (ESTAFETA_* variables win over it).")
]
PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from standard input (for scripts).")
]


def _open(config: Path | None) -> tuple[Database, Users, str]:
    """The database, the users service and the dashboard's base URL."""
    try:
        settings = load_settings(config)
    except (FileNotFoundError, ValueError) as exc:
        console.print(f"[red]Settings error:[/] {exc}")
        raise typer.Exit(2) from exc
    db = Database(settings.database_url)
    db.migrate()
    base = settings.public_url or f"http://{settings.api.host}:{settings.api.port}"
    return db, Users(db, SystemClock(), dashboard_secret(db)), base


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]Error:[/] {message}")
    return typer.Exit(1)


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return str(typer.prompt("Password (at least 10 characters)", hide_input=True, confirmation_prompt=True))


@users_app.command("create")
def users_create(
    email: Annotated[str, typer.Argument(help="The user's email, used to sign in.")],
    operator: Annotated[bool, typer.Option("--operator", help="A platform operator.")] = False,
    account: Annotated[
        str | None, typer.Option(help="Make the user a member of this account (name or id).")
    ] = None,
    role: Annotated[str, typer.Option(help=f"Role in --account: {', '.join(ROLES)}.")] = "owner",
    name: Annotated[str, typer.Option(help="The user's name.")] = "",
    password_stdin: PasswordStdin = False,
    config: ConfigOption = None,
) -> None:
    """Create a user who signs in to the dashboard at /app (e.g. the first operator, an account's owner)."""
    db, users, base = _open(config)
    if not operator and account is None:
        raise _fail("give --operator or --account NAME (a user must see something)")
    account_id = None
    if account is not None:
        try:
            account_id = admin.resolve_account(db, account).id
        except admin.AdminError as exc:
            raise _fail(str(exc)) from exc
    try:
        user = asyncio.run(
            users.create(
                email,
                _password(password_stdin),
                name=name,
                operator=operator,
                account_id=account_id,
                role=role if account_id is not None else None,
            )
        )
    except UserError as exc:
        raise _fail(str(exc)) from exc
    what = "operator" if operator else ""
    if account is not None:
        what = (what + " and " if what else "") + f"{role} of {account}"
    console.print(f"User [bold]{user.email}[/] ({what}) created; sign in at {base}/app/")


@users_app.command("list")
def users_list(config: ConfigOption = None) -> None:
    """Users, whether they are operators, and their accounts and roles."""
    db, _, _ = _open(config)
    table = Table("id", "email", "name", "operator", "accounts")
    for user in db.call(user_store.list_users):
        accounts = ", ".join(f"{m.account_name} ({m.role})" for m in db.call(user_store.memberships, user.id))
        table.add_row(str(user.id), user.email, user.name, "yes" if user.operator else "", accounts)
    console.print(table)


@users_app.command("invite")
def users_invite(
    account: Annotated[str, typer.Argument(help="Account name or id.")],
    email: Annotated[str, typer.Argument(help="Who is invited.")],
    role: Annotated[str, typer.Option(help=f"{', '.join(ROLES)}.")] = "developer",
    config: ConfigOption = None,
) -> None:
    """Print an invitation link (valid 7 days, works once) to join an account with a role."""
    db, users, base = _open(config)
    try:
        account_id = admin.resolve_account(db, account).id
        _, token = asyncio.run(users.invite(account_id, email, role, None))
    except (admin.AdminError, UserError) as exc:
        raise _fail(str(exc)) from exc
    console.print(f"Invitation link for {email} ({role}), shown once:\n{base}/app/invite/{token}")


@users_app.command("set-password")
def users_set_password(
    email: Annotated[str, typer.Argument(help="The user's email.")],
    password_stdin: PasswordStdin = False,
    config: ConfigOption = None,
) -> None:
    """Give a user a new password; their sessions end."""
    db, users, _ = _open(config)
    user = db.call(user_store.find_user, email)
    if user is None:
        raise _fail(f"no user {email}")
    try:
        asyncio.run(users.set_password(user.id, _password(password_stdin)))
    except UserError as exc:
        raise _fail(str(exc)) from exc
    console.print(f"Password of {user.email} changed; their sessions ended.")


def _limit(value: int | None) -> str:
    return "no limit" if value is None else f"{value:,}"


@plans_app.command("create")
def plans_create(
    name: Annotated[str, typer.Argument(help="The plan's name, shown to senders and in refusals.")],
    messages_per_month: Annotated[int | None, typer.Option(min=0, help="Default: no limit.")] = None,
    messages_per_day: Annotated[int | None, typer.Option(min=0, help="Default: no limit.")] = None,
    contacts: Annotated[int | None, typer.Option(min=0, help="Default: no limit.")] = None,
    dedicated_pool: Annotated[
        bool, typer.Option("--dedicated-pool", help="Streams may use a dedicated IP pool.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Create a volume plan."""
    db, _, _ = _open(config)
    try:
        row = db.call(
            plans.create_plan,
            name,
            messages_per_month=messages_per_month,
            messages_per_day=messages_per_day,
            contacts=contacts,
            dedicated_pool=dedicated_pool,
            now=SystemClock().now(),
        )
    except plans.PlanError as exc:
        raise _fail(str(exc)) from exc
    console.print(f"Plan [bold]{row.name}[/] created.")


@plans_app.command("list")
def plans_list(config: ConfigOption = None) -> None:
    """Plans and the accounts on each."""
    db, _, _ = _open(config)
    on: dict[int, list[str]] = {}
    for assignment in db.call(plan_store.assignments):
        if assignment.plan is not None:
            on.setdefault(assignment.plan.id, []).append(assignment.account_name)
    table = Table("plan", "messages/month", "messages/day", "contacts", "dedicated pool", "accounts")
    for row in db.call(plan_store.list_plans):
        table.add_row(
            row.name,
            _limit(row.messages_per_month),
            _limit(row.messages_per_day),
            _limit(row.contacts),
            "yes" if row.dedicated_pool else "no",
            ", ".join(on.get(row.id, [])),
        )
    console.print(table)


@plans_app.command("assign")
def plans_assign(
    account: Annotated[str, typer.Argument(help="Account name or id.")],
    plan: Annotated[str | None, typer.Argument(help="Plan name; leave out with --none.")] = None,
    none: Annotated[bool, typer.Option("--none", help="Take the account off any plan (no limits).")] = False,
    config: ConfigOption = None,
) -> None:
    """Put an account on a plan (its limits hold from the next message on)."""
    db, _, _ = _open(config)
    if (plan is None) != none:
        raise _fail("name a plan, or pass --none")
    try:
        row = admin.resolve_account(db, account)
        db.call(plans.assign, row.id, plan, "cli", SystemClock().now())
    except (admin.AdminError, plans.PlanError) as exc:
        raise _fail(str(exc)) from exc
    console.print(f"Account {row.name} is on {'no plan' if plan is None else 'plan ' + plan}.")
