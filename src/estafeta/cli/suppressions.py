"""`estafeta suppressions`: search and edit an account's suppression list or the global one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from estafeta import suppression
from estafeta.audit import cli_actor
from estafeta.cli.common import ConfigOption, account, console, fail, open_core, run
from estafeta.core import Core

app = typer.Typer(
    help="Search and edit suppression lists: an account's (--account) or the global one (--global).",
    no_args_is_help=True,
)

AccountScope = Annotated[str | None, typer.Option("--account", help="The account's list (name or id).")]
GlobalScope = Annotated[bool, typer.Option("--global", help="The global list, shared by every account.")]


def _scope(core: Core, name_or_id: str | None, global_: bool) -> int | None:
    """The list to work on: an account's id, or None for the global list."""
    if (name_or_id is None) == (not global_):
        raise fail("name one list: --account NAME or --global")
    if global_:
        return None
    return account(core, name_or_id or "").id


def _table(rows: list[suppression.SuppressionRow], title: str) -> Table:
    table = Table("value", "kind", "reason", "detail", "since", title=title)
    for row in rows:
        table.add_row(
            row.value, row.kind, row.reason, row.detail[:60], row.created_at.isoformat(timespec="seconds")
        )
    return table


@app.command("list")
def list_entries(
    account_name: AccountScope = None,
    global_: GlobalScope = False,
    reason: Annotated[str | None, typer.Option(help="Only entries with this reason.")] = None,
    config: ConfigOption = None,
) -> None:
    """List a suppression list."""
    core = open_core(config)
    rows = run(core.suppressions.list(_scope(core, account_name, global_), reason=reason))
    console.print(_table(rows, f"{len(rows)} entries"))


@app.command("search")
def search(
    query: Annotated[str, typer.Argument(help="Part of an address or domain.")],
    account_name: AccountScope = None,
    global_: GlobalScope = False,
    config: ConfigOption = None,
) -> None:
    """Find entries; for a whole address on an account's list, also say whether the global list covers it."""
    core = open_core(config)
    scope = _scope(core, account_name, global_)
    rows = run(core.suppressions.list(scope, search=query))
    console.print(_table(rows, f"{len(rows)} entries matching {query!r}"))
    if scope is not None and "@" in query:
        try:
            value = suppression.parse_value(query)
        except suppression.SuppressionError as exc:
            raise fail(exc.reason) from exc
        entry = run(core.suppressions.global_entry(value))
        if entry is not None:
            console.print(f"The global list covers it: {entry.value} ({entry.reason}).")


@app.command("add")
def add(
    value: Annotated[str, typer.Argument(help="An address, or a domain for every address at it.")],
    account_name: AccountScope = None,
    global_: GlobalScope = False,
    reason: Annotated[str, typer.Option(help=f"One of {', '.join(suppression.REASONS)}.")] = "manual",
    note: Annotated[str, typer.Option(help="Kept in the audit trail.")] = "",
    config: ConfigOption = None,
) -> None:
    """Suppress an address or domain."""
    core = open_core(config)
    scope = _scope(core, account_name, global_)
    try:
        row, added = run(core.suppressions.add(scope, value, reason=reason, actor=cli_actor(), note=note))
    except suppression.SuppressionError as exc:
        raise fail(exc.reason) from exc
    console.print(f"{row.value} {'suppressed' if added else 'was suppressed already'}.")


@app.command("remove")
def remove(
    value: Annotated[str, typer.Argument(help="The address or domain to mail again.")],
    account_name: AccountScope = None,
    global_: GlobalScope = False,
    note: Annotated[str, typer.Option(help="Kept in the audit trail.")] = "",
    config: ConfigOption = None,
) -> None:
    """Remove an entry (the audit trail keeps who did it and when)."""
    core = open_core(config)
    scope = _scope(core, account_name, global_)
    try:
        parsed, removed = run(core.suppressions.remove(scope, value, actor=cli_actor(), note=note))
    except suppression.SuppressionError as exc:
        raise fail(exc.reason) from exc
    if removed is None:
        raise fail(f"{parsed.value} is not on that list")
    console.print(f"{removed.value} removed (it was suppressed for {removed.reason}).")


@app.command("export")
def export(
    account_name: AccountScope = None,
    global_: GlobalScope = False,
    output: Annotated[Path | None, typer.Option(help="CSV file to write; standard output if absent.")] = None,
    config: ConfigOption = None,
) -> None:
    """Write a list as CSV (value, kind, reason, detail, created_at)."""
    core = open_core(config)
    text = run(core.suppressions.export_csv(_scope(core, account_name, global_)))
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")


@app.command("import")
def import_entries(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV with a `value` column.")],
    account_name: AccountScope = None,
    global_: GlobalScope = False,
    config: ConfigOption = None,
) -> None:
    """Add every row of a CSV file (an export imports as it is); one bad row and nothing is imported."""
    core = open_core(config)
    scope = _scope(core, account_name, global_)
    try:
        result = run(
            core.suppressions.import_csv(scope, file.read_text(encoding="utf-8-sig"), actor=cli_actor())
        )
    except suppression.InvalidRows as exc:
        for error in exc.rows:
            console.print(f"line {error.line}: {error.value!r}: {error.reason}")
        raise fail(exc.reason) from exc
    except (UnicodeDecodeError, suppression.SuppressionError) as exc:
        raise fail(f"{file}: {exc}") from exc
    console.print(f"{result.added} added, {result.already_listed} listed already.")
