"""`estafeta lists`: mailing lists, contact imports from CSV, and segments."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from estafeta.audience import segments
from estafeta.audience.consent import ConsentRecord
from estafeta.audience.importer import CsvError
from estafeta.audience.lists import AudienceError
from estafeta.audience.service import ListRow
from estafeta.cli.common import AccountArgument, ConfigOption, account, console, fail, open_core, run
from estafeta.core import Core

app = typer.Typer(
    help="Mailing lists: create them, import contacts from CSV, segment them.", no_args_is_help=True
)
segments_app = typer.Typer(
    help="Segments: a list's contacts filtered by their attributes (campaigns can target one).",
    no_args_is_help=True,
)
app.add_typer(segments_app, name="segments")
ListArgument = Annotated[str, typer.Argument(metavar="LIST", help="List name or id.")]


def _list(core: Core, account_id: int, name_or_id: str) -> ListRow:
    try:
        return run(core.audience.find_list(account_id, name_or_id))
    except AudienceError as exc:
        raise fail(exc.reason) from exc


@app.command("create")
def create(
    name_or_id: AccountArgument,
    name: Annotated[str, typer.Argument(help="The list's name.")],
    from_address: Annotated[
        str, typer.Option("--from", help="From of the list's mail, e.g. 'News <n@ex.com>'.")
    ],
    single_opt_in: Annotated[
        bool, typer.Option("--single-opt-in", help="Do not ask new subscribers to confirm (not advised).")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Create a list (double opt-in unless told otherwise)."""
    core = open_core(config)
    row = account(core, name_or_id)
    try:
        created = run(core.audience.create_list(row.id, name, from_address, not single_opt_in))
    except AudienceError as exc:
        raise fail(str(exc)) from exc
    console.print(
        f"List [bold]{created.name}[/] (id {created.id}) created; hosted form at /f/{created.public_id}"
    )


@app.command("list")
def list_lists(name_or_id: AccountArgument, config: ConfigOption = None) -> None:
    """The account's lists with their subscribers by status."""
    core = open_core(config)
    row = account(core, name_or_id)
    table = Table("id", "name", "from", "double opt-in", "subscribed", "unconfirmed", "unsubscribed")
    for lst in run(core.audience.lists(row.id)):
        counts = lst.counts
        table.add_row(
            str(lst.id),
            lst.name,
            lst.from_address,
            "yes" if lst.double_opt_in else "no",
            *(str(counts.get(s, 0)) for s in ("subscribed", "unconfirmed", "unsubscribed")),
        )
    console.print(table)


@app.command("import")
def import_contacts(
    name_or_id: AccountArgument,
    list_name: ListArgument,
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="UTF-8 CSV with an `email` column.")
    ],
    consent_source: Annotated[str, typer.Option(help="Where these people agreed, e.g. 'checkout 2025'.")],
    confirmed: Annotated[
        bool,
        typer.Option("--confirmed", help="They already confirmed their addresses: no confirmation mail."),
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Import contacts: a progress bar, then the validation report and any signs of a bought list."""
    core = open_core(config)
    row = account(core, name_or_id)
    mailing_list = _list(core, row.id, list_name)
    if mailing_list.double_opt_in and not confirmed and core.settings.public_url is None:
        raise fail("set public_url (confirmation links point there) or pass --confirmed")
    text = file.read_text(encoding="utf-8")
    with Progress(TextColumn("importing"), BarColumn(), MofNCompleteColumn(), console=console) as bar:
        task = bar.add_task("import", total=None)
        try:
            report = run(
                core.audience.import_csv(
                    row.id,
                    mailing_list,
                    text,
                    ConsentRecord(consent_source, None, confirmed),
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                )
            )
        except (CsvError, AudienceError) as exc:
            raise fail(str(exc)) from exc
    summary = Table(
        "rows", "added", "already on list", "kept unsubscribed", "to confirm", "duplicates", "invalid"
    )
    summary.add_row(
        *(str(v) for v in (report.rows, report.added, report.already_on_list, report.kept_unsubscribed)),
        str(report.awaiting_confirmation),
        str(report.duplicates),
        str(len(report.invalid)),
    )
    console.print(summary)
    if report.invalid:
        invalid = Table("line", "value", "reason", title="Invalid rows")
        for problem in report.invalid[:50]:
            invalid.add_row(str(problem.line), problem.value, problem.reason)
        console.print(invalid)
    for flag in report.flags:
        console.print(f"[yellow]Warning ({flag.code}):[/] {flag.message}")


@segments_app.command("create")
def create_segment(
    name_or_id: AccountArgument,
    list_name: ListArgument,
    name: Annotated[str, typer.Argument(help="The segment's name.")],
    where: Annotated[
        list[str],
        typer.Option(
            "--where",
            help="A condition, repeatable: 'plan = pro', 'age >= 30', 'city ~ york' (contains), "
            "'country in ES,PT', 'phone exists', 'phone missing'; also != > < <=.",
        ),
    ],
    any_: Annotated[
        bool, typer.Option("--any", help="Contacts meeting any condition (default: all of them).")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Create a segment of a list and show how many subscribed contacts it holds now."""
    core = open_core(config)
    row = account(core, name_or_id)
    mailing_list = _list(core, row.id, list_name)
    try:
        conditions = [segments.parse_expression(text, i) for i, text in enumerate(where)]
        segment = run(
            core.audience.create_segment(row.id, mailing_list.id, name, "any" if any_ else "all", conditions)
        )
    except segments.SegmentError as exc:
        raise fail(str(exc)) from exc
    size = run(core.audience.segment_size(segment))
    console.print(
        f"Segment [bold]{segment.name}[/] (id {segment.id}) of {mailing_list.name}: {size} subscribed "
        f"contacts now; send a campaign to it with segment_id {segment.id}"
    )


@segments_app.command("list")
def list_segments(name_or_id: AccountArgument, list_name: ListArgument, config: ConfigOption = None) -> None:
    """The list's segments, their conditions and how many subscribed contacts each holds now."""
    core = open_core(config)
    row = account(core, name_or_id)
    mailing_list = _list(core, row.id, list_name)
    table = Table(
        "id", "name", "match", "conditions", "subscribers", title=f"Segments of {mailing_list.name}"
    )
    for segment in run(core.audience.segments(row.id, mailing_list.id)):
        table.add_row(
            str(segment.id),
            segment.name,
            segment.match,
            "\n".join(segments.describe(c) for c in segment.conditions),
            str(run(core.audience.segment_size(segment))),
        )
    console.print(table)
