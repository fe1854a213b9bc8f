"""`estafeta review`: the reputation review queue, for operators."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from estafeta.audit import cli_actor
from estafeta.cli.common import ConfigOption, console, fail, json_text, open_core, run
from estafeta.reputation import ReviewError

app = typer.Typer(
    help="The reputation review queue: paused or flagged accounts waiting for an operator.",
    no_args_is_help=True,
)
NoteOption = Annotated[str, typer.Option(help="why; kept in the audit trail")]


@app.command("list")
def list_reviews(
    state: Annotated[str, typer.Option(help="open | approved | rejected | all")] = "open",
    config: ConfigOption = None,
) -> None:
    """List reviews (open ones by default)."""
    core = open_core(config)
    table = Table("id", "account", "stream", "state", "opened", "reason")
    for row in run(core.reputation.reviews(None if state == "all" else state)):
        table.add_row(
            str(row.id),
            str(row.account_id),
            row.stream,
            row.state,
            row.created_at.isoformat(timespec="seconds"),
            row.reason,
        )
    console.print(table)


@app.command("show")
def show(review_id: int, config: ConfigOption = None) -> None:
    """A review with the account's metrics, recent bounces and complaints, sample messages, answers."""
    core = open_core(config)
    try:
        detail = run(core.reputation.review(review_id))
    except ReviewError as exc:
        raise fail(str(exc)) from exc
    console.print_json(json_text(detail))


def _decide(review_id: int, approve: bool, note: str, config: Path | None) -> None:
    core = open_core(config)
    action = core.reputation.approve if approve else core.reputation.reject
    try:
        result = run(action(review_id, cli_actor(), note))
    except ReviewError as exc:
        raise fail(str(exc)) from exc
    console.print(
        f"Review {review_id} {result['state']}; {result['messages_moved']} held message recipient(s) "
        f"{'released' if approve else 'cancelled'}."
    )


@app.command("approve")
def approve(review_id: int, note: NoteOption = "", config: ConfigOption = None) -> None:
    """Approve: resume sending (a warm-up review also raises the limit) and release held messages."""
    _decide(review_id, True, note, config)


@app.command("reject")
def reject(review_id: int, note: NoteOption = "", config: ConfigOption = None) -> None:
    """Reject: the reviewed stream stays suspended and held messages are cancelled."""
    _decide(review_id, False, note, config)
