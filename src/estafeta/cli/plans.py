"""`estafeta plans`: volume plans — create them, list them, put accounts on them."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from estafeta.audit import cli_actor
from estafeta.cli.common import AccountArgument, ConfigOption, account, console, fail, open_core, run
from estafeta.plans import PlanError

app = typer.Typer(help="Volume plans: create them and put accounts on them.", no_args_is_help=True)


def _limit(value: int | None) -> str:
    return "no limit" if value is None else f"{value:,}"


@app.command("create")
def create(
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
    core = open_core(config)
    try:
        row = run(
            core.plans.create(
                name,
                messages_per_month=messages_per_month,
                messages_per_day=messages_per_day,
                contacts=contacts,
                dedicated_pool=dedicated_pool,
                actor=cli_actor(),
            )
        )
    except PlanError as exc:
        raise fail(str(exc)) from exc
    console.print(f"Plan [bold]{row.name}[/] created.")


@app.command("list")
def list_plans(config: ConfigOption = None) -> None:
    """Plans and the accounts on each."""
    core = open_core(config)
    on: dict[int, list[str]] = {}
    for assignment in run(core.plans.assignments()):
        if assignment.plan is not None:
            on.setdefault(assignment.plan.id, []).append(assignment.account_name)
    table = Table("plan", "messages/month", "messages/day", "contacts", "dedicated pool", "accounts")
    for row in run(core.plans.list()):
        table.add_row(
            row.name,
            _limit(row.messages_per_month),
            _limit(row.messages_per_day),
            _limit(row.contacts),
            "yes" if row.dedicated_pool else "no",
            ", ".join(on.get(row.id, [])),
        )
    console.print(table)


@app.command("assign")
def assign(
    account_name: AccountArgument,
    plan: Annotated[str | None, typer.Argument(help="Plan name; leave out with --none.")] = None,
    none: Annotated[bool, typer.Option("--none", help="Take the account off any plan (no limits).")] = False,
    config: ConfigOption = None,
) -> None:
    """Put an account on a plan (its limits hold from the next message on)."""
    if (plan is None) != none:
        raise fail("name a plan, or pass --none")
    core = open_core(config)
    row = account(core, account_name)
    try:
        run(core.plans.assign(row.id, plan, cli_actor()))
    except PlanError as exc:
        raise fail(str(exc)) from exc
    console.print(f"Account {row.name} is on {'no plan' if plan is None else 'plan ' + plan}.")
