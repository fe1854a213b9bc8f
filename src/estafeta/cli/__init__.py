"""The `estafeta` command line: one module per command group, each a thin edge over the core."""

from __future__ import annotations

from typing import Annotated

import typer

from estafeta import __version__
from estafeta.cli import (
    accounts,
    admin,
    bench,
    bounces,
    doctor,
    domains,
    lint,
    lists,
    plans,
    review,
    runners,
    suppressions,
    users,
    webhooks,
)
from estafeta.cli.common import console

app = typer.Typer(
    help="Estafeta: send transactional and bulk email from your own platform.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        console.print(f"estafeta {__version__}")
        raise typer.Exit()


app.command()(runners.serve)
app.command()(runners.world)
app.command()(runners.demo)
app.command("lint")(lint.lint)
app.command("doctor")(doctor.doctor)
app.add_typer(accounts.app, name="accounts")
app.add_typer(domains.app, name="domains")
app.add_typer(bench.app, name="bench")
app.add_typer(bounces.app, name="bounces")
app.add_typer(suppressions.app, name="suppressions")
app.add_typer(admin.app, name="admin")
app.add_typer(webhooks.app, name="webhooks")
app.add_typer(lists.app, name="lists")
app.add_typer(review.app, name="review")
app.add_typer(users.app, name="users")
app.add_typer(plans.app, name="plans")

__all__ = ["app"]
