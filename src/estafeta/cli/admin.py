"""`estafeta admin`: platform-operator credentials."""

from __future__ import annotations

from typing import Annotated

import typer

from estafeta.cli.common import ConfigOption, console, open_core, run

app = typer.Typer(help="Platform-operator credentials.", no_args_is_help=True)


@app.command("create-key")
def create_key(
    name: Annotated[str, typer.Option(help="A label for the key.")] = "",
    config: ConfigOption = None,
) -> None:
    """Create a platform-admin key (shown once) for `/v1/admin/…`, e.g. the global suppression list."""
    core = open_core(config)
    key = run(core.admin_keys.create(name))
    console.print(f"Admin key (shown once, keep it secret): [bold green]{key.token}[/]")
