"""What every command group shares: the console, the settings option, the core, and how errors end."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any, TypeVar

import pydantic_core
import typer
from rich.console import Console

from estafeta import loop as event_loop
from estafeta.accounts import AccountError, AccountRow
from estafeta.config import Settings, load_settings
from estafeta.core import Core

T = TypeVar("T")

console = Console()
ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML settings file (ESTAFETA_* variables win over it).")
]
AccountArgument = Annotated[str, typer.Argument(help="Account name or id.")]


def load(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except (FileNotFoundError, ValueError) as exc:
        console.print(f"[red]Settings error:[/] {exc}")
        raise typer.Exit(2) from exc


def open_core(config: Path | None) -> Core:
    """The core on the configured database (migrated), as `estafeta serve` builds it."""
    return Core(load(config))


def run(work: Coroutine[Any, Any, T]) -> T:
    """Run one of the core's coroutines from a command (on a thread of its own when the command is called
    from code that runs an event loop already, such as a notebook or a test)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return event_loop.run(work)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(event_loop.run, work).result()


def json_text(value: object, *, indent: int | None = None) -> str:
    """JSON for machines, written as the HTTP API writes it (the same serializer): times in RFC 3339 with
    a `T` and a zone (`2026-12-01T05:00:00Z`), rows (dataclasses) as objects."""
    return pydantic_core.to_json(value, indent=indent, fallback=str).decode()


def fail(message: str) -> typer.Exit:
    console.print(f"[red]Error:[/] {message}")
    return typer.Exit(1)


def account(core: Core, name_or_id: str) -> AccountRow:
    """The account named on the command line, or a clear error and exit code 1."""
    try:
        return run(core.accounts.resolve(name_or_id))
    except AccountError as exc:
        raise fail(str(exc)) from exc
